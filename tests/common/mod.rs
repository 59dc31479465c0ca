//! Test harness: a real `redis-server` on a free port, the gateway started with `refract::run`
//! on port 0, real WebSocket clients, and real Redis subscribers playing the services.
#![allow(dead_code)]

pub mod example;
pub mod http_server;
pub mod phx;
pub mod tls;
pub mod topology;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(10);

/// Polls `check` until it returns `Some`, or panics with `what` after `WAIT`.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_within(WAIT, what, check).await
}

/// As [`eventually`], with a deadline of `within`.
pub async fn eventually_within<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` of the test's own, never on 6379.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    /// More `redis-server` arguments (TLS), kept for restarts.
    args: Vec<String>,
}

impl Redis {
    pub async fn start() -> Self {
        let mut r = Self::on_port(free_port());
        r.restart().await;
        r
    }

    /// A handle for `port` with no server started yet.
    pub fn on_port(port: u16) -> Self {
        assert_ne!(port, 6379);
        let args = Vec::new();
        Self {
            port,
            child: None,
            args,
        }
    }

    /// A server that also takes TLS connections on `tls_port`, with `certs`' server certificate,
    /// and asks TLS clients for a certificate signed by `certs`' CA. The plain port stays open
    /// for the tests' own connections.
    pub async fn start_tls(certs: &tls::TestCerts, tls_port: u16) -> Self {
        let mut r = Self::on_port(free_port());
        r.args = certs.server_args(tls_port);
        r.restart().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and waits until it answers.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "redis already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be on PATH");
        self.child = Some(child);
        let url = self.url();
        eventually("redis-server to answer PING", || {
            let url = url.clone();
            async move {
                let client = redis::Client::open(url).ok()?;
                let mut c = client.get_multiplexed_async_connection().await.ok()?;
                redis::cmd("PING").query_async::<String>(&mut c).await.ok()
            }
        })
        .await;
    }

    /// Kills the server (SIGKILL) and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    pub async fn publish(&self, channel: &str, payload: impl AsRef<[u8]>) -> i64 {
        let mut c = self.conn().await;
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload.as_ref())
            .query_async(&mut c)
            .await
            .unwrap()
    }

    /// A subscriber on `channel`, like a service listening on its request channel.
    pub async fn subscribe(&self, channel: &str) -> Subscriber {
        let client = redis::Client::open(self.url()).unwrap();
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub.subscribe(channel).await.unwrap();
        let mut stream = pubsub.into_on_message();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                if tx.send(msg.get_payload_bytes().to_vec()).is_err() {
                    break;
                }
            }
        });
        Subscriber { rx, task }
    }
}

impl Redis {
    /// A pattern subscriber (`PSUBSCRIBE`), keeping each message's channel.
    pub async fn subscribe_pattern(&self, pattern: &str) -> PatternSubscriber {
        let client = redis::Client::open(self.url()).unwrap();
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub.psubscribe(pattern).await.unwrap();
        let mut stream = pubsub.into_on_message();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                let item = (
                    msg.get_channel_name().to_string(),
                    msg.get_payload_bytes().to_vec(),
                );
                if tx.send(item).is_err() {
                    break;
                }
            }
        });
        PatternSubscriber { rx, task }
    }
}

pub struct PatternSubscriber {
    rx: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    task: tokio::task::JoinHandle<()>,
}

impl PatternSubscriber {
    pub async fn next_message(&mut self) -> (String, Vec<u8>) {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("timed out waiting for a Redis message")
            .expect("subscriber ended")
    }

    /// Everything received so far, without waiting.
    pub fn drain_now(&mut self) -> Vec<(String, Vec<u8>)> {
        std::iter::from_fn(|| self.rx.try_recv().ok()).collect()
    }
}

impl Drop for PatternSubscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

pub struct Subscriber {
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    pub async fn next_raw(&mut self) -> Vec<u8> {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("timed out waiting for a Redis message")
            .expect("subscriber ended")
    }

    pub async fn next_json(&mut self) -> Value {
        let raw = self.next_raw().await;
        serde_json::from_slice(&raw).expect("a JSON message")
    }

    /// The next message of `kind` for connection `id`, skipping other connections' events.
    pub async fn next_for(&mut self, id: &str) -> Value {
        loop {
            let v = self.next_json().await;
            if v["id"] == id {
                return v;
            }
        }
    }

    /// The next event of `kind` for connection `id`, skipping everything else.
    pub async fn next_event(&mut self, id: &str, kind: &str) -> Value {
        loop {
            let v = self.next_for(id).await;
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// Nothing else arrived (checked without waiting).
    pub fn try_next(&mut self) -> Option<Vec<u8>> {
        self.rx.try_recv().ok()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A running gateway, started in-process with `refract::run` on port 0.
pub struct Gateway {
    pub addr: SocketAddr,
    pub node_id: String,
    pub shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), refract::Error>>>,
}

pub const QUOTES: &str = r#"
[routes."/quotes".services.quoteservice]
type = "redis"
request_channel = "input"

[routes."/quotes".services.chartservice]
type = "redis"
request_channel = "input"
"#;

impl Gateway {
    /// Starts a gateway with `routes` (TOML) and extra top-level TOML, waiting until ready.
    pub async fn start(redis: &Redis, routes: &str) -> Self {
        let gw = Self::start_unready(&redis.url(), routes, "").await;
        gw.wait_ready().await;
        gw
    }

    /// Starts without waiting for readiness; `server` holds extra `[server]` keys.
    pub async fn start_unready(redis_url: &str, routes: &str, server: &str) -> Self {
        Self::start_with_redis(&url_key(redis_url), routes, server).await
    }

    /// Starts without waiting for readiness, with `redis` as the `[redis]` keys that say where
    /// Redis is (`url`, or `mode` and its keys).
    pub async fn start_with_redis(redis: &str, routes: &str, server: &str) -> Self {
        let node_id = format!("test-{}", free_port());
        Self::start_node(&node_id, redis, routes, server).await
    }

    /// As [`Gateway::start_with_redis`], with a chosen node id.
    pub async fn start_node(node_id: &str, redis: &str, routes: &str, server: &str) -> Self {
        let node_id = node_id.to_string();
        let text = format!(
            "node_id = \"{node_id}\"\n[server]\nshutdown_grace = \"2s\"\n{server}\n[redis]\n{redis}\n\
             canary_interval = \"200ms\"\ncanary_timeout = \"1s\"\ncommand_timeout = \"1s\"\n{routes}"
        );
        let settings = refract::Settings::from_toml(&text).expect("valid test config");
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let listener = refract::http::serve::bind(any, settings.server.listen_backlog).unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(refract::run(settings, listener, shutdown.clone()));
        Self {
            addr,
            node_id,
            shutdown,
            task: Some(task),
        }
    }

    pub fn response_channel(&self) -> String {
        format!("refract.responses.{}", self.node_id)
    }

    pub async fn wait_ready(&self) {
        eventually("gateway /readyz to be 200", || async {
            (self.get("/readyz").await.0 == 200).then_some(())
        })
        .await;
    }

    /// A plain HTTP GET; returns status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_request(
            self.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await
    }

    pub async fn metric(&self, line_prefix: &str) -> u64 {
        let (_, body) = self.get("/metrics").await;
        body.lines()
            .find_map(|l| l.strip_prefix(line_prefix)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {line_prefix} not found"))
    }

    pub async fn ws(&self, path: &str) -> Client {
        Client::connect(&format!("ws://{}{path}", self.addr)).await
    }

    /// Cancels and waits for `run` to return.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("gateway stops in time")
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Sends a raw HTTP/1.1 request and reads the whole response.
pub async fn http_request(addr: SocketAddr, request: &str) -> (u16, String) {
    let text = http_response(addr, request).await;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The whole response to a raw HTTP request, head and body.
pub async fn http_response(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("HTTP response in time")
        .unwrap();
    String::from_utf8_lossy(&buf).to_string()
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("WebSocket connect");
        Self { ws }
    }

    pub async fn connect_request(
        req: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("WebSocket connect");
        Self { ws }
    }

    pub fn local_port(&self) -> u16 {
        match self.ws.get_ref() {
            MaybeTlsStream::Plain(s) => s.local_addr().unwrap().port(),
            _ => unreachable!(),
        }
    }

    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// The next data or close frame (pings and pongs skipped).
    pub async fn recv(&mut self) -> Message {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("stream ended")
                .expect("frame");
            if !matches!(m, Message::Ping(_) | Message::Pong(_)) {
                return m;
            }
        }
    }

    pub async fn recv_text(&mut self) -> String {
        match self.recv().await {
            Message::Text(t) => t.to_string(),
            other => panic!("expected text, got {other:?}"),
        }
    }

    /// Waits for the close frame, skipping text frames still queued before it; returns its code.
    pub async fn recv_close_after_text(&mut self) -> u16 {
        loop {
            match self.recv().await {
                Message::Close(Some(f)) => return u16::from(f.code),
                Message::Text(_) => continue,
                other => panic!("expected text or a close, got {other:?}"),
            }
        }
    }

    /// Waits for the close frame and returns its code and reason.
    pub async fn recv_close(&mut self) -> (u16, String) {
        match self.recv().await {
            Message::Close(Some(f)) => (u16::from(f.code), f.reason.to_string()),
            other => panic!("expected close, got {other:?}"),
        }
    }
}

/// Connects a client and returns it with its id, read from the `connect` event on `sub`.
pub async fn connect_and_identify(
    gw: &Gateway,
    path: &str,
    sub: &mut Subscriber,
) -> (Client, String) {
    let client = gw.ws(path).await;
    let port = client.local_port();
    loop {
        let v = sub.next_json().await;
        if v["type"] == "connect" && v["remotePort"] == port {
            return (client, v["id"].as_str().unwrap().to_string());
        }
    }
}

/// Attempts a WebSocket upgrade and returns the HTTP status it was refused with; panics if the
/// upgrade succeeds.
pub async fn refused_status(
    req: impl tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
) -> u16 {
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Ok(_) => panic!("the upgrade was accepted"),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
    }
}

pub fn reply(id: &str, service: &str, message: &str) -> String {
    serde_json::json!({"id": id, "type": "message", "service": service, "message": message})
        .to_string()
}

/// A gateway as a separate process (the real binary), for signals and memory.
pub struct Node {
    pub addr: SocketAddr,
    pub child: std::process::Child,
    dir: tempfile::TempDir,
    /// The config file, and its text without the routes.
    config: (std::path::PathBuf, String),
}

/// The `[redis]` key for one server at `url`.
fn url_key(url: &str) -> String {
    format!("url = \"{url}\"")
}

impl Node {
    /// Starts `refract --config` with `server` keys, Redis at `redis_url`, and `routes`; waits
    /// until `/readyz` is 200. `node_id` None lets the node generate its id.
    pub async fn start(redis_url: &str, node_id: Option<&str>, server: &str, routes: &str) -> Self {
        Self::start_with_env(redis_url, node_id, server, routes, &[]).await
    }

    /// Starts a node on a given address (to restart one where it was).
    pub async fn start_at(
        redis_url: &str,
        node_id: Option<&str>,
        addr: SocketAddr,
        routes: &str,
    ) -> Self {
        Self::spawn(&url_key(redis_url), node_id, "", routes, &[], addr.port()).await
    }

    /// As [`Node::start`], with `redis` as the `[redis]` keys that say where Redis is.
    pub async fn start_with_redis(
        redis: &str,
        node_id: Option<&str>,
        server: &str,
        routes: &str,
    ) -> Self {
        Self::spawn(redis, node_id, server, routes, &[], free_port()).await
    }

    /// As [`Node::start`], with extra environment variables for the process.
    pub async fn start_with_env(
        redis_url: &str,
        node_id: Option<&str>,
        server: &str,
        routes: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let redis = url_key(redis_url);
        Self::spawn(&redis, node_id, server, routes, env, free_port()).await
    }

    async fn spawn(
        redis: &str,
        node_id: Option<&str>,
        server: &str,
        routes: &str,
        env: &[(&str, &str)],
        port: u16,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("refract.toml");
        let id_line = node_id
            .map(|id| format!("node_id = \"{id}\"\n"))
            .unwrap_or_default();
        let head = format!(
            "{id_line}[server]\nlisten = \"127.0.0.1:{port}\"\n{server}\n[redis]\n{redis}\n\
             canary_interval = \"200ms\"\ncanary_timeout = \"1s\"\ncommand_timeout = \"1s\"\n"
        );
        std::fs::write(&path, format!("{head}{routes}")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_refract"))
            .arg("--config")
            .arg(&path)
            .env_remove("REFRACT_NODE_ID")
            .env("REFRACT_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .unwrap();
        let node = Self {
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            child,
            dir,
            config: (path, head),
        };
        node.wait_ready().await;
        node
    }

    pub async fn wait_ready(&self) {
        let addr = self.addr;
        eventually("node /readyz to be 200", || async move {
            TcpStream::connect(addr).await.ok()?;
            (http_request(
                addr,
                "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await
            .0 == 200)
                .then_some(())
        })
        .await;
    }

    pub async fn metric(&self, line_prefix: &str) -> u64 {
        let (_, body) = http_request(
            self.addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        body.lines()
            .find_map(|l| l.strip_prefix(line_prefix)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {line_prefix} not found"))
    }

    pub async fn ws(&self, path: &str) -> Client {
        Client::connect(&format!("ws://{}{path}", self.addr)).await
    }

    /// Connects a client on `path` and returns it with its `connect` event, read from `sub`.
    pub async fn connect_identified(&self, path: &str, sub: &mut Subscriber) -> (Client, Value) {
        let client = self.ws(path).await;
        let port = client.local_port();
        loop {
            let v = sub.next_json().await;
            if v["type"] == "connect" && v["remotePort"] == port {
                return (client, v);
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Rewrites the node's config file with `routes` in place of the routes it started with
    /// (every other key as it was); the node reads it on SIGHUP.
    pub fn rewrite_routes(&self, routes: &str) {
        let (path, head) = &self.config;
        std::fs::write(path, format!("{head}{routes}")).unwrap();
    }

    /// What the process has written to stderr so far (its log, at `warn` and above).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// The config file.
    pub fn config_path(&self) -> &std::path::Path {
        &self.config.0
    }

    /// Resident memory of the process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn wait_exit(mut self) -> Option<i32> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "node did not exit in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A subscriber that resubscribes whenever its connection drops, as a real service would;
/// for tests that restart Redis under it.
pub struct ResilientSubscriber {
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    /// Incremented each time the subscription is (re)established.
    pub subscribed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl ResilientSubscriber {
    pub fn start(url: String, channel: &str) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let subscribed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let count = subscribed.clone();
        let channel = channel.to_string();
        let task = tokio::spawn(async move {
            loop {
                let attempt = async {
                    let client = redis::Client::open(url.as_str()).ok()?;
                    let mut pubsub = client.get_async_pubsub().await.ok()?;
                    pubsub.subscribe(&channel).await.ok()?;
                    Some(pubsub.into_on_message())
                };
                let Some(mut stream) = attempt.await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                while let Some(msg) = stream.next().await {
                    if tx.send(msg.get_payload_bytes().to_vec()).is_err() {
                        return;
                    }
                }
            }
        });
        Self {
            rx,
            subscribed,
            task,
        }
    }

    pub fn try_next(&mut self) -> Option<Vec<u8>> {
        self.rx.try_recv().ok()
    }

    pub async fn wait_subscribed(&self, times: u64) {
        eventually("the service to (re)subscribe", || async {
            (self.subscribed.load(std::sync::atomic::Ordering::SeqCst) >= times).then_some(())
        })
        .await;
    }
}

impl Drop for ResilientSubscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A real TCP proxy in front of Redis that can freeze its current connections: they stay open,
/// but nothing Redis sends reaches the client any more. New connections are unaffected. This is
/// the "subscription that looks connected but delivers nothing" of a bad failover.
pub struct FreezingProxy {
    pub port: u16,
    frozen: std::sync::Arc<std::sync::Mutex<Vec<std::sync::Arc<std::sync::atomic::AtomicBool>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FreezingProxy {
    pub async fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let registry = frozen.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
                    continue;
                };
                let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                registry.lock().unwrap().push(flag.clone());
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        // Frozen: swallow what Redis says, keep the socket open.
                        if !flag.load(std::sync::atomic::Ordering::SeqCst)
                            && cw.write_all(&buf[..n]).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        Self { port, frozen, task }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Freezes every connection open now.
    pub fn freeze_current(&self) {
        for flag in self.frozen.lock().unwrap().iter() {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
