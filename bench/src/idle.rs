//! Many idle connections on one route: how fast they are all accepted and announced to the
//! services, what they cost the gateway in resident memory, and whether a round trip still works
//! (on a fresh connection and on held ones) while they are held.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{self, EventIn, Ws};

#[derive(clap::Args)]
pub struct Args {
    /// The route to hold connections on.
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 15_000)]
    conns: usize,
    /// The gateway's process id, for its RSS from /proc (optional).
    #[arg(long)]
    gateway_pid: Option<u32>,
    /// Redis and the route's request channel: connect events are counted there (optional).
    #[arg(long)]
    redis: Option<String>,
    #[arg(long, default_value = "echo.in")]
    channel: String,
    /// Prometheus endpoint of the gateway, host:port/path, to read its own count (optional).
    #[arg(long)]
    metrics: Option<String>,
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Seconds to let the gateway settle before reading its memory.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Round trips on a fresh connection, and held connections probed, while all are held.
    #[arg(long, default_value_t = 100)]
    probes: usize,
}

pub async fn run(args: Args, nofile: u64) -> anyhow::Result<serde_json::Value> {
    let path = url_path(&args.url);
    // Count connect events for this route as the services see them.
    let (announced_tx, announced_rx) = watch::channel((0usize, None::<Instant>));
    if let Some(redis) = &args.redis {
        let client = redis::Client::open(redis.as_str())?;
        let mut events = common::subscribe(&client, &args.channel).await?;
        let want = args.conns;
        let path = path.clone();
        tokio::spawn(async move {
            let mut seen = HashSet::with_capacity(want);
            while let Some(msg) = events.next().await {
                let Ok(e) = serde_json::from_slice::<EventIn<'_>>(msg.get_payload_bytes()) else {
                    continue;
                };
                if e.kind == "connect" && e.route.as_deref() == Some(path.as_str()) {
                    seen.insert(e.id.into_owned());
                    let done = (seen.len() >= want).then(Instant::now);
                    announced_tx.send_replace((seen.len(), done));
                }
            }
        });
    }
    let before = args.gateway_pid.map(common::rss).transpose()?;

    let start = Instant::now();
    let limit = Arc::new(Semaphore::new(args.connect_concurrency));
    let (done_tx, mut done_rx) = mpsc::channel::<anyhow::Result<Ws>>(1024);
    for _ in 0..args.conns {
        let (url, limit, done) = (args.url.clone(), limit.clone(), done_tx.clone());
        tokio::spawn(async move {
            let r = common::connect_limited(&url, &limit, Duration::from_secs(30)).await;
            let _ = done.send(r).await;
        });
    }
    drop(done_tx);
    let mut held = Vec::with_capacity(args.conns);
    let mut errors = Vec::new();
    while let Some(r) = done_rx.recv().await {
        match r {
            Ok(ws) => held.push(ws),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    let accepted_in = start.elapsed();

    let mut announced = announced_rx.clone();
    let announced_in = if args.redis.is_some() {
        let wait = announced.wait_for(|(_, done)| done.is_some());
        match tokio::time::timeout(Duration::from_secs(30), wait).await {
            Ok(Ok(r)) => r.1.map(|t| t.duration_since(start)),
            _ => None,
        }
    } else {
        None
    };
    let announced_count = announced_rx.borrow().0;

    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let after = args.gateway_pid.map(common::rss).transpose()?;
    let gateway_connections = match &args.metrics {
        Some(m) => scrape(m, "refract_connections{").await.ok(),
        None => None,
    };

    // While everything is held: round trips on a fresh connection...
    let mut fresh = common::histogram();
    let mut fresh_ok = 0;
    if let Ok(mut ws) = common::connect(&args.url).await {
        for i in 0..args.probes {
            let text = common::payload(usize::MAX, i as u64, 64);
            let sent = Instant::now();
            if round_trip(&mut ws, &text).await {
                fresh_ok += 1;
                fresh.saturating_record(sent.elapsed().as_micros() as u64);
            }
        }
    }
    // ...and on held ones, spread over the whole set.
    let mut held_ok = 0;
    let step = (held.len() / args.probes.max(1)).max(1);
    let mut probed = 0;
    for (i, ws) in held.iter_mut().enumerate().step_by(step).take(args.probes) {
        probed += 1;
        held_ok += usize::from(round_trip(ws, &common::payload(i, 0, 64)).await);
    }

    let per_conn = |f: fn(&common::Rss) -> u64| match (before, after, held.len()) {
        (Some(b), Some(a), n) if n > 0 => {
            let bytes = (f(&a) as f64 - f(&b) as f64) * 1024.0 / n as f64;
            Some(bytes.round())
        }
        _ => None,
    };
    let out = json!({
        "scenario": "idle",
        "conns": args.conns,
        "held": held.len(),
        "connect_errors": errors.len(),
        "first_errors": errors.iter().take(3).collect::<Vec<_>>(),
        "accepted_ms": common::millis(accepted_in),
        "announced": announced_count,
        "announced_ms": announced_in.map(common::millis),
        "gateway_rss_before": before,
        "gateway_rss_after": after,
        "rss_bytes_per_conn": per_conn(|r| r.vm_rss_kib),
        "anon_bytes_per_conn": per_conn(|r| r.rss_anon_kib),
        "gateway_connections_metric": gateway_connections,
        "fresh_round_trips": fresh_ok,
        "fresh_latency": common::summarize(&fresh),
        "held_probed": probed,
        "held_round_trips": held_ok,
        "loadgen_nofile": nofile,
    });
    // Close abruptly; the gateway is stopped by the driver.
    drop(held);
    Ok(out)
}

async fn round_trip(ws: &mut Ws, text: &str) -> bool {
    if ws.send(Message::text(text.to_owned())).await.is_err() {
        return false;
    }
    let wait = async {
        loop {
            match common::next_text(ws).await {
                Ok(Some(t)) if t == text => return true,
                Ok(Some(_)) => {}
                _ => return false,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .unwrap_or(false)
}

fn url_path(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/')
        .map_or("/".to_owned(), |i| rest[i..].to_owned())
}

/// Sums the samples of one metric family from a Prometheus text endpoint.
pub async fn scrape(endpoint: &str, prefix: &str) -> anyhow::Result<f64> {
    let (host, path) = endpoint
        .split_once('/')
        .map_or((endpoint, "metrics"), |(h, p)| (h, p));
    let mut stream = tokio::net::TcpStream::connect(host).await?;
    let request = format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut body)).await??;
    Ok(body
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}
