//! Routes over Redis, end to end: real redis-server, real gateway, real WebSockets.

mod common;

use std::collections::HashMap;

use common::*;
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn connect_message_disconnect_carry_the_seed_fields() {
    let redis = Redis::start().await;
    let gw = Gateway::start(&redis, QUOTES).await;
    let mut input = redis.subscribe("input").await;

    let mut client = gw.ws("/quotes?user=7").await;
    let port = client.local_port();
    let connect = input.next_json().await;
    let obj = connect.as_object().unwrap();
    let mut keys: Vec<_> = obj.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "id",
            "remoteAddress",
            "remotePort",
            "responseChannel",
            "route",
            "type"
        ]
    );
    assert_eq!(connect["type"], "connect");
    assert_eq!(connect["route"], "/quotes");
    assert_eq!(connect["remoteAddress"], "127.0.0.1");
    assert_eq!(connect["remotePort"], json!(port));
    assert_eq!(connect["responseChannel"], json!(gw.response_channel()));
    let id = connect["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 22, "128-bit base64url id");

    client.send("hello").await;
    let message = input.next_json().await;
    assert_eq!(
        message,
        json!({"id": id, "type": "message", "route": "/quotes", "remoteAddress": "127.0.0.1",
               "remotePort": port, "message": "hello", "responseChannel": gw.response_channel()})
    );

    client.ws.close(None).await.unwrap();
    let disconnect = input.next_json().await;
    assert_eq!(
        disconnect,
        json!({"id": id, "type": "disconnect", "route": "/quotes", "remoteAddress": "127.0.0.1",
               "remotePort": port, "responseChannel": gw.response_channel()})
    );
    gw.stop().await;
}

#[tokio::test]
async fn services_sharing_a_channel_get_one_publish_per_event() {
    let redis = Redis::start().await;
    let routes = format!(
        "{QUOTES}\n[routes.\"/quotes\".services.audit]\ntype = \"redis\"\nrequest_channel = \"audit\"\n"
    );
    let gw = Gateway::start(&redis, &routes).await;
    let mut input = redis.subscribe("input").await;
    let mut audit = redis.subscribe("audit").await;

    let mut client = gw.ws("/quotes").await;
    client.send("one").await;
    client.ws.close(None).await.unwrap();

    for sub in [&mut input, &mut audit] {
        let types: Vec<Value> = [
            sub.next_json().await,
            sub.next_json().await,
            sub.next_json().await,
        ]
        .iter()
        .map(|v| v["type"].clone())
        .collect();
        assert_eq!(
            types,
            [json!("connect"), json!("message"), json!("disconnect")]
        );
    }
    // Everything of this connection was published before its disconnect, on one ordered shard,
    // so a duplicate would already be here.
    assert!(
        input.try_next().is_none(),
        "a second publish on the shared channel"
    );
    assert!(audit.try_next().is_none());
    assert_eq!(
        gw.metric("refract_events_published_total{route=\"/quotes\",type=\"message\"}")
            .await,
        2,
        "one publish on `input`, one on `audit`"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_thousand_messages_arrive_in_order_between_connect_and_disconnect() {
    let redis = Redis::start().await;
    let gw = Gateway::start(&redis, QUOTES).await;
    let mut input = redis.subscribe("input").await;

    let mut client = gw.ws("/quotes").await;
    for i in 0..1000 {
        client
            .ws
            .feed(Message::text(format!("m{i}")))
            .await
            .unwrap();
    }
    client.ws.flush().await.unwrap();
    client.ws.close(None).await.unwrap();

    assert_eq!(input.next_json().await["type"], "connect");
    for i in 0..1000 {
        let v = input.next_json().await;
        assert_eq!(v["type"], "message");
        assert_eq!(v["message"], format!("m{i}"));
    }
    assert_eq!(input.next_json().await["type"], "disconnect");
    gw.stop().await;
}

#[tokio::test]
async fn replies_reach_exactly_their_own_client_among_hundreds() {
    let redis = Redis::start().await;
    let gw = Gateway::start(&redis, QUOTES).await;
    let mut input = redis.subscribe("input").await;

    const N: usize = 300;
    let mut clients = Vec::new();
    for i in 0..N {
        let mut c = gw.ws("/quotes").await;
        c.send(&format!("client-{i}")).await;
        clients.push(c);
    }
    // Learn each client's id from its own message event.
    let mut ids: HashMap<usize, String> = HashMap::new();
    while ids.len() < N {
        let v = input.next_json().await;
        if v["type"] == "message" {
            let i: usize = v["message"].as_str().unwrap()["client-".len()..]
                .parse()
                .unwrap();
            ids.insert(i, v["id"].as_str().unwrap().to_string());
        }
    }
    let mut conn = redis.conn().await;
    let mut pipe = redis::pipe();
    for (i, id) in &ids {
        pipe.publish(
            gw.response_channel(),
            reply(id, "quoteservice", &format!("for-{i}")),
        )
        .ignore();
    }
    pipe.query_async::<()>(&mut conn).await.unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.recv_text().await, format!("for-{i}"));
    }
    assert_eq!(
        gw.metric("refract_replies_relayed_total{route=\"/quotes\"}")
            .await,
        N as u64
    );
    gw.stop().await;
}

#[tokio::test]
async fn drop_sends_the_last_message_then_closes_with_the_code() {
    let redis = Redis::start().await;
    let gw = Gateway::start(&redis, QUOTES).await;
    let mut input = redis.subscribe("input").await;

    let (mut a, id_a) = connect_and_identify(&gw, "/quotes", &mut input).await;
    let drop = json!({"id": id_a, "type": "drop", "service": "chartservice", "message": "bye",
                      "code": 4000, "reason": "kicked"});
    redis
        .publish(&gw.response_channel(), drop.to_string())
        .await;
    assert_eq!(a.recv_text().await, "bye");
    assert_eq!(a.recv_close().await, (4000, "kicked".to_string()));
    assert_eq!(input.next_for(&id_a).await["type"], "disconnect");

    // `disconnect` without a code closes normally.
    let (mut b, id_b) = connect_and_identify(&gw, "/quotes", &mut input).await;
    let disconnect = json!({"id": id_b, "type": "disconnect", "service": "quoteservice"});
    redis
        .publish(&gw.response_channel(), disconnect.to_string())
        .await;
    assert_eq!(b.recv_close().await, (1000, String::new()));
    assert_eq!(input.next_for(&id_b).await["type"], "disconnect");
    assert_eq!(
        gw.metric(
            "refract_connections_closed_total{route=\"/quotes\",reason=\"dropped_by_service\"}"
        )
        .await,
        2
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_reply_for_an_unknown_id_is_answered_notconnected() {
    let redis = Redis::start().await;
    let gw = Gateway::start(&redis, QUOTES).await;
    let mut notify = redis.subscribe("svc.notify").await;

    let with_channel = json!({"id": "gone", "service": "quoteservice", "message": "x",
                              "responseChannel": "svc.notify"});
    redis
        .publish(&gw.response_channel(), with_channel.to_string())
        .await;
    assert_eq!(
        notify.next_json().await,
        json!({"id": "gone", "type": "notconnected"})
    );

    // Without a responseChannel it is only counted.
    redis
        .publish(&gw.response_channel(), reply("gone2", "quoteservice", "x"))
        .await;
    eventually("both unknown ids counted", || async {
        (gw.metric("refract_replies_dropped_total{reason=\"unknown_connection\"}")
            .await
            == 2)
            .then_some(())
    })
    .await;
    assert_eq!(gw.metric("refract_notconnected_sent_total").await, 1);
    gw.stop().await;
}

#[tokio::test]
async fn bad_replies_are_counted_and_a_good_one_still_arrives() {
    let redis = Redis::start().await;
    let gw = Gateway::start(&redis, QUOTES).await;
    let mut input = redis.subscribe("input").await;
    let (mut client, id) = connect_and_identify(&gw, "/quotes", &mut input).await;
    let rc = gw.response_channel();

    let bad: Vec<Vec<u8>> = vec![
        b"not json at all".to_vec(),
        vec![0xff, 0xfe, 0x00],
        b"[1,2,3]".to_vec(),
        json!({"id": 5, "service": "quoteservice", "message": "x"})
            .to_string()
            .into_bytes(),
        json!({"id": id, "message": "no service"})
            .to_string()
            .into_bytes(),
        json!({"id": id, "service": "nope", "message": "unknown service"})
            .to_string()
            .into_bytes(),
        json!({"id": id, "service": "quoteservice", "type": "explode", "message": "x"})
            .to_string()
            .into_bytes(),
        json!({"id": id, "service": "quoteservice", "message": "!!", "binary": true})
            .to_string()
            .into_bytes(),
        json!({"id": id, "service": "quoteservice", "type": "drop", "code": 1005})
            .to_string()
            .into_bytes(),
        format!("{}{}", "[".repeat(50_000), "]".repeat(50_000)).into_bytes(),
        format!(
            "{{\"id\":\"{id}\",\"service\":\"quoteservice\",\"message\":\"{}\"}}",
            "x".repeat(2 << 20)
        )
        .into_bytes(),
    ];
    for b in &bad {
        redis.publish(&rc, b).await;
    }
    redis.publish(&rc, reply(&id, "quoteservice", "good")).await;
    // Redis delivers in publish order, so the first frame the client sees is the good one.
    assert_eq!(client.recv_text().await, "good");
    for (reason, n) in [
        // Text and bad UTF-8 are not JSON; `[1,2,3]`, the deeply nested array and an `id`
        // that is a number are JSON of the wrong shape.
        ("invalid_json", 2),
        ("wrong_type", 3),
        ("missing_field", 1),
        ("unknown_service", 1),
        ("unknown_type", 1),
        ("invalid_base64", 1),
        ("invalid_close_code", 1),
        ("too_large", 1),
    ] {
        assert_eq!(
            gw.metric(&format!(
                "refract_replies_dropped_total{{reason=\"{reason}\"}}"
            ))
            .await,
            n,
            "{reason}"
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn binary_frames_travel_as_base64_both_ways() {
    let redis = Redis::start().await;
    let gw = Gateway::start(&redis, QUOTES).await;
    let mut input = redis.subscribe("input").await;
    let (mut client, id) = connect_and_identify(&gw, "/quotes", &mut input).await;

    client
        .ws
        .send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    let v = input.next_json().await;
    assert_eq!(v["message"], "AAEC/w==");
    assert_eq!(v["binary"], true);

    let r = json!({"id": id, "service": "quoteservice", "message": "3q2+7w==", "binary": true});
    redis.publish(&gw.response_channel(), r.to_string()).await;
    assert_eq!(
        client.recv().await,
        Message::binary(vec![0xde, 0xad, 0xbe, 0xef])
    );
    gw.stop().await;
}

#[tokio::test]
async fn frames_far_larger_than_the_read_buffer_arrive_whole() {
    let redis = Redis::start().await;
    let gw = Gateway::start_unready(&redis.url(), QUOTES, "read_buffer = 64").await;
    gw.wait_ready().await;
    let mut input = redis.subscribe("input").await;
    let (mut client, id) = connect_and_identify(&gw, "/quotes", &mut input).await;

    let big: String = (0..40_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    client.send(&big).await;
    client.send("after").await;
    assert_eq!(input.next_json().await["message"], big.as_str());
    assert_eq!(input.next_json().await["message"], "after");

    let r = json!({"id": id, "service": "quoteservice", "message": big});
    redis.publish(&gw.response_channel(), r.to_string()).await;
    assert_eq!(client.recv().await, Message::text(big));
    gw.stop().await;
}

#[tokio::test]
async fn an_abrupt_client_loss_still_sends_disconnect() {
    let redis = Redis::start().await;
    let gw = Gateway::start(&redis, QUOTES).await;
    let mut input = redis.subscribe("input").await;
    let (client, id) = connect_and_identify(&gw, "/quotes", &mut input).await;

    // Drop the TCP connection without a close frame.
    drop(client);
    assert_eq!(input.next_for(&id).await["type"], "disconnect");
    eventually("the connection gauge to return to 0", || async {
        (gw.metric("refract_connections{route=\"/quotes\"}").await == 0).then_some(())
    })
    .await;
    gw.stop().await;
}

#[tokio::test]
async fn http_surface_answers_404_426_health_and_metrics() {
    let redis = Redis::start().await;
    let gw = Gateway::start(&redis, QUOTES).await;

    assert_eq!(gw.get("/nope").await.0, 404);
    assert_eq!(gw.get("/quotes/").await.0, 404, "exact path match");
    let (status, body) = gw.get("/quotes").await;
    assert_eq!(status, 426);
    assert!(body.contains("upgrade"), "{body}");
    assert_eq!(gw.get("/healthz").await, (200, "ok\n".to_string()));
    assert_eq!(gw.get("/readyz").await.0, 200);
    let (status, metrics) = gw.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("refract_ready 1\n"), "{metrics}");
    assert!(metrics.contains("refract_http_rejections_total{reason=\"not_found\"} 2\n"));
    assert!(metrics.contains("refract_http_rejections_total{reason=\"upgrade_required\"} 1\n"));
    let raw = http_response(
        gw.addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        raw.to_ascii_lowercase()
            .contains("\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\n"),
        "scrapers pick their parser by Content-Type: {raw}"
    );

    // The query string is not part of the route.
    let mut input = redis.subscribe("input").await;
    let _c = gw.ws("/quotes?a=b").await;
    assert_eq!(input.next_json().await["route"], "/quotes");
    gw.stop().await;
}

#[tokio::test]
async fn readyz_is_503_until_subscribed_and_upgrades_wait_for_it() {
    // Redis is not running yet on this port.
    let mut redis = Redis::on_port(free_port());
    let gw = Gateway::start_unready(&redis.url(), QUOTES, "").await;
    eventually("the gateway to answer HTTP", || async {
        (gw.get("/healthz").await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(gw.get("/readyz").await.0, 503);
    let mut req = format!("ws://{}/quotes", gw.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("x-test", "1".parse().unwrap());
    assert_eq!(
        refused_status(req).await,
        503,
        "upgrades wait for readiness"
    );

    redis.restart().await;
    gw.wait_ready().await;
    let mut input = redis.subscribe("input").await;
    let (mut client, id) = connect_and_identify(&gw, "/quotes", &mut input).await;
    redis
        .publish(&gw.response_channel(), reply(&id, "quoteservice", "hi"))
        .await;
    assert_eq!(client.recv_text().await, "hi");
    gw.stop().await;
}

#[tokio::test]
async fn x_forwarded_for_is_believed_only_from_trusted_proxies() {
    let redis = Redis::start().await;
    let mut input = redis.subscribe("input").await;
    for (trusted, want) in [("[]", "127.0.0.1"), ("[\"127.0.0.0/8\"]", "203.0.113.9")] {
        let gw = Gateway::start_unready(
            &redis.url(),
            QUOTES,
            &format!("trusted_proxies = {trusted}\n"),
        )
        .await;
        gw.wait_ready().await;
        let mut req = format!("ws://{}/quotes", gw.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("x-forwarded-for", "203.0.113.9, 10.0.0.1".parse().unwrap());
        let _c = Client::connect_request(req).await;
        let v = input.next_json().await;
        assert_eq!(v["remoteAddress"], want, "trusted_proxies = {trusted}");
        drop(_c);
        assert_eq!(input.next_json().await["type"], "disconnect");
        gw.stop().await;
    }
}

#[tokio::test]
async fn max_connections_answers_503_before_the_upgrade() {
    let redis = Redis::start().await;
    let gw = Gateway::start_unready(&redis.url(), QUOTES, "max_connections = 2\n").await;
    gw.wait_ready().await;
    let mut input = redis.subscribe("input").await;
    let (_a, _) = connect_and_identify(&gw, "/quotes", &mut input).await;
    let (b, _) = connect_and_identify(&gw, "/quotes", &mut input).await;
    assert_eq!(
        refused_status(format!("ws://{}/quotes", gw.addr)).await,
        503
    );
    drop(b);
    assert_eq!(input.next_json().await["type"], "disconnect");
    // A freed slot admits again.
    let (_c, _) = connect_and_identify(&gw, "/quotes", &mut input).await;
    gw.stop().await;
}
