//! The admin page and the Channels example page (`docs/examples/channels.html`) in headless
//! Chromium, against a real gateway on a real Redis: the scripts in `tests/browser/` drive the
//! pages with puppeteer-core and say on stdout when a page has reached a step; the test does its
//! part (opens a WebSocket, publishes on Redis) in between and checks what reached Redis.
//!
//! Needs Debian's `chromium` at `/usr/bin/chromium` (or `$CHROMIUM`), Node.js >= 20 and
//! `npm ci --prefix tests/browser`. A failed run leaves a screenshot in
//! `target/browser/<test>.png`.

mod common;

use std::any::Any;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::FutureExt;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const ADMIN_TOKEN: &str = "browser-test-admin-token-0123456789";
const JWT_SECRET: &str = "browser-test-channels-secret-0123456789";
/// How long the test waits for the script's next step; the script's own waits are 10 s, so a
/// page that never gets there fails in the script, with its screenshot.
const STEP: Duration = Duration::from_secs(20);
/// How long a finished or aborted script may take to save its screenshot and exit.
const EXIT: Duration = Duration::from_secs(10);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/chromium".into())
}

/// Fails, naming what to install, unless Chromium, Node.js >= 20 and the npm packages are there.
fn check_prerequisites() {
    let chromium = chromium();
    assert!(
        chromium.is_file(),
        "no Chromium at {}: install Debian's chromium (apt-get install chromium) or set CHROMIUM",
        chromium.display()
    );
    let version = std::process::Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok());
    let major: Option<u32> = version.as_deref().and_then(|v| {
        v.trim()
            .trim_start_matches('v')
            .split('.')
            .next()?
            .parse()
            .ok()
    });
    match major {
        Some(m) if m >= 20 => {}
        Some(_) => panic!("Node.js >= 20 is needed for tests/browser, found {version:?}"),
        None => panic!("`node` is not on PATH: install Node.js >= 20 to run tests/browser"),
    }
    for package in ["puppeteer-core", "phoenix"] {
        assert!(
            browser_dir().join("node_modules").join(package).is_dir(),
            "tests/browser/node_modules/{package} is missing: run `npm ci --prefix tests/browser`"
        );
    }
}

/// `<target>/browser/<name>.png`, with any screenshot of an earlier run removed.
fn screenshot(name: &str) -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
    let path = target.join("browser").join(format!("{name}.png"));
    let _ = std::fs::remove_file(&path);
    path
}

/// One page script under `tests/browser/`, running in Node.
struct Script {
    name: String,
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    /// The `step ...` lines, in order; closed when the script's stdout closes.
    steps: mpsc::UnboundedReceiver<String>,
    /// Everything the script printed, stdout and stderr interleaved, for the failure message.
    output: Arc<Mutex<String>>,
    screenshot: PathBuf,
}

impl Script {
    fn start(file: &str, name: &str, args: &[&str]) -> Self {
        let screenshot = screenshot(name);
        let mut child = tokio::process::Command::new("node")
            .arg(file)
            .args(args)
            .arg("--screenshot")
            .arg(&screenshot)
            .env("CHROMIUM", chromium())
            .current_dir(browser_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start node");
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, steps) = mpsc::unbounded_channel();
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let o = output.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                o.lock().unwrap().push_str(&format!("{line}\n"));
                if let Some(step) = line.strip_prefix("step ") {
                    let _ = tx.send(step.to_string());
                }
            }
        });
        let o = output.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                o.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        Self {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            steps,
            output,
            screenshot,
        }
    }

    /// Waits for `step <name> [detail]` and returns the detail; panics on any other step, when
    /// the script exits first, or after [`STEP`].
    async fn step(&mut self, name: &str) -> String {
        let line = tokio::time::timeout(STEP, self.steps.recv())
            .await
            .unwrap_or_else(|_| panic!("no step `{name}` from the script within {STEP:?}"))
            .unwrap_or_else(|| panic!("the script ended before step `{name}`"));
        let (got, detail) = line.split_once(' ').unwrap_or((&line, ""));
        assert_eq!(got, name, "the script's steps are out of order");
        detail.to_string()
    }

    /// Ends the run: on the test's own failure (`outcome` is a panic) the script is told to
    /// abort, which saves its screenshot; then the script must have exited 0.
    async fn finish(mut self, outcome: Result<(), Box<dyn Any + Send>>) {
        let mut problem = outcome.err().map(|panic| {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "(a panic without a message)".into());
            format!("the test failed: {text}")
        });
        if let (Some(why), Some(stdin)) = (&problem, self.stdin.as_mut()) {
            let line = format!("abort {}\n", why.lines().next().unwrap_or(""));
            let _ = stdin.write_all(line.as_bytes()).await;
            let _ = stdin.flush().await;
        }
        match tokio::time::timeout(EXIT, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => {
                problem.get_or_insert_with(|| format!("the script failed ({status})"));
            }
            Ok(Err(e)) => {
                problem.get_or_insert_with(|| format!("waiting for the script: {e}"));
            }
            Err(_) => {
                // SIGTERM first: puppeteer closes Chromium on it; SIGKILL would orphan it.
                if let Some(pid) = self.child.id() {
                    let _ = std::process::Command::new("kill")
                        .arg(pid.to_string())
                        .status();
                }
                if tokio::time::timeout(Duration::from_secs(3), self.child.wait())
                    .await
                    .is_err()
                {
                    let _ = self.child.kill().await;
                }
                problem.get_or_insert_with(|| format!("the script did not exit within {EXIT:?}"));
            }
        }
        // Let the readers take the script's last lines.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while self.steps.recv().await.is_some() {}
        })
        .await;
        if let Some(problem) = problem {
            let shot = if self.screenshot.is_file() {
                format!("screenshot: {}", self.screenshot.display())
            } else {
                "no screenshot was saved".to_string()
            };
            panic!(
                "{}: {problem}\n{shot}\n--- script output ---\n{}",
                self.name,
                self.output.lock().unwrap()
            );
        }
    }
}

/// Serves `docs/examples/channels.html` at `/channels.html` on its own origin, as the
/// example's instructions do with `python3 -m http.server`; everything else is 404.
async fn serve_example_page() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let page =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples/channels.html"))
            .unwrap();
    let page = Bytes::from(page);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let page = page.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let page = page.clone();
                    async move {
                        let response = if req.uri().path() == "/channels.html" {
                            Response::builder()
                                .header("content-type", "text/html; charset=utf-8")
                                .body(Full::new(page))
                        } else {
                            Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::from_static(b"not found")))
                        };
                        Ok::<_, Infallible>(response.unwrap())
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, task)
}

/// A route, the admin page with a token, and Channels with the open token endpoint the example
/// page calls, allowing `page_origin`.
fn config(page_origin: &str) -> String {
    format!(
        r#"
[routes."/echo".services.echo]
type = "redis"
request_channel = "echo.in"

[admin]
token = "{ADMIN_TOKEN}"

[channels]
endpoint = "/socket"
jwt_secret = "{JWT_SECRET}"

[channels.token_endpoint]
path = "/token"
open = true
cors_origins = ["{page_origin}"]
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_page_signs_in_and_shows_a_connection_come_and_go() {
    check_prerequisites();
    let redis = Redis::start().await;
    // No page calls /token here; the origin is the example's documented one.
    let gw = Gateway::start(&redis, &config("http://localhost:8080")).await;
    let url = format!("http://{}", gw.addr);
    let mut script = Script::start(
        "admin.mjs",
        "admin",
        &["--url", &url, "--token", ADMIN_TOKEN, "--route", "/echo"],
    );
    let outcome = AssertUnwindSafe(async {
        // Signed in (after the wrong token was refused on the page); /echo shows 0.
        script.step("logged-in").await;
        let mut client = gw.ws("/echo").await;
        script.step("connection-shown").await;
        client.ws.close(None).await.unwrap();
        script.step("connection-gone").await;
    })
    .catch_unwind()
    .await;
    script.finish(outcome).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_channels_example_page_joins_renders_a_published_event_and_pushes() {
    check_prerequisites();
    let redis = Redis::start().await;
    let (page_addr, page_server) = serve_example_page().await;
    let gw = Gateway::start(&redis, &config(&format!("http://{page_addr}"))).await;
    let mut said = redis.subscribe("from:room:lobby:say").await;
    let mut conn = redis.conn().await;
    let patterns_before: i64 = redis::cmd("PUBSUB")
        .arg("NUMPAT")
        .query_async(&mut conn)
        .await
        .unwrap();

    let nonce = format!("hello-from-redis-{}", free_port());
    let words = format!("typed-in-the-page-{}", free_port());
    let page = format!(
        "http://{page_addr}/channels.html?gateway=http://{}",
        gw.addr
    );
    let mut script = Script::start(
        "channels_page.mjs",
        "channels_page",
        &[
            "--page", &page, "--event", "news", "--expect", &nonce, "--say", &words,
        ],
    );
    let outcome = AssertUnwindSafe(async {
        let user = script.step("joined").await;
        assert!(user.starts_with("user-"), "joined as {user:?}");
        // The gateway PSUBSCRIBEs to:room:lobby:* for the joined topic; publish once it has.
        eventually("the gateway's pattern subscription for room:lobby", || {
            let mut conn = conn.clone();
            async move {
                let n: i64 = redis::cmd("PUBSUB")
                    .arg("NUMPAT")
                    .query_async(&mut conn)
                    .await
                    .ok()?;
                (n > patterns_before).then_some(())
            }
        })
        .await;
        let payload = json!({"title": nonce}).to_string();
        let receivers = redis.publish("to:room:lobby:news", payload).await;
        assert!(receivers >= 1, "nobody took to:room:lobby:news");
        script.step("rendered").await;

        script.step("said").await;
        let push = said.next_json().await;
        assert_eq!(push, json!({"text": words}), "from:room:lobby:say");
    })
    .catch_unwind()
    .await;
    script.finish(outcome).await;
    page_server.abort();
    gw.stop().await;
}
