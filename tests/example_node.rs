//! The documented Node.js examples (docs/examples/node/*.mjs) against the real gateway and a
//! real Redis, standalone and cluster, as tests/example_service.rs and tests/example_channels.rs
//! run the Python ones.
//!
//! Needs Node.js 20+ on `PATH` and `npm ci --prefix docs/examples/node` run once.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::topology::{Cluster, key_slot};
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples/node")
}

fn require_node_modules() {
    assert!(
        examples_dir().join("node_modules/redis").is_dir(),
        "docs/examples/node/node_modules is missing: run `npm ci --prefix docs/examples/node` first"
    );
}

/// `node docs/examples/node/<script> <args>`, not yet waited for.
fn node(script: &str, args: &[&str]) -> tokio::process::Command {
    require_node_modules();
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(examples_dir().join(script))
        .args(args)
        .kill_on_drop(true);
    cmd
}

/// A Node example program, started and seen ready. (common::example runs the Python ones.)
struct NodeExample {
    child: tokio::process::Child,
}

impl NodeExample {
    /// Runs the script and waits for its first line on stdout to start with `ready`.
    async fn start(script: &str, args: &[&str], ready: &str) -> Self {
        let mut child = node(script, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("`node` on PATH (Node.js 20 or newer)");
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(WAIT, out.next_line())
            .await
            .unwrap_or_else(|_| panic!("{script} did not start in time"))
            .unwrap()
            .unwrap_or_default();
        assert!(
            line.starts_with(ready),
            "{script} said {line:?}, not {ready:?}"
        );
        Self { child }
    }

    /// Sends SIGTERM and asserts the program exits cleanly.
    async fn stop(mut self) {
        let pid = self.child.id().unwrap().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("the example exits in time")
            .unwrap();
        assert!(status.success(), "the example exits cleanly on SIGTERM");
    }
}

/// The `[redis]` keys of a gateway in cluster mode, seeded with every node of `cluster`.
fn cluster_keys(cluster: &Cluster) -> String {
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("\"{s}\"")).collect();
    format!("mode = \"cluster\"\nnodes = [{}]", seeds.join(", "))
}

// ---- /quotes --------------------------------------------------------------------------------

/// The `[routes...]` part of the shipped example config, with the HTTP example's port moved to
/// a free one (nothing answers there; only `/quotes` is used here).
fn example_routes() -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/routes.example.toml"))
        .unwrap();
    let start = text.find("[routes.").expect("example has routes");
    text[start..].replace("127.0.0.1:9000", &format!("127.0.0.1:{}", free_port()))
}

/// The routes of docs/examples/refract-cluster.toml, after checking the file is in cluster mode.
fn compose_cluster_routes() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/examples/refract-cluster.toml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let settings = refract::Settings::from_toml(&text).expect("refract-cluster.toml is valid");
    assert_eq!(settings.redis.mode, refract::config::RedisMode::Cluster);
    let start = text
        .find("[routes.")
        .expect("the cluster example has routes");
    text[start..].to_string()
}

async fn next_kind(client: &mut Client, skip_ticks: bool) -> Value {
    loop {
        let v: Value = serde_json::from_str(&client.recv_text().await).unwrap();
        if !(skip_ticks && v["kind"] == "tick") {
            return v;
        }
    }
}

/// One client's session with the quotes service: every command of its doc comment, a tick,
/// and `bye`.
async fn talk_to_quotes(client: &mut Client) {
    let welcome = next_kind(client, true).await;
    assert_eq!(welcome["kind"], "welcome");
    assert_eq!(welcome["symbols"], json!(["ACME", "GLOBEX", "INITECH"]));

    client.send("ACME").await;
    let quote = next_kind(client, true).await;
    assert_eq!(
        (quote["kind"].as_str(), quote["symbol"].as_str()),
        (Some("quote"), Some("ACME"))
    );
    assert!(quote["price"].as_f64().is_some_and(|p| p > 0.0), "{quote}");

    // chartservice answers this one, through the same process.
    client.send("chart GLOBEX").await;
    let chart = next_kind(client, true).await;
    assert_eq!(chart["kind"], "chart");
    assert_eq!(chart["points"].as_array().unwrap().len(), 5);

    client.send("FOO").await;
    let error = next_kind(client, true).await;
    assert_eq!(
        (error["kind"].as_str(), error["error"].as_str()),
        (Some("error"), Some("unknown symbol"))
    );

    // The service pushes ticks on its own timer, through the gateway, to this client.
    loop {
        let v = next_kind(client, false).await;
        if v["kind"] == "tick" {
            assert!(v["price"].is_number(), "{v}");
            break;
        }
    }

    client.send("bye").await;
    assert_eq!(next_kind(client, true).await["kind"], "bye");
    // Ticks already queued may arrive before the close; the close itself is normal.
    assert_eq!(client.recv_close_after_text().await, 1000);
}

#[tokio::test]
async fn the_node_quotes_example_serves_the_example_route() {
    let redis = Redis::start().await;
    let url = redis.url();
    let service = NodeExample::start(
        "quotes_service.mjs",
        &["--redis-url", &url, "--interval", "0.2"],
        "quotes_service ready",
    )
    .await;
    // Garbage on the request channel is dropped, and the service goes on serving.
    assert_eq!(redis.publish("input", "not json").await, 1);
    assert_eq!(redis.publish("input", r#"{"id":"x","type":7}"#).await, 1);

    let gw = Gateway::start(&redis, &example_routes()).await;
    let mut binary = gw.ws("/quotes").await;
    assert_eq!(next_kind(&mut binary, true).await["kind"], "welcome");
    binary
        .ws
        .send(Message::binary(vec![0u8, 159, 146, 150]))
        .await
        .unwrap();
    let error = next_kind(&mut binary, true).await;
    assert_eq!(error["error"], "binary frames are not supported", "{error}");

    let mut client = gw.ws("/quotes").await;
    talk_to_quotes(&mut client).await;
    service.stop().await;
    gw.stop().await;
}

#[tokio::test]
async fn the_node_quotes_example_serves_the_example_route_through_a_cluster() {
    let cluster = Cluster::start(3).await;
    let seeds = cluster.seeds().join(",");
    let service = NodeExample::start(
        "quotes_service.mjs",
        &["--cluster", &seeds, "--interval", "0.2"],
        "quotes_service ready",
    )
    .await;

    // A node whose response channel is owned by another master than the request channel, so
    // every request and its reply cross two shards.
    let request_owner = cluster.owner_of("input").await;
    let mut node_id = String::new();
    for n in 0.. {
        node_id = format!("quotes-{n}");
        let owner = cluster
            .owner_of(&format!("refract.responses.{node_id}"))
            .await;
        if owner != request_owner {
            break;
        }
    }
    let routes = compose_cluster_routes();
    let gw = Gateway::start_node(&node_id, &cluster_keys(&cluster), &routes, "").await;
    assert_ne!(
        cluster.owner_of(&gw.response_channel()).await,
        request_owner
    );
    gw.wait_ready().await;

    // Requests are SSUBSCRIBEd, replies and ticks SPUBLISHed: a plain PUBLISH would reach nobody.
    let mut client = gw.ws("/quotes").await;
    talk_to_quotes(&mut client).await;
    service.stop().await;
    gw.stop().await;
}

/// node-redis follows a sharded channel whose slot moved (the cluster unsubscribes it), which the
/// example relies on instead of starting over as the Python one does: after a reshard of the
/// request channel's slot, requests are heard again without a restart.
#[tokio::test]
async fn the_node_quotes_example_follows_its_request_channel_to_a_new_owner() {
    let cluster = Cluster::start(3).await;
    // reshard takes a master's lowest slots first: a request channel in one of those.
    let mut firsts = HashSet::new();
    for port in cluster.live_ports() {
        firsts.insert(cluster.first_slot_of(port).await);
    }
    let channel = (0..)
        .map(|i| format!("quotes-input-{i}"))
        .find(|c| firsts.contains(&key_slot(c)))
        .unwrap();
    let seeds = cluster.seeds().join(",");
    let service = NodeExample::start(
        "quotes_service.mjs",
        &["--cluster", &seeds, "--request-channel", &channel],
        "quotes_service ready",
    )
    .await;
    let routes = format!(
        "[routes.\"/quotes\".services.quoteservice]\ntype = \"redis\"\nrequest_channel = \"{channel}\"\n\
         [routes.\"/quotes\".services.chartservice]\ntype = \"redis\"\nrequest_channel = \"{channel}\"\n"
    );
    let gw = Gateway::start_with_redis(&cluster_keys(&cluster), &routes, "").await;
    gw.wait_ready().await;
    let mut client = gw.ws("/quotes").await;
    assert_eq!(next_kind(&mut client, true).await["kind"], "welcome");

    let before = cluster.owner_of(&channel).await;
    let after = cluster.non_owner_of(&channel).await;
    cluster.reshard(before, after, 1).await;
    assert_eq!(cluster.owner_of(&channel).await, after);

    // What is published before the service has subscribed on the new owner is lost (pub/sub is
    // at-most-once), so ask until a quote comes back.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert!(
            Instant::now() < deadline,
            "the service never heard {channel} again after its slot moved"
        );
        client.send("ACME").await;
        let answer = tokio::time::timeout(Duration::from_millis(500), next_kind(&mut client, true));
        if let Ok(quote) = answer.await {
            assert_eq!(quote["kind"], "quote", "{quote}");
            break;
        }
    }
    service.stop().await;
    gw.stop().await;
}

// ---- Channels -------------------------------------------------------------------------------

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

/// `POST /token` as docs/examples/channels.html does it, from the example's allowed origin.
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
    answer["token"].as_str().expect("a token").to_string()
}

/// What channels.html does: a token, a socket, a join of `room:lobby`, a `say`; then the
/// backend's `said` answer and one of its ticks.
async fn talk_to_channels(gw: &Gateway) -> Phx {
    let user = format!("user-{}", free_port());
    let token = fetch_token(gw, &user).await;
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

    // A push the backend ignores (not `say`), then a `say` it rejects: neither is answered,
    // and the backend keeps serving.
    phx.send(
        Some(&join_ref),
        "room:lobby",
        "shout",
        json!({"text": "no"}),
    )
    .await;
    phx.send(Some(&join_ref), "room:lobby", "say", json!("not an object"))
        .await;
    phx.send(Some(&join_ref), "room:lobby", "say", json!({"text": "hi"}))
        .await;
    let said = phx.recv_event("said").await;
    assert_eq!(
        (&said[0], &said[1], &said[2]),
        (&json!(join_ref), &Value::Null, &json!("room:lobby"))
    );
    assert_eq!(said[4]["text"], "hi", "{said}");
    // RFC 3339 in UTC, as the Python backend writes it.
    let at = said[4]["at"].as_str().unwrap_or_default();
    assert!(at.contains('T') && at.ends_with("+00:00"), "{said}");

    let tick = phx.recv_event("tick").await;
    assert!(tick[4]["n"].as_u64().is_some_and(|n| n >= 1), "{tick}");
    phx
}

/// Leaves as a browser tab does, so the gateway stops without waiting out its grace period.
async fn leave(mut phx: Phx) {
    phx.ws.ws.close(None).await.unwrap();
    let drained = tokio::time::timeout(WAIT, async { while phx.ws.ws.next().await.is_some() {} });
    drained.await.expect("the gateway completes the close");
}

#[tokio::test]
async fn the_node_channels_example_answers_says_and_ticks() {
    let redis = Redis::start().await;
    let gw = Gateway::start_unready(&redis.url(), CHANNELS, "").await;
    gw.wait_ready().await;
    let url = redis.url();
    let backend = NodeExample::start(
        "channels_backend.mjs",
        &["--redis-url", &url, "--interval", "0.2"],
        "channels_backend ready",
    )
    .await;

    let phx = talk_to_channels(&gw).await;
    backend.stop().await;
    leave(phx).await;
    gw.stop().await;
}

#[tokio::test]
async fn the_node_channels_example_answers_says_and_ticks_through_a_cluster() {
    let cluster = Cluster::start(3).await;
    let gw = Gateway::start_with_redis(&cluster_keys(&cluster), CHANNELS, "").await;
    gw.wait_ready().await;
    let seeds = cluster.seeds().join(",");
    let backend = NodeExample::start(
        "channels_backend.mjs",
        &["--cluster", &seeds, "--interval", "0.2"],
        "channels_backend ready",
    )
    .await;

    // The push goes out on from:{room:lobby}:say, the answer comes back on to:{room:lobby} as
    // `said:<payload>`: both only through sharded pub/sub.
    let phx = talk_to_channels(&gw).await;
    backend.stop().await;
    leave(phx).await;
    gw.stop().await;
}

// ---- Command lines --------------------------------------------------------------------------

#[tokio::test]
async fn the_node_examples_refuse_bad_flags_with_exit_code_2() {
    let cases: [(&str, &[&str], &str); 4] = [
        ("quotes_service.mjs", &["--interval", "0"], "--interval"),
        (
            "quotes_service.mjs",
            &["--cluster", "http://h:1"],
            "not a redis://host:port URL",
        ),
        ("quotes_service.mjs", &["--no-such-flag"], "--no-such-flag"),
        (
            "channels_backend.mjs",
            &["--topics", "room:lobby"],
            "--topics needs --cluster",
        ),
    ];
    for (script, args, says) in cases {
        let run = node(script, args).output();
        let out = tokio::time::timeout(WAIT, run)
            .await
            .expect("node exits in time")
            .expect("`node` on PATH (Node.js 20 or newer)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{script} {args:?}: {stderr}");
        assert!(
            stderr.contains(says) && stderr.contains("usage:"),
            "{script} {args:?}: {stderr}"
        );
    }
}
