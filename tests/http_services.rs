//! Legacy HTTP services, end to end: a real HTTP server started by the test, the real gateway,
//! real WebSocket clients.

mod common;

use std::time::Duration;

use common::http_server::{Answer, HttpServer};
use common::*;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// The service's behaviour is chosen by the client's message, so each test scripts it from the
/// client side without shared state.
fn scripted(body: &Value) -> Answer {
    match body["message"].as_str().unwrap_or("") {
        "one" => Answer::Json(json!({"message": "r1"})),
        "many" => Answer::Json(json!([{"message": "r2"}, {"type": "message", "message": "r3"}])),
        "none" => Answer::NoContent,
        "empty" => Answer::Status(200, "application/json", String::new()),
        "html500" => Answer::Status(500, "text/html", "<html><body>oops</body></html>".into()),
        "badjson" => Answer::Status(200, "application/json", "{\"message\": oops".into()),
        "hang" => Answer::Hang,
        "drop" => {
            Answer::Json(json!({"type": "drop", "message": "bye", "code": 4002, "reason": "done"}))
        }
        "binary" => Answer::Json(json!({"message": "3q2+7w==", "binary": true})),
        "" => Answer::NoContent,
        other => Answer::Json(json!({"message": format!("echo:{other}")})),
    }
}

fn http_route(path: &str, name: &str, url: &str, extra: &str) -> String {
    format!("\n[routes.\"{path}\".services.{name}]\ntype = \"http\"\nurl = {url}\n{extra}\n")
}

#[tokio::test]
async fn events_are_posted_in_order_with_the_redis_fields_minus_response_channel() {
    let redis = Redis::start().await;
    let mut svc = HttpServer::start(|_| Answer::NoContent).await;
    let routes = http_route(
        "/news",
        "legacynews",
        &format!("\"{}\"", svc.url("/news")),
        "headers = { \"x-api-key\" = \"sekrit\" }",
    );
    let gw = Gateway::start(&redis, &routes).await;

    let mut client = gw.ws("/news").await;
    let port = client.local_port();
    for i in 0..50 {
        client.send(&format!("m{i}")).await;
    }
    client.ws.close(None).await.unwrap();

    let connect = svc.next().await;
    assert_eq!(connect.path, "/news");
    assert_eq!(connect.content_type, "application/json");
    assert_eq!(connect.headers["x-api-key"], "sekrit");
    let id = connect.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        connect.body,
        json!({"id": id, "type": "connect", "route": "/news", "remoteAddress": "127.0.0.1",
               "remotePort": port})
    );
    for i in 0..50 {
        let m = svc.next().await.body;
        assert_eq!(
            m,
            json!({"id": id, "type": "message", "route": "/news", "remoteAddress": "127.0.0.1",
                   "remotePort": port, "message": format!("m{i}")})
        );
    }
    let disconnect = svc.next().await.body;
    assert_eq!(disconnect["type"], "disconnect");
    assert_eq!(disconnect["id"], json!(id));
    assert!(disconnect.get("responseChannel").is_none());
    gw.stop().await;
}

#[tokio::test]
async fn a_reply_an_array_and_empty_answers_reach_the_client_in_order() {
    let redis = Redis::start().await;
    let svc = HttpServer::start(scripted).await;
    let routes = http_route("/news", "legacynews", &format!("\"{}\"", svc.url("/")), "");
    let gw = Gateway::start(&redis, &routes).await;
    let mut client = gw.ws("/news").await;

    client.send("one").await;
    assert_eq!(client.recv_text().await, "r1");
    client.send("many").await;
    assert_eq!(client.recv_text().await, "r2");
    assert_eq!(client.recv_text().await, "r3");
    client.send("none").await;
    client.send("empty").await;
    client.send("binary").await;
    // Nothing came from the 204 or the empty body: the next frame is the binary reply.
    assert_eq!(
        client.recv().await,
        Message::binary(vec![0xde, 0xad, 0xbe, 0xef])
    );
    client.send("drop").await;
    assert_eq!(client.recv_text().await, "bye");
    assert_eq!(client.recv_close().await, (4002, "done".to_string()));
    gw.stop().await;
}

#[tokio::test]
async fn failures_send_the_client_nothing_and_a_good_reply_still_arrives() {
    let redis = Redis::start().await;
    let svc = HttpServer::start(scripted).await;
    let routes = http_route(
        "/news",
        "legacynews",
        &format!("\"{}\"", svc.url("/")),
        "timeout = \"300ms\"",
    );
    let gw = Gateway::start(&redis, &routes).await;
    let mut client = gw.ws("/news").await;

    for bad in ["html500", "badjson", "hang"] {
        client.send(bad).await;
        client.send("one").await;
        assert_eq!(client.recv_text().await, "r1", "after {bad}");
    }
    let m = |result: &'static str| {
        format!(
            "refract_http_requests_total{{route=\"/news\",service=\"legacynews\",result=\"{result}\"}}"
        )
    };
    assert_eq!(gw.metric(&m("server_error")).await, 1);
    assert_eq!(gw.metric(&m("invalid_body")).await, 1);
    assert_eq!(gw.metric(&m("timeout")).await, 1);
    assert!(gw.metric(&m("ok")).await >= 4);
    assert_eq!(
        gw.metric("refract_http_service_urls_backing_off{route=\"/news\",service=\"legacynews\"}")
            .await,
        0
    );
    gw.stop().await;
}

#[tokio::test]
async fn polling_carries_the_last_message_and_stops_when_the_client_leaves() {
    let redis = Redis::start().await;
    let mut svc = HttpServer::start(|body| {
        if body["type"] == "message" && body["message"] == "last-words" {
            Answer::Json(json!({"message": "polled"}))
        } else {
            Answer::NoContent
        }
    })
    .await;
    let routes = http_route(
        "/news",
        "legacynews",
        &format!("\"{}\"", svc.url("/")),
        "polling_interval = \"100ms\"",
    );
    let gw = Gateway::start(&redis, &routes).await;
    let mut client = gw.ws("/news").await;

    // Before the client says anything, polls carry "".
    svc.next_of("connect").await;
    let first_poll = svc.next_of("message").await.body;
    assert_eq!(first_poll["message"], "");
    assert!(first_poll.get("responseChannel").is_none());

    client.send("last-words").await;
    // The client's own message, then polls repeating it; each poll's reply reaches the client.
    let mut repeats = 0;
    while repeats < 4 {
        if svc.next_of("message").await.body["message"] == "last-words" {
            repeats += 1;
        }
    }
    for _ in 0..3 {
        assert_eq!(client.recv_text().await, "polled");
    }
    assert!(
        gw.metric("refract_http_polls_total{route=\"/news\",service=\"legacynews\"}")
            .await
            >= 4
    );

    client.ws.close(None).await.unwrap();
    svc.next_of("disconnect").await;
    let polls = gw
        .metric("refract_http_polls_total{route=\"/news\",service=\"legacynews\"}")
        .await;
    // Proving an absence needs a wait: five polling intervals with no poll.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        gw.metric("refract_http_polls_total{route=\"/news\",service=\"legacynews\"}")
            .await,
        polls,
        "no polls after the disconnect"
    );
    while let Some(r) = svc.try_next() {
        assert_ne!(
            r.body["type"], "message",
            "a request after the disconnect: {:?}",
            r.body
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn round_robin_over_two_urls_and_a_dead_url_is_backed_off() {
    let redis = Redis::start().await;
    let mut a = HttpServer::start(scripted).await;
    let mut b = HttpServer::start(scripted).await;
    let routes = http_route(
        "/news",
        "legacynews",
        &format!("[\"{}\", \"{}\"]", a.url("/a"), b.url("/b")),
        "",
    );
    let gw = Gateway::start(&redis, &routes).await;
    let mut client = gw.ws("/news").await;
    for i in 0..10 {
        client.send(&format!("x{i}")).await;
        assert_eq!(client.recv_text().await, format!("echo:x{i}"));
    }
    // connect + 10 messages, alternating.
    let (mut on_a, mut on_b) = (0u32, 0u32);
    while on_a + on_b < 11 {
        tokio::select! {
            r = a.next() => { assert_eq!(r.path, "/a"); on_a += 1; }
            r = b.next() => { assert_eq!(r.path, "/b"); on_b += 1; }
        }
    }
    assert!(on_a.abs_diff(on_b) <= 1, "a={on_a} b={on_b}");
    gw.stop().await;

    // A URL that refuses connections is skipped after a few failures.
    let dead = format!("http://127.0.0.1:{}/dead", free_port());
    let routes = http_route(
        "/news",
        "legacynews",
        &format!("[\"{dead}\", \"{}\"]", b.url("/b")),
        "",
    );
    let gw = Gateway::start(&redis, &routes).await;
    let mut client = gw.ws("/news").await;
    for i in 0..20 {
        client.send(&format!("y{i}")).await;
    }
    client.send("final").await;
    loop {
        if client.recv_text().await == "echo:final" {
            break;
        }
    }
    let errors = gw
        .metric("refract_http_requests_total{route=\"/news\",service=\"legacynews\",result=\"connect_error\"}")
        .await;
    assert!(
        (1..=6).contains(&errors),
        "dead URL tried {errors} times of 22"
    );
    assert_eq!(
        gw.metric("refract_http_service_urls_backing_off{route=\"/news\",service=\"legacynews\"}")
            .await,
        1
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_hanging_service_does_not_hold_up_redis_routes_or_mixed_routes() {
    let redis = Redis::start().await;
    let hanging = HttpServer::start(|_| Answer::Hang).await;
    let url = format!("\"{}\"", hanging.url("/"));
    let routes = format!(
        "{}{}{QUOTES}\n[routes.\"/mixed\".services.fast]\ntype = \"redis\"\nrequest_channel = \"mixed.in\"\n",
        http_route(
            "/slow",
            "stuck",
            &url,
            "timeout = \"60s\"\nmax_in_flight = 4"
        ),
        http_route(
            "/mixed",
            "stuck",
            &url,
            "timeout = \"60s\"\nmax_in_flight = 4"
        ),
    );
    let gw = Gateway::start(&redis, &routes).await;

    // Fill the hanging service's in-flight limit and queue behind it.
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut c = gw.ws("/slow").await;
        for i in 0..10 {
            c.send(&format!("s{i}")).await;
        }
        slow.push(c);
    }

    // The Redis route round-trips as usual.
    let mut input = redis.subscribe("input").await;
    let (mut client, id) = connect_and_identify(&gw, "/quotes", &mut input).await;
    for i in 0..50 {
        client.send(&format!("q{i}")).await;
        let v = input.next_for(&id).await;
        assert_eq!(v["message"], format!("q{i}"));
        redis
            .publish(
                &gw.response_channel(),
                reply(&id, "quoteservice", &format!("a{i}")),
            )
            .await;
        assert_eq!(client.recv_text().await, format!("a{i}"));
    }

    // On a mixed route, the Redis service hears every event although the HTTP one hangs.
    let mut mixed_in = redis.subscribe("mixed.in").await;
    let mut m = gw.ws("/mixed").await;
    assert_eq!(mixed_in.next_json().await["type"], "connect");
    m.send("both").await;
    assert_eq!(mixed_in.next_json().await["message"], "both");
    drop(m);
    assert_eq!(mixed_in.next_json().await["type"], "disconnect");
    drop(slow);
    gw.stop().await;
}

#[tokio::test]
async fn a_mixed_route_delivers_each_event_to_both_kinds_of_service() {
    let redis = Redis::start().await;
    let mut svc = HttpServer::start(scripted).await;
    let routes = format!(
        "{}\n[routes.\"/mixed\".services.fast]\ntype = \"redis\"\nrequest_channel = \"mixed.in\"\n",
        http_route("/mixed", "legacy", &format!("\"{}\"", svc.url("/")), "")
    );
    let gw = Gateway::start(&redis, &routes).await;
    let mut input = redis.subscribe("mixed.in").await;
    let (mut client, id) = connect_and_identify(&gw, "/mixed", &mut input).await;
    assert_eq!(svc.next_of("connect").await.body["id"], json!(id));

    client.send("hello").await;
    assert_eq!(input.next_for(&id).await["message"], "hello");
    assert_eq!(svc.next_of("message").await.body["message"], "hello");
    // Both can answer the same client.
    assert_eq!(client.recv_text().await, "echo:hello");
    redis
        .publish(&gw.response_channel(), reply(&id, "fast", "from redis"))
        .await;
    assert_eq!(client.recv_text().await, "from redis");
    // A Redis reply may name the HTTP service too: it is a service of the route.
    redis
        .publish(&gw.response_channel(), reply(&id, "legacy", "as legacy"))
        .await;
    assert_eq!(client.recv_text().await, "as legacy");

    client.ws.close(None).await.unwrap();
    assert_eq!(input.next_for(&id).await["type"], "disconnect");
    assert_eq!(svc.next_of("disconnect").await.body["id"], json!(id));
    gw.stop().await;
}

/// An `https://` legacy service, verified against its own CA (`tls_ca_file`); without that CA
/// (the system's roots) the same service is a connect error, counted.
#[tokio::test]
async fn an_https_service_is_verified_against_its_ca() {
    let certs = common::tls::TestCerts::generate();
    let redis = Redis::start().await;
    let svc = HttpServer::start_tls(scripted, &certs).await;
    let url = svc.url("/");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let ca = format!("tls_ca_file = \"{}\"", certs.path("ca.crt").display());
    let routes = http_route("/secure", "tlsnews", &format!("\"{url}\""), &ca)
        + &http_route("/untrusted", "tlsnews", &format!("\"{url}\""), "");
    let gw = Gateway::start(&redis, &routes).await;

    let mut client = gw.ws("/secure").await;
    client.send("one").await;
    assert_eq!(client.recv_text().await, "r1");

    let mut other = gw.ws("/untrusted").await;
    other.send("one").await;
    let refused = "refract_http_requests_total{route=\"/untrusted\",service=\"tlsnews\",result=\"connect_error\"}";
    eventually("the unverified certificate refused", || async {
        (gw.metric(refused).await >= 1).then_some(())
    })
    .await;
    gw.stop().await;
}
