//! The official `phoenix` npm client against refract, unchanged: runs the Node suite in
//! `tests/js` (`node --test`) against the real `refract` binary with `[channels]` on and a real
//! `redis-server`, and fails with Node's output unless every JS test passes.
//!
//! Needs Node.js >= 20 on `PATH` and `npm ci --prefix tests/js` run once.
//!
//! The gateway runs as a child process on a fixed port so that `restart.test.mjs` can have it
//! restarted under a connected client: the wrapper listens on the Redis channel [`CONTROL`],
//! `term` stops the gateway with SIGTERM, `kill` with SIGKILL; it is then started again on the
//! same port and the answer (`restarted ...` or `error: ...`) goes out on `<CONTROL>:done`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Redis, WAIT, free_port, http_request};
use futures_util::StreamExt;
use tokio::time::Instant;

const JWT_SECRET: &str = "refract-js-suite-secret-0123456789";
const IDLE_MS: u64 = 2000;
const MAX_TOPICS: usize = 100;
const CONTROL: &str = "refract:js:control";
/// One test file's Node run; each JS test has its own, much shorter, deadline.
const FILE_DEADLINE: Duration = Duration::from_secs(180);

/// The `[channels]` section the suite expects (see tests/js/README.md).
fn channels_toml() -> String {
    format!(
        "[channels]\nendpoint = \"/socket\"\njwt_secret = \"{JWT_SECRET}\"\n\
         idle_timeout = \"{IDLE_MS}ms\"\nmax_topics_per_socket = {MAX_TOPICS}\n\
         [channels.token_endpoint]\npath = \"/token\"\nopen = true\n\
         [channels.system]\ndatetime_interval = \"500ms\"\n"
    )
}

/// The real binary on a fixed port, restartable; its stderr goes to a log file.
struct Gateway {
    port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    async fn start(redis_url: &str) -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("refract.toml");
        let log = dir.path().join("refract.log");
        std::fs::write(
            &config,
            format!(
                "node_id = \"js-{port}\"\n[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace = \"2s\"\n\
                 [redis]\nurl = \"{redis_url}\"\ncanary_interval = \"200ms\"\ncanary_timeout = \"1s\"\n\
                 command_timeout = \"1s\"\n{}",
                channels_toml()
            ),
        )
        .unwrap();
        let mut gw = Self {
            port,
            config,
            log,
            child: None,
            _dir: dir,
        };
        gw.spawn();
        gw.wait_ready().await;
        gw
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_refract"))
            .arg("--config")
            .arg(&self.config)
            .env_remove("REFRACT_NODE_ID")
            .env("REFRACT_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the refract binary");
        self.child = Some(child);
    }

    async fn wait_ready(&self) {
        let addr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                let req = "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
                if http_request(addr, req).await.0 == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not become ready; its log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the process with `signal` ("TERM" or "KILL") and returns how it exited.
    async fn stop(&mut self, signal: &str) -> Result<std::process::ExitStatus, String> {
        let mut child = self.child.take().ok_or("the gateway is not running")?;
        let sent = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .map_err(|e| format!("kill -{signal}: {e}"))?;
        if !sent.success() {
            return Err(format!("kill -{signal} failed"));
        }
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the gateway did not exit within {WAIT:?} of SIG{signal}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Handles one control message: stop as asked, start again on the same port.
    async fn restart(&mut self, how: &str) -> Result<String, String> {
        let signal = match how {
            "term" => "TERM",
            "kill" => "KILL",
            other => return Err(format!("unknown control message {other:?}")),
        };
        let status = self.stop(signal).await?;
        if how == "term" && !status.success() {
            return Err(format!("the gateway exited with {status} after SIGTERM"));
        }
        self.spawn();
        self.wait_ready().await;
        Ok(format!("restarted after SIG{signal} ({status})"))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The suite's files, run one at a time because `restart.test.mjs` takes every socket down.
fn test_files(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".test.mjs"))
        .collect();
    files.sort();
    files
}

/// Everything published on Redis during the run that looks like it carries a JWT
/// (`eyJ`: base64 of `{"`), and how many messages were seen at all.
struct TokenWatch {
    leaks: Arc<Mutex<Vec<String>>>,
    seen: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl TokenWatch {
    async fn start(redis_url: &str) -> Self {
        let client = redis::Client::open(redis_url).unwrap();
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub.psubscribe("*").await.unwrap();
        let leaks = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(AtomicU64::new(0));
        let (l, n) = (leaks.clone(), seen.clone());
        let task = tokio::spawn(async move {
            let mut stream = pubsub.into_on_message();
            while let Some(msg) = stream.next().await {
                n.fetch_add(1, Ordering::Relaxed);
                let payload = String::from_utf8_lossy(msg.get_payload_bytes()).into_owned();
                let channel = msg.get_channel_name().to_owned();
                if payload.contains("eyJ") || channel.contains("eyJ") {
                    l.lock().unwrap().push(format!("{channel}: {payload}"));
                }
            }
        });
        Self { leaks, seen, task }
    }
}

impl Drop for TokenWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `node --version` as (major, minor).
fn node_version() -> Option<(u32, u32)> {
    let out = Command::new("node").arg("--version").output().ok()?;
    let v = String::from_utf8(out.stdout).ok()?;
    let mut parts = v.trim().trim_start_matches('v').split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Runs `node --test <file>` while answering restart requests on [`CONTROL`]; returns whether
/// it passed and its output.
async fn run_file(
    js: &Path,
    file: &str,
    env: &[(&str, String)],
    gw: &mut Gateway,
    control: &mut (impl futures_util::Stream<Item = redis::Msg> + Unpin),
    answers: &mut redis::aio::MultiplexedConnection,
    problems: &mut Vec<String>,
) -> (bool, String) {
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg("--test").arg("--test-reporter=spec");
    // Pushes without a reply keep phoenix.js timers alive for 10 s after the tests are done.
    if node_version().is_some_and(|v| v >= (20, 14)) {
        cmd.arg("--test-force-exit");
    }
    let child = cmd
        .arg(file)
        .current_dir(js)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start node");
    let output = child.wait_with_output();
    tokio::pin!(output);
    let deadline = tokio::time::sleep(FILE_DEADLINE);
    tokio::pin!(deadline);
    let output = loop {
        tokio::select! {
            out = &mut output => break out.expect("node ran"),
            Some(msg) = control.next() => {
                let how: String = msg.get_payload().unwrap_or_default();
                let answer = match gw.restart(&how).await {
                    Ok(done) => done,
                    Err(e) => {
                        problems.push(format!("{file}: restart: {e}"));
                        format!("error: {e}")
                    }
                };
                let _: i64 = redis::cmd("PUBLISH")
                    .arg(format!("{CONTROL}:done"))
                    .arg(answer)
                    .query_async(answers)
                    .await
                    .unwrap();
            }
            _ = &mut deadline => {
                problems.push(format!("{file}: node --test did not finish within {FILE_DEADLINE:?}"));
                return (false, String::new());
            }
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn official_phoenix_client_works_against_refract() {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    match node_version() {
        Some(v) if v >= (20, 0) => {}
        Some((major, minor)) => {
            panic!("Node.js >= 20 is needed for tests/js, found v{major}.{minor}")
        }
        None => panic!("`node` is not on PATH: install Node.js >= 20 to run tests/js"),
    }
    assert!(
        js.join("node_modules/phoenix").is_dir(),
        "tests/js/node_modules is missing: run `npm ci --prefix tests/js` first"
    );
    // REFRACT_JS_ONLY=restart runs only the files whose name contains `restart`.
    let only = std::env::var("REFRACT_JS_ONLY").unwrap_or_default();
    let files: Vec<String> = test_files(&js)
        .into_iter()
        .filter(|f| f.contains(&only))
        .collect();
    assert!(
        !files.is_empty(),
        "no *.test.mjs in {} (REFRACT_JS_ONLY={only:?})",
        js.display()
    );

    let redis = Redis::start().await;
    let watch = TokenWatch::start(&redis.url()).await;
    let mut gw = Gateway::start(&redis.url()).await;

    let client = redis::Client::open(redis.url()).unwrap();
    let mut control = client.get_async_pubsub().await.unwrap();
    control.subscribe(CONTROL).await.unwrap();
    let mut control = control.into_on_message();
    let mut answers = client.get_multiplexed_async_connection().await.unwrap();

    let env = [
        ("REFRACT_URL", format!("ws://127.0.0.1:{}/socket", gw.port)),
        ("REFRACT_HTTP", format!("http://127.0.0.1:{}", gw.port)),
        ("REDIS_URL", redis.url()),
        ("JWT_SECRET", JWT_SECRET.to_string()),
        ("REFRACT_IDLE_MS", IDLE_MS.to_string()),
        ("REFRACT_MAX_TOPICS", MAX_TOPICS.to_string()),
        ("REFRACT_CONTROL", CONTROL.to_string()),
    ];
    // One file at a time: restart.test.mjs takes every socket down.
    let mut problems = Vec::new();
    let mut report = String::new();
    for file in &files {
        let (passed, text) = run_file(
            &js,
            file,
            &env,
            &mut gw,
            &mut control,
            &mut answers,
            &mut problems,
        )
        .await;
        println!("--- {file} ---\n{text}");
        report.push_str(&format!("--- {file} ---\n{text}\n"));
        if !passed {
            problems.push(format!("{file} failed"));
        }
    }

    // Tokens never appear in logs or in anything published to Redis.
    let log = gw.log_text();
    if log.contains("eyJ") {
        problems.push("the gateway log contains something like a JWT (eyJ...)".into());
    }
    let leaks = watch.leaks.lock().unwrap().clone();
    if !leaks.is_empty() {
        problems.push(format!(
            "published on Redis with something like a JWT: {leaks:?}"
        ));
    }
    if watch.seen.load(Ordering::Relaxed) == 0 {
        problems.push("the Redis watch saw no message at all".into());
    }
    assert!(
        problems.is_empty(),
        "the phoenix.js suite failed: {problems:#?}\n{report}\n--- gateway log ---\n{log}"
    );
}
