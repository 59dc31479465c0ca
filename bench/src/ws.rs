//! The closed loop through a gateway: each of N WebSocket clients sends a text frame, awaits the
//! echoed text, and repeats, for a warm-up and then a measured window. Works against any ws://
//! URL whose route answers each text frame with the same text.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{self, Ws};

#[derive(clap::Args)]
pub struct Args {
    /// The route to load, e.g. ws://127.0.0.1:8080/echo.
    #[arg(long)]
    pub url: String,
    /// Concurrent connections, each with one request in flight.
    #[arg(long, default_value_t = 100)]
    pub conns: usize,
    /// Seconds before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Bytes of text per request.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// WebSocket handshakes in flight at once while connecting.
    #[arg(long, default_value_t = 128)]
    pub connect_concurrency: usize,
    /// A fixed number of round trips instead of a measured window: spread over the clients,
    /// every one counted, no warm-up; `--duration` is then only a cap.
    #[arg(long)]
    pub round_trips: Option<u64>,
    /// Shell command run once every client is connected, before the first request.
    #[arg(long)]
    pub exec_before: Option<String>,
    /// Shell command run once every client is done, before any closes its socket.
    #[arg(long)]
    pub exec_after: Option<String>,
}

/// How long one request may take before it counts as lost.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// When to start recording, and when to stop.
#[derive(Clone, Copy)]
pub struct Window {
    pub warm_end: Instant,
    pub end: Instant,
}

/// What one virtual client saw in the window.
#[derive(Default)]
pub struct ClientResult {
    /// Round trips completed inside the window, in microseconds.
    pub latencies: Vec<u32>,
    pub timeouts: u64,
    /// Frames that were not the echo awaited (late answers after a timeout).
    pub stale: u64,
    pub error: Option<String>,
}

impl ClientResult {
    pub fn record(&mut self, window: &Window, sent: Instant, done: Instant) {
        if done >= window.warm_end && done <= window.end {
            let us = done.duration_since(sent).as_micros();
            self.latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
        }
    }
}

/// Merges client results into the scenario's JSON line.
pub fn report(
    scenario: &str,
    conns: usize,
    duration: f64,
    results: Vec<ClientResult>,
    setup: Duration,
) -> serde_json::Value {
    let mut h = common::histogram();
    let (mut timeouts, mut stale, mut errors) = (0, 0, Vec::new());
    for r in &results {
        for &us in &r.latencies {
            h.saturating_record(u64::from(us.max(1)));
        }
        timeouts += r.timeouts;
        stale += r.stale;
        if let Some(e) = &r.error {
            errors.push(e.clone());
        }
    }
    let lat = common::summarize(&h);
    let rate = lat.count as f64 / duration;
    errors.sort();
    errors.dedup();
    json!({
        "scenario": scenario,
        "conns": conns,
        "clients_ok": results.iter().filter(|r| r.error.is_none()).count(),
        "duration_s": duration,
        "setup_ms": common::millis(setup),
        "rate": rate.round(),
        "latency": lat,
        "timeouts": timeouts,
        "stale": stale,
        "errors": errors.into_iter().take(5).collect::<Vec<_>>(),
    })
}

pub async fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let setup_start = Instant::now();
    let limit = Arc::new(Semaphore::new(args.connect_concurrency));
    let (ready_tx, mut ready_rx) = mpsc::channel::<bool>(args.conns);
    let (window_tx, window_rx) = watch::channel(None::<Window>);
    // Clients report when their loop is over and close only when released, so that
    // `--exec-after` sees the measured phase and nothing of the closing.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(args.conns);
    let (release_tx, release_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(args.conns);
    for client in 0..args.conns {
        let url = args.url.clone();
        let limit = limit.clone();
        let ready = ready_tx.clone();
        let mut window = window_rx.clone();
        let (done, mut release) = (done_tx.clone(), release_rx.clone());
        let size = args.size;
        let count = args.round_trips.map(|n| {
            let conns = args.conns as u64;
            n / conns + u64::from((client as u64) < n % conns)
        });
        tasks.push(tokio::spawn(async move {
            let mut ws = match common::connect_limited(&url, &limit, Duration::from_secs(30)).await
            {
                Ok(ws) => {
                    let _ = ready.send(true).await;
                    ws
                }
                Err(e) => {
                    let _ = ready.send(false).await;
                    return ClientResult {
                        error: Some(format!("{e:#}")),
                        ..Default::default()
                    };
                }
            };
            let Ok(w) = window.wait_for(Option::is_some).await.map(|w| w.unwrap()) else {
                return ClientResult::default();
            };
            let result = closed_loop(&mut ws, client, size, w, count).await;
            let _ = done.send(()).await;
            let _ = release.wait_for(|r| *r).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
            result
        }));
    }
    drop(ready_tx);
    drop(done_tx);
    // Every client reports once, connected or not; the senders live on in the tasks.
    let mut connected = 0;
    for _ in 0..args.conns {
        match ready_rx.recv().await {
            Some(ok) => connected += usize::from(ok),
            None => break,
        }
    }
    let setup = setup_start.elapsed();
    if connected == 0 {
        anyhow::bail!("no client could connect to {}", args.url);
    }
    common::hook(args.exec_before.as_deref()).await?;
    let now = Instant::now();
    let warmup = if args.round_trips.is_some() {
        0.0
    } else {
        args.warmup
    };
    let warm_end = now + Duration::from_secs_f64(warmup);
    window_tx.send_replace(Some(Window {
        warm_end,
        end: warm_end + Duration::from_secs_f64(args.duration),
    }));
    // Each connected client reports once (one that failed to connect never got this far).
    for _ in 0..connected {
        if done_rx.recv().await.is_none() {
            break;
        }
    }
    let measured = now.elapsed().as_secs_f64() - warmup;
    common::hook(args.exec_after.as_deref()).await?;
    release_tx.send_replace(true);
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        results.push(t.await?);
    }
    // With a fixed count the window is however long the round trips took.
    let duration = if args.round_trips.is_some() {
        (measured * 1000.0).round() / 1000.0
    } else {
        args.duration
    };
    let mut out = report("ws", args.conns, duration, results, setup);
    if let Some(n) = args.round_trips {
        out["round_trips_asked"] = n.into();
    }
    Ok(out)
}

async fn closed_loop(
    ws: &mut Ws,
    client: usize,
    size: usize,
    w: Window,
    count: Option<u64>,
) -> ClientResult {
    let mut result = ClientResult::default();
    let mut seq = 0u64;
    while Instant::now() < w.end && count.is_none_or(|n| seq < n) {
        seq += 1;
        let text = common::payload(client, seq, size);
        let sent = Instant::now();
        if let Err(e) = ws.send(Message::text(text.clone())).await {
            result.error = Some(format!("send: {e}"));
            return result;
        }
        let wait = async {
            loop {
                match common::next_text(ws).await {
                    Ok(Some(t)) if t == text => return Ok(()),
                    Ok(Some(_)) => result.stale += 1,
                    Ok(None) => return Err("connection closed".to_owned()),
                    Err(e) => return Err(format!("read: {e}")),
                }
            }
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, wait).await {
            Ok(Ok(())) => result.record(&w, sent, Instant::now()),
            Ok(Err(e)) => {
                result.error = Some(e);
                return result;
            }
            Err(_) => result.timeouts += 1,
        }
    }
    result
}
