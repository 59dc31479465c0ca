//! Fan-out, the stand-in until Channels exist: a broadcaster learns every connection's id from
//! the route's connect events, then for one "publish" pipelines one reply per id into Redis as
//! fast as it can. Measured: from the first PUBLISH leaving to the last client holding its frame.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{self, EventIn, ReplyOut};

#[derive(clap::Args)]
pub struct Args {
    /// The route every client joins.
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 10_000)]
    conns: usize,
    #[arg(long, default_value = "redis://127.0.0.1:6380")]
    redis: String,
    /// The route's request channel, where connect events (and so the ids) appear.
    #[arg(long, default_value = "fan.in")]
    channel: String,
    /// The `service` name in replies; it must be on the route.
    #[arg(long, default_value = "fan")]
    service: String,
    /// Broadcasts measured, one after another.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Bytes of text per frame.
    #[arg(long, default_value_t = 64)]
    size: usize,
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
}

/// What the clients saw of one broadcast.
#[derive(Default)]
struct Round {
    delivered: AtomicUsize,
    /// Latest arrival, in nanoseconds since the run's base instant.
    last_ns: AtomicU64,
    all: Notify,
}

pub async fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let base = Instant::now();
    let path = args
        .url
        .split_once("://")
        .and_then(|(_, r)| r.find('/').map(|i| r[i..].to_owned()))
        .unwrap_or_else(|| "/".into());
    let client = redis::Client::open(args.redis.as_str())?;
    let mut events = common::subscribe(&client, &args.channel).await?;
    let (ids_tx, mut ids_rx) = mpsc::unbounded_channel::<(String, String)>();
    tokio::spawn(async move {
        while let Some(msg) = events.next().await {
            let Ok(e) = serde_json::from_slice::<EventIn<'_>>(msg.get_payload_bytes()) else {
                continue;
            };
            if e.kind == "connect" && e.route.as_deref() == Some(path.as_str()) {
                let rc = e.response_channel.unwrap_or_default().into_owned();
                if ids_tx.send((e.id.into_owned(), rc)).is_err() {
                    return;
                }
            }
        }
    });

    let rounds: Arc<Vec<Round>> = Arc::new((0..args.rounds).map(|_| Round::default()).collect());
    let limit = Arc::new(Semaphore::new(args.connect_concurrency));
    let (ready_tx, mut ready_rx) = mpsc::channel::<bool>(1024);
    let want = args.conns;
    for _ in 0..args.conns {
        let (url, limit, ready, rounds) = (
            args.url.clone(),
            limit.clone(),
            ready_tx.clone(),
            rounds.clone(),
        );
        tokio::spawn(async move {
            let Ok(mut ws) = common::connect_limited(&url, &limit, Duration::from_secs(30)).await
            else {
                let _ = ready.send(false).await;
                return;
            };
            let _ = ready.send(true).await;
            drop(ready);
            while let Some(Ok(frame)) = ws.next().await {
                let Message::Text(text) = frame else { continue };
                let at = base.elapsed().as_nanos() as u64;
                // Frames are "<round>:..."; anything else is not ours.
                let Some(round) = text
                    .as_str()
                    .split(':')
                    .next()
                    .and_then(|r| r.parse::<usize>().ok())
                    .and_then(|r| rounds.get(r))
                else {
                    continue;
                };
                round.last_ns.fetch_max(at, Relaxed);
                if round.delivered.fetch_add(1, Relaxed) + 1 == want {
                    round.all.notify_one();
                }
            }
        });
    }
    drop(ready_tx);
    let connect_start = Instant::now();
    let mut connected = 0;
    while let Some(ok) = ready_rx.recv().await {
        connected += usize::from(ok);
    }
    let connect_ms = common::millis(connect_start.elapsed());
    // Every connected client's id, from its connect event.
    let mut targets = Vec::with_capacity(connected);
    let learn = async {
        while targets.len() < connected {
            match ids_rx.recv().await {
                Some(t) => targets.push(t),
                None => break,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), learn).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut publisher = client.get_multiplexed_async_connection().await?;
    let mut results = Vec::new();
    for (r, round) in rounds.iter().enumerate() {
        // Encoding is the broadcaster's business, done before the clock starts.
        let text = common::payload(r, 0, args.size);
        let mut pipe = redis::pipe();
        for (id, channel) in &targets {
            let reply = serde_json::to_vec(&ReplyOut {
                id,
                service: &args.service,
                message: &text,
                binary: false,
            })?;
            pipe.publish(channel, reply).ignore();
        }
        let t0 = base.elapsed();
        let sent = pipe.query_async::<()>(&mut publisher);
        let redis_done = async {
            sent.await?;
            anyhow::Ok(base.elapsed())
        };
        let all = async {
            if round.delivered.load(Relaxed) < want {
                let _ = tokio::time::timeout(Duration::from_secs(10), round.all.notified()).await;
            }
        };
        let (redis_done, ()) = tokio::join!(redis_done, all);
        let redis_done = redis_done?;
        let delivered = round.delivered.load(Relaxed);
        let last = Duration::from_nanos(round.last_ns.load(Relaxed));
        let span = last.saturating_sub(t0);
        results.push(json!({
            "round": r,
            "delivered": delivered,
            "publish_to_last_ms": common::millis(span),
            "redis_pipeline_ms": common::millis(redis_done.saturating_sub(t0)),
            "frames_per_s": (delivered as f64 / span.as_secs_f64().max(1e-9)).round(),
        }));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut spans: Vec<f64> = results
        .iter()
        .filter_map(|r| r["publish_to_last_ms"].as_f64())
        .collect();
    spans.sort_by(f64::total_cmp);
    let median_ms = spans.get(spans.len() / 2).copied();
    Ok(json!({
        "scenario": "fanout",
        "note": "Channels stand-in: one PUBLISH per connection id, pipelined, not one PUBLISH per topic",
        "conns": args.conns,
        "connected": connected,
        "ids_learned": targets.len(),
        "connect_ms": connect_ms,
        "rounds": results,
        "median_publish_to_last_ms": median_ms,
        "median_frames_per_s": median_ms.map(|ms| (targets.len() as f64 / (ms / 1e3)).round()),
        "best_publish_to_last_ms": spans.first(),
    }))
}
