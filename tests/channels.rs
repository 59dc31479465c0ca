//! Channels through real sockets and a real Redis: every rule of PHOENIX.md, and a test for
//! each numbered gap of the reference implementation ("gap N").

mod common;

use std::time::Duration;

use common::phx::*;
use common::*;
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "channels-test-secret-0123456789abcdef";
const API_KEY: &str = "token-endpoint-api-key-0123456789";

fn channels_config(extra: &str) -> String {
    let idle = if extra.contains("idle_timeout") {
        ""
    } else {
        "idle_timeout = \"5s\"\n"
    };
    format!("\n[channels]\nendpoint = \"/socket\"\njwt_secret = \"{SECRET}\"\n{idle}{extra}\n")
}

fn token(claims: Value) -> String {
    let mut c = claims.as_object().unwrap().clone();
    c.entry("exp")
        .or_insert(json!(refract::auth::now_secs() + 600));
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &c,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn start(redis: &Redis, extra: &str) -> Gateway {
    let gw = Gateway::start_unready(&redis.url(), &channels_config(extra), "").await;
    gw.wait_ready().await;
    gw
}

#[tokio::test]
async fn heartbeat_is_answered_locally_and_never_published() {
    let redis = Redis::start().await;
    let gw = start(&redis, "").await;
    let mut everything = redis.subscribe_pattern("*").await;
    let mut s = Phx::connect(&gw, "").await;
    let r = s.send(None, "phoenix", "heartbeat", json!({})).await;
    assert_eq!(
        s.recv().await,
        json!([null, r, "phoenix", "phx_reply", {"status": "ok", "response": {}}])
    );
    // Gap 4: nothing the client did reached Redis (only the node's own canaries).
    assert!(
        everything
            .drain_now()
            .iter()
            .all(|(ch, _)| ch.starts_with("refract.responses.")),
        "heartbeat published"
    );
    gw.stop().await;
}

#[tokio::test]
async fn joins_answer_ok_with_the_id_then_presence_state() {
    let redis = Redis::start().await;
    let gw = start(&redis, "").await;
    let mut s = Phx::connect(&gw, "").await;
    let (jr, reply) = s
        .join(
            "room:lobby",
            json!({"token": token(json!({"id": "ann", "channel": "room:lobby"}))}),
        )
        .await;
    assert_eq!(reply[0], json!(jr));
    assert_eq!(reply[2], "room:lobby");
    assert_eq!(reply[4]["status"], "ok");
    let id = reply[4]["response"]["id"].as_str().unwrap();
    assert!(id.ends_with(&format!(":room:lobby:{jr}")), "{id}");
    let state = s.recv().await;
    assert_eq!(
        (state[0].clone(), state[1].clone(), state[3].clone()),
        (json!(jr), Value::Null, json!("presence_state"))
    );
    let metas = state[4]["ann"]["metas"].as_array().unwrap();
    assert_eq!(metas.len(), 1);
    assert!(
        metas[0]["phx_ref"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{jr}"))
    );
    gw.stop().await;
}

#[tokio::test]
async fn failed_joins_always_get_an_error_reply_with_the_reason() {
    let redis = Redis::start().await;
    let gw = start(&redis, "max_topics_per_socket = 2").await;
    let mut s = Phx::connect(&gw, "").await;
    let expired = token(json!({"id": "a", "channel": "t", "exp": refract::auth::now_secs() - 60}));
    let cases = [
        ("t", json!({}), "unauthorized"),
        ("t", json!({"token": "garbage"}), "unauthorized"),
        ("t", json!({"token": expired}), "unauthorized"),
        // Gap 1: a valid token for another topic does not open this one.
        (
            "t",
            json!({"token": token(json!({"id": "a", "channel": "other"}))}),
            "forbidden",
        ),
        (
            "admin",
            json!({"token": token(json!({"id": "a", "channel": "admin"}))}),
            "forbidden",
        ),
        (
            "bad*topic",
            json!({"token": token(json!({"id": "a", "channels": ["*"]}))}),
            "invalid topic",
        ),
    ];
    for (topic, payload, reason) in cases {
        let (_, reply) = s.join(topic, payload).await;
        assert_eq!(
            reply[4],
            json!({"status": "error", "response": {"reason": reason}}),
            "{topic}"
        );
    }
    // Gap 3: a leave after a failed join is answered, and the socket lives on.
    let r = s.send(Some("99"), "t", "phx_leave", json!({})).await;
    let reply = s.recv_event("phx_reply").await;
    assert_eq!(
        (reply[1].clone(), reply[4]["status"].clone()),
        (json!(r), json!("ok"))
    );

    let many = token(json!({"id": "a", "channels": ["m:*"]}));
    s.join_ok("m:1", &many).await;
    s.join_ok("m:2", &many).await;
    let (_, reply) = s.join("m:3", json!({"token": many})).await;
    assert_eq!(reply[4]["response"]["reason"], "too many channels joined");
    assert!(
        gw.metric("refract_channels_joins_total{result=\"forbidden\"}")
            .await
            >= 2
    );
    gw.stop().await;
}

#[tokio::test]
async fn redis_messages_fan_out_as_json_or_binary_pushes_with_null_refs() {
    let redis = Redis::start().await;
    let gw = start(&redis, "").await;
    let tok = token(json!({"id": "a", "channels": ["room:*"]}));
    let mut a = Phx::connect(&gw, "").await;
    let mut b = Phx::connect(&gw, "").await;
    let jr_a = a.join_ok("room:lobby", &tok).await;
    let jr_b = b.join_ok("room:lobby", &tok).await;
    let mut other = Phx::connect(&gw, "").await;
    other.join_ok("room:other", &tok).await;

    // Topics contain ':'; the event is after the last one.
    assert_eq!(
        redis
            .publish("to:room:lobby:update", br#"  {"price": 1.5}"#)
            .await,
        1
    );
    for (s, jr) in [(&mut a, &jr_a), (&mut b, &jr_b)] {
        // Gap 6: pushes carry a null ref.
        assert_eq!(
            s.recv_event("update").await,
            json!([jr, null, "room:lobby", "update", {"price": 1.5}])
        );
    }
    // Not JSON: a binary push the client gets as an ArrayBuffer.
    redis
        .publish("to:room:lobby:blob", [0xde, 0xad, 0xbe, 0xef])
        .await;
    let frame = loop {
        match a.ws.recv().await {
            Message::Binary(b) => break b,
            Message::Text(_) => continue,
            m => panic!("{m:?}"),
        }
    };
    let mut want = vec![0u8, jr_a.len() as u8, 10, 4];
    want.extend_from_slice(jr_a.as_bytes());
    want.extend_from_slice(b"room:lobbyblob");
    want.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(frame.to_vec(), want);
    // Empty payloads go nowhere and are counted.
    redis.publish("to:room:lobby:nothing", b"").await;
    redis.publish("to:room:lobby:marker", b"1").await;
    assert_eq!(a.recv_event("marker").await[4], 1);
    assert_eq!(
        gw.metric("refract_channels_dropped_total{reason=\"empty_payload\"}")
            .await,
        1
    );
    // The other topic heard none of it.
    redis.publish("to:room:other:only", b"2").await;
    assert_eq!(other.recv_event("only").await[4], 2);
    gw.stop().await;
}

#[tokio::test]
async fn client_pushes_are_published_byte_for_byte_only_from_joined_topics() {
    let redis = Redis::start().await;
    let gw = start(&redis, "").await;
    let mut from = redis.subscribe_pattern("from:*").await;
    let mut s = Phx::connect(&gw, "").await;
    let tok = token(json!({"id": "a", "channel": "room:1"}));
    let jr = s.join_ok("room:1", &tok).await;

    // Gap 5: the payload is published exactly as sent, all fields kept.
    let raw =
        format!(r#"["{jr}","7","room:1","say",{{"message": "hi",  "token":"t", "n": [1, 2.50]}}]"#);
    s.send_raw(&raw).await;
    let (channel, payload) = from.next_message().await;
    assert_eq!(channel, "from:room:1:say");
    assert_eq!(
        payload,
        br#"{"message": "hi",  "token":"t", "n": [1, 2.50]}"#
    );

    // Gap 4: not joined, or a stale join_ref: an error reply, nothing published.
    s.send(Some(&jr), "room:2", "say", json!({})).await;
    assert_eq!(
        s.recv_event("phx_reply").await[4]["response"]["reason"],
        "unmatched topic"
    );
    s.send(Some("stale"), "room:1", "say", json!({})).await;
    assert_eq!(
        s.recv_event("phx_reply").await[4]["response"]["reason"],
        "unmatched topic"
    );
    // Reserved events are never published.
    s.send(Some(&jr), "room:1", "presence_diff", json!({}))
        .await;
    s.send(Some(&jr), "room:1", "marker", json!(1)).await;
    assert_eq!(
        from.next_message().await,
        ("from:room:1:marker".to_string(), b"1".to_vec())
    );

    // A binary push publishes its raw data.
    let mut frame = vec![0u8, jr.len() as u8, 1, 6, 3];
    frame.extend_from_slice(jr.as_bytes());
    frame.extend_from_slice(b"9room:1bin");
    frame.extend_from_slice(&[1, 2, 255]);
    s.ws.ws.send(Message::binary(frame)).await.unwrap();
    assert_eq!(
        from.next_message().await,
        ("from:room:1:bin".to_string(), vec![1, 2, 255])
    );
    gw.stop().await;
}

#[tokio::test]
async fn leave_duplicate_join_and_lifecycle_notes() {
    let redis = Redis::start().await;
    let gw = start(&redis, "").await;
    let mut notes = redis.subscribe("refract:channels:lifecycle").await;
    let mut s = Phx::connect(&gw, "").await;
    let tok = token(json!({"id": "zed", "channel": "room"}));
    let first = s.join_ok("room", &tok).await;
    let note = notes.next_json().await;
    assert_eq!(
        (
            note["event"].clone(),
            note["id"].clone(),
            note["topic"].clone()
        ),
        (json!("join"), json!("zed"), json!("room"))
    );
    assert!(
        !note.to_string().contains(&tok),
        "no token in lifecycle notes"
    );

    // Joining again closes the old membership first.
    let r = s.make_ref();
    s.ws.send(&json!([r, r, "room", "phx_join", {"token": tok}]).to_string())
        .await;
    assert_eq!(
        s.recv_event("phx_close").await,
        json!([first, first, "room", "phx_close", {}])
    );
    let reply = s.recv_event("phx_reply").await;
    assert_eq!(
        (reply[0].clone(), reply[4]["status"].clone()),
        (json!(r), json!("ok"))
    );

    let lr = s.send(Some(&r), "room", "phx_leave", json!({})).await;
    let reply = s.recv_event("phx_reply").await;
    assert_eq!(
        (reply[1].clone(), reply[4]["status"].clone()),
        (json!(lr), json!("ok"))
    );
    assert_eq!(
        s.recv_event("phx_close").await,
        json!([r, r, "room", "phx_close", {}])
    );
    // After the leave, publishes no longer reach the socket; a heartbeat answer comes next.
    redis.publish("to:room:gone", b"1").await;
    let hb = s.send(None, "phoenix", "heartbeat", json!({})).await;
    loop {
        let f = s.recv().await;
        assert_ne!(f[3], "gone");
        if f[1] == json!(hb) {
            break;
        }
    }
    gw.stop().await;
}

#[tokio::test]
async fn socket_level_checks_happen_before_the_upgrade() {
    let redis = Redis::start().await;
    let gw = start(&redis, "").await;
    let url = |q: &str| format!("ws://{}/socket/websocket{q}", gw.addr);
    assert_eq!(refused_status(url("")).await, 400);
    assert_eq!(refused_status(url("?vsn=1.0.0")).await, 400);
    assert_eq!(refused_status(url("?vsn=2.0.0&token=bad")).await, 403);
    assert_eq!(refused_status(url("?vsn=2.0.0&userToken=bad")).await, 403);
    assert_eq!(gw.get("/socket/longpoll").await.0, 404);
    // Every refusal is counted by its reason.
    let rejected = |reason: &str| format!("refract_http_rejections_total{{reason=\"{reason}\"}}");
    assert_eq!(gw.metric(&rejected("unsupported_serializer")).await, 2);
    assert_eq!(gw.metric(&rejected("bad_socket_token")).await, 2);
    assert_eq!(gw.get("/socket/websocket?vsn=2.0.0").await.0, 426);
    assert_eq!(gw.metric(&rejected("upgrade_required")).await, 1);

    // A socket credential (phoenix 1.8's subprotocol) serves joins without a token of their own.
    let tok = token(json!({"id": "sock", "channel": "room"}));
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tok);
    let mut req = url("?vsn=2.0.0").into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        format!("phoenix, base64url.bearer.phx.{b64}")
            .parse()
            .unwrap(),
    );
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "phoenix");
    let mut s = Phx {
        ws: Client { ws },
        next_ref: 0,
    };
    s.join_ok("room", "").await;
    // Only the socket that was let in counts as accepted.
    assert_eq!(
        gw.metric("refract_channels_sockets_accepted_total ").await,
        1
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_redis_restart_resubscribes_and_delivery_resumes() {
    let mut redis = Redis::start().await;
    let gw = start(&redis, "").await;
    let mut s = Phx::connect(&gw, "").await;
    s.join_ok("room", &token(json!({"id": "a", "channel": "room"})))
        .await;
    redis.publish("to:room:before", b"1").await;
    assert_eq!(s.recv_event("before").await[4], 1);

    // Gap 8: after a Redis restart, delivery resumes on the same socket.
    redis.stop();
    redis.restart().await;
    gw.wait_ready().await;
    eventually("the bridge to resubscribe", || async {
        (redis.publish("to:room:after", b"2").await == 1).then_some(())
    })
    .await;
    assert_eq!(s.recv_event("after").await[4], 2);
    gw.stop().await;
}

#[tokio::test]
async fn a_slow_socket_is_closed_with_1013_and_a_reason() {
    let redis = Redis::start().await;
    let gw = start(&redis, "outbound_queue = 16").await;
    let tok = token(json!({"id": "a", "channel": "firehose"}));
    let mut stuck = Phx::connect(&gw, "").await;
    stuck.join_ok("firehose", &tok).await;
    let mut fast = Phx::connect(&gw, "").await;
    fast.join_ok("firehose", &tok).await;
    // The fast socket reads all along, counting what it gets.
    let got = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = got.clone();
    let reader = tokio::spawn(async move {
        loop {
            if fast.recv().await[3] == "data" {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    // 40 MiB, more than the loopback buffers and the 16-frame queue together, paced so a reader
    // that keeps up is never more than one batch behind.
    let big = format!("\"{}\"", "x".repeat(64 * 1024));
    let mut conn = redis.conn().await;
    for batch in 1..=40u64 {
        let mut pipe = redis::pipe();
        for _ in 0..16 {
            pipe.publish("to:firehose:data", &big).ignore();
        }
        pipe.query_async::<()>(&mut conn).await.unwrap();
        eventually("the reading socket to keep up", || async {
            (got.load(std::sync::atomic::Ordering::SeqCst) >= batch * 16).then_some(())
        })
        .await;
        if gw
            .metric("refract_channels_dropped_total{reason=\"slow_client\"}")
            .await
            > 0
        {
            break;
        }
    }
    // Gap 9: the stuck one is closed with a code and a reason (read as soon as it drains its
    // buffers); the reader never was.
    let close = loop {
        match stuck.ws.recv().await {
            Message::Close(Some(f)) => break f,
            _ => continue,
        }
    };
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (1013, "slow client: outbound queue full")
    );
    eventually("the close to be counted", || async {
        (gw.metric("refract_channels_closed_total{reason=\"slow_client\"}")
            .await
            == 1)
            .then_some(())
    })
    .await;
    reader.abort();
    gw.stop().await;
}

#[tokio::test]
async fn quiet_sockets_close_with_1001_heartbeats_and_pings_keep_them() {
    let redis = Redis::start().await;
    let gw = start(&redis, "idle_timeout = \"500ms\"").await;
    // Gap 10: a silent socket is closed, with 1001 so phoenix.js reconnects.
    let mut silent = Phx::connect(&gw, "").await;
    assert_eq!(
        silent.ws.recv_close().await,
        (1001, "idle timeout".to_string())
    );
    // A socket that heartbeats stays.
    let mut alive = Phx::connect(&gw, "").await;
    for _ in 0..6 {
        let r = alive.send(None, "phoenix", "heartbeat", json!({})).await;
        assert_eq!(alive.recv().await[1], json!(r));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // WebSocket pings are answered.
    alive
        .ws
        .ws
        .send(Message::Ping(b"p".to_vec().into()))
        .await
        .unwrap();
    let pong = loop {
        match alive.ws.ws.next().await.unwrap().unwrap() {
            Message::Pong(p) => break p,
            _ => continue,
        }
    };
    assert_eq!(&pong[..], b"p");
    gw.stop().await;
}

#[tokio::test]
async fn the_token_endpoint_needs_its_key_and_keeps_cors_to_its_list() {
    let redis = Redis::start().await;
    // The key lives in the environment of a real gateway process.
    let gw = Node::start_with_env(
        &redis.url(),
        None,
        "",
        &channels_config(
            "[channels.token_endpoint]\npath = \"/token\"\napi_key_env = \"REFRACT_TEST_CHANNELS_API_KEY\"\n\
             cors_origins = [\"https://app.example.com\"]",
        ),
        &[("REFRACT_TEST_CHANNELS_API_KEY", API_KEY)],
    )
    .await;
    let post = |auth: &str, origin: &str, body: &str| {
        format!(
            "POST /token HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n\
             {auth}{origin}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let body = r#"{"channel": "room:7", "id": "user-7"}"#;
    // Gap 2: no key, no token.
    assert_eq!(http_request(gw.addr, &post("", "", body)).await.0, 401);
    let bad_key = "Authorization: Bearer nope\r\n";
    assert_eq!(http_request(gw.addr, &post(bad_key, "", body)).await.0, 401);
    let key = format!("Authorization: Bearer {API_KEY}\r\n");
    let (status, answer) = http_request(
        gw.addr,
        &post(&key, "Origin: https://app.example.com\r\n", body),
    )
    .await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        (answer["id"].clone(), answer["channel"].clone()),
        (json!("user-7"), json!("room:7"))
    );
    // The token it gives opens exactly that topic.
    let mut s = Phx::connect(&gw, "").await;
    s.join_ok("room:7", answer["token"].as_str().unwrap()).await;
    let (_, reply) = s.join("room:8", json!({"token": answer["token"]})).await;
    assert_eq!(reply[4]["response"]["reason"], "forbidden");

    let (status, err) = http_request(gw.addr, &post(&key, "", "{not json")).await;
    assert_eq!(status, 400);
    assert!(serde_json::from_str::<Value>(&err).unwrap()["error"].is_string());
    // CORS: the listed origin is echoed, never `*`; another origin gets no CORS header.
    let preflight = |origin: &str| {
        format!(
            "OPTIONS /token HTTP/1.1\r\nHost: x\r\nConnection: close\r\nOrigin: {origin}\r\n\r\n"
        )
    };
    let raw_ok = raw_http(gw.addr, &preflight("https://app.example.com")).await;
    assert!(
        raw_ok.contains("access-control-allow-origin: https://app.example.com"),
        "{raw_ok}"
    );
    let raw_bad = raw_http(gw.addr, &preflight("https://evil.example.net")).await;
    assert!(
        raw_bad.starts_with("http/1.1 403") && !raw_bad.contains("access-control-allow-origin")
    );
    drop(gw);
}

async fn raw_http(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf).to_lowercase()
}

#[tokio::test]
async fn an_expiring_token_gets_phx_error_and_acks_follow_publishes() {
    let redis = Redis::start().await;
    let gw = start(&redis, "ack_pushes = true").await;
    let mut s = Phx::connect(&gw, "").await;
    let short = token(json!({"id": "a", "channel": "room", "exp": refract::auth::now_secs() + 2}));
    let jr = s.join_ok("room", &short).await;
    let mut from = redis.subscribe_pattern("from:*").await;
    let r = s.send(Some(&jr), "room", "say", json!({"x": 1})).await;
    let ack = s.recv_event("phx_reply").await;
    assert_eq!(
        (ack[1].clone(), ack[4]["status"].clone()),
        (json!(r), json!("ok"))
    );
    assert_eq!(from.next_message().await.0, "from:room:say");
    let error = s.recv_event("phx_error").await;
    assert_eq!(
        error,
        json!([jr, null, "room", "phx_error", {"reason": "token expired"}])
    );
    gw.stop().await;
}

#[tokio::test]
async fn the_system_topic_ticks_from_one_node() {
    let redis = Redis::start().await;
    let extra = "[channels.system]\ndatetime_interval = \"200ms\"";
    let a = start(&redis, extra).await;
    let b = start(&redis, extra).await;
    let mut s = Phx::connect(&a, "").await;
    s.join_ok("system", &token(json!({"id": "a", "channel": "system"})))
        .await;
    let mut counters = Vec::new();
    while counters.len() < 5 {
        let f = s.recv_event("datetime").await;
        assert!(f[4]["datetime"].as_str().unwrap().contains('T'));
        counters.push(f[4]["counter"].as_u64().unwrap());
    }
    // Two nodes, one clock: each counter value once, in order.
    assert!(
        counters.windows(2).all(|w| w[1] == w[0] + 1),
        "{counters:?}"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn presence_can_be_turned_off_for_broadcast_topics() {
    let redis = Redis::start().await;
    let gw = start(&redis, "[channels.presence]\nenabled = false").await;
    let mut diffs = redis.subscribe_pattern("to:*:presence_diff").await;
    let mut s = Phx::connect(&gw, "").await;
    s.join_ok("news", &token(json!({"id": "reader", "channel": "news"})))
        .await;
    assert_eq!(s.recv_event("presence_state").await[4], json!({}));
    redis.publish("to:news:flash", b"1").await;
    assert_eq!(s.recv_event("flash").await[4], 1);
    assert!(
        diffs.drain_now().is_empty(),
        "no presence diffs when presence is off"
    );
    let mut c = redis.conn().await;
    let topics: Vec<String> = redis::cmd("SMEMBERS")
        .arg("refract:presence:topics")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(topics.is_empty());
    gw.stop().await;
}
