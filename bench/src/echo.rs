//! The echo service: SUBSCRIBE the request channel(s) and answer each `message` event with
//! `{"id","service","message"}` on its `responseChannel`. `connect` and `disconnect` are ignored.
//!
//! Replies are queued to a publisher task that sends whatever has accumulated as one pipeline
//! on a multiplexed connection, several pipelines in flight, so the service is never the
//! bottleneck of a closed loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};

use crate::common::{EventIn, ReplyOut};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "redis://127.0.0.1:6380")]
    redis: String,
    /// Request channels to serve (repeatable).
    #[arg(long = "channel", required = true)]
    channels: Vec<String>,
    /// The `service` name put in replies; the gateway checks it is on the client's route.
    #[arg(long, default_value = "echo")]
    service: String,
    /// Exit after this long whatever happens, so a crashed driver leaves nothing running.
    #[arg(long, default_value_t = 900)]
    max_seconds: u64,
}

/// Largest pipeline sent at once, and pipelines in flight at once.
const BATCH: usize = 1024;
const IN_FLIGHT: usize = 16;

#[derive(Default)]
struct Counts {
    received: AtomicU64,
    echoed: AtomicU64,
    ignored: AtomicU64,
    bad: AtomicU64,
    publish_errors: AtomicU64,
}

pub async fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let client = redis::Client::open(args.redis.as_str())?;
    let mut pubsub = client.get_async_pubsub().await?;
    for channel in &args.channels {
        pubsub.subscribe(channel).await?;
    }
    let mut stream = pubsub.into_on_message();
    let conn = client.get_multiplexed_async_connection().await?;
    let counts = Arc::new(Counts::default());
    let (tx, rx) = mpsc::channel::<(String, Vec<u8>)>(1 << 16);
    let publisher = tokio::spawn(publish(rx, conn, counts.clone()));
    eprintln!("echo: serving {:?} as {:?}", args.channels, args.service);

    let serve = async {
        while let Some(msg) = stream.next().await {
            counts.received.fetch_add(1, Relaxed);
            let Ok(event) = serde_json::from_slice::<EventIn<'_>>(msg.get_payload_bytes()) else {
                counts.bad.fetch_add(1, Relaxed);
                continue;
            };
            let (Some(message), Some(channel), "message") = (
                event.message.as_deref(),
                event.response_channel.as_deref(),
                event.kind.as_ref(),
            ) else {
                counts.ignored.fetch_add(1, Relaxed);
                continue;
            };
            let reply = serde_json::to_vec(&ReplyOut {
                id: &event.id,
                service: &args.service,
                message,
                binary: event.binary,
            })?;
            if tx.send((channel.to_owned(), reply)).await.is_err() {
                break;
            }
        }
        anyhow::Ok(())
    };
    tokio::select! {
        r = serve => r?,
        _ = tokio::time::sleep(Duration::from_secs(args.max_seconds)) => {}
        _ = terminated() => {}
    }
    publisher.abort();
    Ok(json!({
        "scenario": "echo",
        "received": counts.received.load(Relaxed),
        "echoed": counts.echoed.load(Relaxed),
        "ignored": counts.ignored.load(Relaxed),
        "bad": counts.bad.load(Relaxed),
        "publish_errors": counts.publish_errors.load(Relaxed),
    }))
}

async fn publish(
    mut rx: mpsc::Receiver<(String, Vec<u8>)>,
    conn: redis::aio::MultiplexedConnection,
    counts: Arc<Counts>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut pipe = redis::pipe();
        for (channel, reply) in batch.drain(..) {
            pipe.publish(channel, reply).ignore();
        }
        let n = pipe.len() as u64;
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut conn = conn.clone();
        let counts = counts.clone();
        tokio::spawn(async move {
            match pipe.query_async::<()>(&mut conn).await {
                Ok(()) => counts.echoed.fetch_add(n, Relaxed),
                Err(_) => counts.publish_errors.fetch_add(n, Relaxed),
            };
            drop(slot);
        });
    }
}

/// SIGTERM or SIGINT: the driver is done with us.
async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        }
        _ => std::future::pending().await,
    }
}
