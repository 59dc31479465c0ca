//! The `refract` binary as an operator runs it: config errors, `check`, node ids, signals.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_refract");

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("refract.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run_check(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, text);
    let out = Command::new(BIN)
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn bad_config_exits_64_naming_the_file_and_key() {
    let cases = [
        (
            "[routes.\"/quotes\".services.quoteservice]\ntype = \"redis\"\n",
            "routes.\"/quotes\".services.quoteservice: request_channel is required",
        ),
        (
            "[routes.\"/q\".services.s]\ntype = \"carrier-pigeon\"\nrequest_channel = \"x\"\n",
            "routes.\"/q\".services.s: type \"carrier-pigeon\" is unknown",
        ),
        (
            "[server]\nshutdown_grace = \"-3s\"\n",
            "server.shutdown_grace",
        ),
        (
            "[server]\nlisten = \"0.0.0.0:8080\"\nlissen = 1\n",
            "lissen",
        ),
        ("[redis]\nurl = \"mysql://x\"\n", "redis.url"),
        (
            "[routes.\"/a\".services.s]\ntype = \"redis\"\nrequest_channel = \"x\"\n\
          [routes.\"/a\".services.s]\ntype = \"redis\"\n",
            "duplicate",
        ),
        ("this is = not toml [", "refract.toml"),
    ];
    for (text, want) in cases {
        let (code, stderr) = run_check(text);
        assert_eq!(code, 64, "{text}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains("refract.toml"), "names the file: {stderr}");
        assert!(stderr.contains(want), "expected {want:?} in {stderr:?}");
    }
    // Running (not just checking) a bad file fails the same way, before binding anything.
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, "[server]\nmax_connections = -1\n");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.max_connections"));
    // A missing file too.
    let out = Command::new(BIN)
        .args(["check", "--config", "/nonexistent/refract.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn check_accepts_the_example_config_and_help_explains_both_commands() {
    let out = Command::new(BIN)
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/routes.example.toml"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(
        help.contains("check") && help.contains("--config"),
        "{help}"
    );
    let out = Command::new(BIN)
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/routes.example.toml"),
        ])
        .env("REFRACT__SERVER__LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "environment overrides are validated too"
    );
}

/// Starts the binary on a free port against `redis`; returns the child and its port.
fn spawn_gateway(
    redis: &Redis,
    node_id: Option<&str>,
    dir: &tempfile::TempDir,
) -> (std::process::Child, u16) {
    let port = free_port();
    let path = write_config(
        dir,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[redis]\nurl = \"{}\"\ncanary_interval = \"200ms\"\n{QUOTES}",
            redis.url()
        ),
    );
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd.env_remove("REFRACT_NODE_ID");
    if let Some(id) = node_id {
        cmd.env("REFRACT_NODE_ID", id);
    }
    (cmd.spawn().unwrap(), port)
}

/// The child's stderr lines up to the first that `done` accepts (or all it wrote within
/// [`WAIT`]); then the child is killed.
fn stderr_until(child: &mut std::process::Child, done: impl Fn(&str) -> bool) -> Vec<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    while let Ok(line) =
        rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        let last = done(&line);
        seen.push(line);
        if last {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    seen
}

async fn response_channels(redis: &Redis) -> Vec<String> {
    let mut c = redis.conn().await;
    let mut v: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg("refract.responses.*")
        .query_async(&mut c)
        .await
        .unwrap();
    v.sort();
    v
}

#[tokio::test]
async fn node_ids_come_from_the_environment_or_are_generated_unique() {
    let redis = Redis::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut named, _) = spawn_gateway(&redis, Some("gw-east-1"), &dir);
    let dir2 = tempfile::tempdir().unwrap();
    let (mut anon1, _) = spawn_gateway(&redis, None, &dir2);
    let dir3 = tempfile::tempdir().unwrap();
    let (mut anon2, _) = spawn_gateway(&redis, None, &dir3);
    let channels = eventually("three nodes subscribed", || async {
        let c = response_channels(&redis).await;
        (c.len() == 3).then_some(c)
    })
    .await;
    assert!(
        channels.contains(&"refract.responses.gw-east-1".to_string()),
        "{channels:?}"
    );
    let generated: Vec<_> = channels
        .iter()
        .filter(|c| c.starts_with("refract.responses.n-"))
        .collect();
    assert_eq!(
        generated.len(),
        2,
        "two distinct generated ids: {channels:?}"
    );
    for child in [&mut named, &mut anon1, &mut anon2] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[test]
fn the_binary_logs_startup_to_stderr() {
    // Guard against a silent binary: operators read these lines.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let redis = rt.block_on(Redis::start());
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _) = spawn_gateway(&redis, Some("log-node"), &dir);
    let seen = stderr_until(&mut child, |l| {
        l.contains("refract starting") && l.contains("log-node")
    });
    let found = seen.last().is_some_and(|l| l.contains("log-node"));
    assert!(found, "startup line with the node id");
}

#[tokio::test]
async fn the_gateway_raises_its_open_file_limit_to_the_hard_limit() {
    let redis = Redis::start().await;
    let node = Node::start(&redis.url(), Some("fd-node"), "", QUOTES).await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", node.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    // "Max open files  <soft>  <hard>  files"
    assert_eq!(
        fields[3], fields[4],
        "soft limit raised to the hard one: {line}"
    );
}

/// The listening socket's backlog is `server.listen_backlog` (mio's default, 128, would make a
/// burst of connects wait a second for a SYN retransmit). For a listening socket, `ss` shows the
/// backlog as its Send-Q.
#[tokio::test]
async fn the_listener_takes_its_backlog_from_the_config() {
    let redis = Redis::start().await;
    let node = Node::start(&redis.url(), None, "listen_backlog = 700\n", QUOTES).await;
    let filter = format!("sport = :{}", node.addr.port());
    let out = Command::new("ss")
        .args(["-ltnH", &filter])
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = text.split_whitespace().collect();
    // "LISTEN <recv-q> <send-q = backlog> <local> <peer>"
    assert_eq!(fields.get(2), Some(&"700"), "ss said: {text}");
}

/// `refract client`: stdin lines go out as text frames, replies come back on stdout, end of
/// input closes with 1000; a refused upgrade exits 1 with its status.
#[tokio::test]
async fn the_client_command_sends_lines_and_prints_what_comes_back() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

    let redis = Redis::start().await;
    let route =
        "[routes.\"/echo\".services.echo]\ntype = \"redis\"\nrequest_channel = \"echo.in\"\n";
    let gw = Gateway::start(&redis, route).await;
    let mut service = redis.subscribe("echo.in").await;
    let mut child = tokio::process::Command::new(BIN)
        .arg("client")
        .arg(format!("ws://{}/echo", gw.addr))
        .arg("--header")
        .arg("Origin: http://example.test")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    stdin.write_all(b"hello there\n").await.unwrap();
    let event = loop {
        let e = service.next_json().await;
        if e["type"] == "message" {
            break e;
        }
    };
    assert_eq!(event["message"], "hello there");
    let reply = reply(event["id"].as_str().unwrap(), "echo", "general kenobi");
    assert_eq!(redis.publish(&gw.response_channel(), reply).await, 1);
    let line = tokio::time::timeout(WAIT, stdout.next_line())
        .await
        .unwrap();
    assert_eq!(line.unwrap().as_deref(), Some("general kenobi"));

    drop(stdin);
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert!(stderr.contains("[closed 1000"), "{stderr}");
    let disconnect = loop {
        let e = service.next_json().await;
        if e["type"] == "disconnect" {
            break e;
        }
    };
    assert_eq!(disconnect["id"], event["id"]);

    let out = tokio::process::Command::new(BIN)
        .arg("client")
        .arg(format!("ws://{}/nowhere", gw.addr))
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refused: HTTP 404"), "{stderr}");
    gw.stop().await;
}

/// With Redis down from the start, the log says the node cannot subscribe yet and names where
/// it looks (not that a subscription was "lost": there never was one).
#[test]
fn redis_down_from_the_start_is_logged_as_such_with_its_url() {
    let redis = Redis::on_port(free_port());
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _) = spawn_gateway(&redis, Some("no-redis-node"), &dir);
    let seen = stderr_until(&mut child, |l| {
        l.contains("cannot subscribe to the response channel yet")
    });
    let line = seen.last().unwrap();
    assert!(line.contains("cannot subscribe"), "{seen:#?}");
    assert!(line.contains(&redis.url()), "names the URL: {line}");
    assert!(
        !seen.iter().any(|l| l.contains("subscription lost")),
        "{seen:#?}"
    );
}

/// A config with nothing to serve is valid, but `check` (and a start) says so.
#[test]
fn a_config_with_nothing_to_serve_gets_a_warning() {
    let (code, stderr) = run_check("[server]\nlisten = \"127.0.0.1:1\"\n");
    assert_eq!(code, 0);
    assert!(
        stderr.contains("warning: ") && stderr.contains("no routes and no [channels]"),
        "{stderr}"
    );
    let (code, stderr) = run_check(QUOTES);
    assert_eq!(code, 0);
    assert!(!stderr.contains("warning"), "{stderr}");
}
