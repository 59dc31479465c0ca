//! The documented Channels example backend (docs/examples/channels_backend.py) against the real
//! gateway, driven the way docs/examples/channels.html drives it: a token from `POST /token`,
//! the socket credential in the query, a join of `room:lobby`, a `say` push.

mod common;

use common::example::Example;
use common::topology::Cluster;
use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// The `[channels]` part of the example config, as a test can run it.
const CHANNELS: &str = r#"
[channels]
endpoint = "/socket"
jwt_secret = "example-channels-test-secret-0123456789"
idle_timeout = "60s"

[channels.token_endpoint]
path = "/token"
open = true
cors_origins = ["http://localhost:8080"]
"#;

/// A raw Phoenix V2 client: frames are `[join_ref, ref, topic, event, payload]`.
struct Phx {
    ws: Client,
    next_ref: u64,
}

impl Phx {
    fn make_ref(&mut self) -> String {
        self.next_ref += 1;
        self.next_ref.to_string()
    }

    async fn send(&mut self, join_ref: Option<&str>, topic: &str, event: &str, payload: Value) {
        let r = self.make_ref();
        let frame = json!([join_ref, r, topic, event, payload]);
        self.ws.send(&frame.to_string()).await;
    }

    /// The next frame with this event, skipping others (presence diffs, ticks and the like).
    async fn recv_event(&mut self, event: &str) -> Value {
        loop {
            let frame: Value = match self.ws.recv().await {
                Message::Text(t) => serde_json::from_str(&t).unwrap(),
                other => panic!("expected a text frame, got {other:?}"),
            };
            if frame[3] == event {
                return frame;
            }
        }
    }
}

/// `POST /token` as the page does it, from the example's allowed origin.
async fn fetch_token(gw: &Gateway, user: &str) -> String {
    let body = json!({"channel": "room:lobby", "id": user}).to_string();
    let (status, answer) = http_request(
        gw.addr,
        &format!(
            "POST /token HTTP/1.1\r\nHost: x\r\nConnection: close\r\nOrigin: http://localhost:8080\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        (&answer["id"], &answer["channel"]),
        (&json!(user), &json!("room:lobby"))
    );
    answer["token"].as_str().expect("a token").to_string()
}

#[tokio::test]
async fn the_python_channels_example_answers_says_and_ticks() {
    let redis = Redis::start().await;
    let gw = Gateway::start_unready(&redis.url(), CHANNELS, "").await;
    gw.wait_ready().await;

    let url = redis.url();
    let backend = Example::start(
        "channels_backend.py",
        &["--redis-url", &url, "--interval", "0.2"],
        "channels_backend ready",
    )
    .await;

    let user = format!("user-{}", free_port());
    let token = fetch_token(&gw, &user).await;
    // new Socket("/socket", {params: {token}}) connects here; the join falls back to that token.
    let ws = Client::connect(&format!(
        "ws://{}/socket/websocket?token={token}&vsn=2.0.0",
        gw.addr
    ))
    .await;
    let mut phx = Phx { ws, next_ref: 0 };
    let join_ref = phx.make_ref();
    let join = json!([join_ref, join_ref, "room:lobby", "phx_join", {}]);
    phx.ws.send(&join.to_string()).await;
    let reply = phx.recv_event("phx_reply").await;
    assert_eq!(reply[4]["status"], "ok", "{reply}");
    let state = phx.recv_event("presence_state").await;
    assert_eq!(
        state[4][&user]["metas"].as_array().map(Vec::len),
        Some(1),
        "{state}"
    );

    phx.send(Some(&join_ref), "room:lobby", "say", json!({"text": "hi"}))
        .await;
    let said = phx.recv_event("said").await;
    assert_eq!(
        (&said[0], &said[1], &said[2]),
        (&json!(join_ref), &Value::Null, &json!("room:lobby"))
    );
    assert_eq!(said[4]["text"], "hi", "{said}");
    assert!(
        said[4]["at"].as_str().is_some_and(|at| at.contains('T')),
        "{said}"
    );

    let tick = phx.recv_event("tick").await;
    assert!(tick[4]["n"].as_u64().is_some_and(|n| n >= 1), "{tick}");

    backend.stop().await;
    // Leave as a browser tab does, so the gateway stops without waiting out its grace period.
    phx.ws.ws.close(None).await.unwrap();
    let drained = tokio::time::timeout(WAIT, async { while phx.ws.ws.next().await.is_some() {} });
    drained.await.expect("the gateway completes the close");
    gw.stop().await;
}

/// The `[redis]` keys of a gateway in cluster mode, seeded with every node of `cluster`.
fn cluster_keys(cluster: &Cluster) -> String {
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("\"{s}\"")).collect();
    format!("mode = \"cluster\"\nnodes = [{}]", seeds.join(", "))
}

#[tokio::test]
async fn the_python_channels_example_answers_says_and_ticks_through_a_cluster() {
    let cluster = Cluster::start(3).await;
    let gw = Gateway::start_with_redis(&cluster_keys(&cluster), CHANNELS, "").await;
    gw.wait_ready().await;

    let seeds = cluster.seeds().join(",");
    let backend = Example::start(
        "channels_backend.py",
        &["--cluster", &seeds, "--interval", "0.2"],
        "channels_backend ready",
    )
    .await;

    let user = format!("user-{}", free_port());
    let token = fetch_token(&gw, &user).await;
    let ws = Client::connect(&format!(
        "ws://{}/socket/websocket?token={token}&vsn=2.0.0",
        gw.addr
    ))
    .await;
    let mut phx = Phx { ws, next_ref: 0 };
    let join_ref = phx.make_ref();
    let join = json!([join_ref, join_ref, "room:lobby", "phx_join", {}]);
    phx.ws.send(&join.to_string()).await;
    let reply = phx.recv_event("phx_reply").await;
    assert_eq!(reply[4]["status"], "ok", "{reply}");
    let state = phx.recv_event("presence_state").await;
    assert_eq!(
        state[4][&user]["metas"].as_array().map(Vec::len),
        Some(1),
        "{state}"
    );

    // The push goes out on from:{room:lobby}:say, the answer comes back on to:{room:lobby} as
    // `said:<payload>`: both only through sharded pub/sub.
    phx.send(Some(&join_ref), "room:lobby", "say", json!({"text": "hi"}))
        .await;
    let said = phx.recv_event("said").await;
    assert_eq!(
        (&said[0], &said[1], &said[2]),
        (&json!(join_ref), &Value::Null, &json!("room:lobby"))
    );
    assert_eq!(said[4]["text"], "hi", "{said}");
    assert!(
        said[4]["at"].as_str().is_some_and(|at| at.contains('T')),
        "{said}"
    );

    let tick = phx.recv_event("tick").await;
    assert!(tick[4]["n"].as_u64().is_some_and(|n| n >= 1), "{tick}");

    backend.stop().await;
    phx.ws.ws.close(None).await.unwrap();
    let drained = tokio::time::timeout(WAIT, async { while phx.ws.ws.next().await.is_some() {} });
    drained.await.expect("the gateway completes the close");
    gw.stop().await;
}
