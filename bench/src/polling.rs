//! HTTP polling: N idle connections on a route whose legacy HTTP service is polled every
//! interval; a minimal keep-alive HTTP server in this process counts the polls.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::common;

#[derive(clap::Args)]
pub struct Args {
    /// The route to connect to, e.g. ws://127.0.0.1:8080/poll.
    #[arg(long)]
    url: String,
    /// Port this process serves the legacy HTTP service on (the gateway's config points at it).
    #[arg(long)]
    service_port: u16,
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    /// The route's polling_interval, in seconds (for the expected rate).
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The gateway's pid, for its CPU share.
    #[arg(long)]
    gateway_pid: Option<u32>,
}

/// Answers every POST with 204, counting the polls (message events).
async fn serve(listener: TcpListener, polls: Arc<AtomicU64>) {
    while let Ok((mut s, _)) = listener.accept().await {
        let polls = polls.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(4096);
            let mut chunk = [0u8; 4096];
            loop {
                // One request: headers, then Content-Length bytes of body.
                let (head_end, len) = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (i + 4, len);
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                while buf.len() < head_end + len {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = &buf[head_end..head_end + len];
                const POLL: &[u8] = b"\"type\":\"message\"";
                if body.windows(POLL.len()).any(|w| w == POLL) {
                    polls.fetch_add(1, Ordering::Relaxed);
                }
                buf.drain(..head_end + len);
                if s.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}

pub async fn run(a: Args) -> anyhow::Result<Value> {
    let polls = Arc::new(AtomicU64::new(0));
    let listener = TcpListener::bind(("127.0.0.1", a.service_port)).await?;
    tokio::spawn(serve(listener, polls.clone()));
    let limit = Arc::new(Semaphore::new(200));
    let mut held = Vec::with_capacity(a.conns);
    for _ in 0..a.conns {
        held.push(common::connect_limited(&a.url, &limit, Duration::from_secs(30)).await?);
    }
    // Let the polls spread over a couple of intervals before counting.
    tokio::time::sleep(Duration::from_secs_f64(a.interval * 2.0)).await;
    let pid = a.gateway_pid.map(|p| p.to_string());
    let cpu0 = pid.as_deref().and_then(common::cpu_seconds);
    let n0 = polls.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    let wall = t0.elapsed().as_secs_f64();
    let n = polls.load(Ordering::Relaxed) - n0;
    let cpu1 = pid.as_deref().and_then(common::cpu_seconds);
    let achieved = n as f64 / wall;
    let configured = a.conns as f64 / a.interval;
    drop(held);
    Ok(json!({
        "scenario": "polling",
        "conns": a.conns,
        "configured_polls_per_s": configured,
        "achieved_polls_per_s": (achieved * 10.0).round() / 10.0,
        "ratio": (achieved / configured * 1000.0).round() / 1000.0,
        "gateway_cpu_share": cpu0.zip(cpu1).map(|(x, y)| ((y - x) / wall * 1000.0).round() / 1000.0),
    }))
}
