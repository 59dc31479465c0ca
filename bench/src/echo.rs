//! The echo service: SUBSCRIBE the request channel(s) and answer each `message` event with
//! `{"id","service","message"}` on its `responseChannel`. `connect` and `disconnect` are ignored.
//! With `--cluster` it is a sharded service of a Redis Cluster instead: SSUBSCRIBE and SPUBLISH,
//! as services of a gateway in `mode = "cluster"` are.
//!
//! Replies are queued to a publisher task that sends whatever has accumulated as one pipeline
//! on a multiplexed connection, several pipelines in flight, so the service is never the
//! bottleneck of a closed loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use futures_util::StreamExt;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{Msg, PushInfo, PushKind};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};

use crate::common::{EventIn, ReplyOut};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "redis://127.0.0.1:6380")]
    redis: String,
    /// Serve a Redis Cluster found from this seed (repeatable) instead of `--redis`: SSUBSCRIBE
    /// the request channels, SPUBLISH the replies, each pipeline to the node owning its slot.
    #[arg(long = "cluster", value_name = "SEED")]
    cluster: Vec<String>,
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

/// Where requests come from.
enum Requests {
    Server(redis::aio::PubSubStream),
    /// The sharded messages pushed by the cluster connection, which is kept here: dropping it
    /// would end the subscriptions.
    Cluster {
        pushes: mpsc::UnboundedReceiver<PushInfo>,
        _subscriber: ClusterConnection,
    },
}

impl Requests {
    async fn next(&mut self) -> Option<Msg> {
        match self {
            Self::Server(stream) => stream.next().await,
            Self::Cluster { pushes, .. } => loop {
                let push = pushes.recv().await?;
                match push.kind {
                    PushKind::SMessage => return Msg::from_push_info(push),
                    // A node's connection dropped: the subscription may be gone, and a bench
                    // run that silently stops echoing would only show up as timeouts.
                    PushKind::Disconnection => return None,
                    _ => {}
                }
            },
        }
    }
}

/// Where replies go: PUBLISH on the server, or SPUBLISH to the node owning each channel.
#[derive(Clone)]
enum Replies {
    Server(redis::aio::MultiplexedConnection),
    Cluster(ClusterConnection),
}

async fn connect(args: &Args) -> anyhow::Result<(Requests, Replies)> {
    if args.cluster.is_empty() {
        let client = redis::Client::open(args.redis.as_str())?;
        let mut pubsub = client.get_async_pubsub().await?;
        for channel in &args.channels {
            pubsub.subscribe(channel).await?;
        }
        let conn = client.get_multiplexed_async_connection().await?;
        return Ok((
            Requests::Server(pubsub.into_on_message()),
            Replies::Server(conn),
        ));
    }
    // Sharded messages arrive as RESP3 pushes. The queue is unbounded because the client must
    // not block its connection; the load generators keep it short (one request in flight per
    // virtual client).
    let (tx, rx) = mpsc::unbounded_channel();
    let mut subscriber = ClusterClientBuilder::new(args.cluster.clone())
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(tx)
        .build()?
        .get_async_connection()
        .await?;
    for channel in &args.channels {
        subscriber.ssubscribe(channel).await?;
    }
    let publisher = ClusterClientBuilder::new(args.cluster.clone())
        .build()?
        .get_async_connection()
        .await?;
    let requests = Requests::Cluster {
        pushes: rx,
        _subscriber: subscriber,
    };
    Ok((requests, Replies::Cluster(publisher)))
}

pub async fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let (mut requests, replies) = connect(&args).await?;
    let counts = Arc::new(Counts::default());
    let (tx, rx) = mpsc::channel::<(String, Vec<u8>)>(1 << 16);
    let publisher = tokio::spawn(publish(rx, replies, counts.clone()));
    let how = if args.cluster.is_empty() {
        "SUBSCRIBE"
    } else {
        "SSUBSCRIBE"
    };
    eprintln!(
        "echo: serving {:?} ({how}) as {:?}",
        args.channels, args.service
    );

    let serve = async {
        while let Some(msg) = requests.next().await {
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

async fn publish(mut rx: mpsc::Receiver<(String, Vec<u8>)>, replies: Replies, counts: Arc<Counts>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        for pipe in pipelines(&mut batch, &replies) {
            let n = pipe.len() as u64;
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let mut replies = replies.clone();
            let counts = counts.clone();
            tokio::spawn(async move {
                let sent = match &mut replies {
                    Replies::Server(conn) => pipe.query_async::<()>(conn).await,
                    Replies::Cluster(conn) => pipe.query_async::<()>(conn).await,
                };
                match sent {
                    Ok(()) => counts.echoed.fetch_add(n, Relaxed),
                    Err(_) => counts.publish_errors.fetch_add(n, Relaxed),
                };
                drop(slot);
            });
        }
    }
}

/// The batch as pipelines: one of PUBLISH, or one of SPUBLISH per slot (a cluster pipeline goes
/// to the node of its first key, and the others would answer MOVED).
fn pipelines(batch: &mut Vec<(String, Vec<u8>)>, replies: &Replies) -> Vec<redis::Pipeline> {
    if let Replies::Server(_) = replies {
        let mut pipe = redis::pipe();
        for (channel, reply) in batch.drain(..) {
            pipe.publish(channel, reply).ignore();
        }
        return vec![pipe];
    }
    let mut by_slot: HashMap<Slot, redis::Pipeline> = HashMap::new();
    for (channel, reply) in batch.drain(..) {
        let pipe = by_slot.entry(Slot::for_key(&channel)).or_default();
        pipe.cmd("SPUBLISH").arg(channel).arg(reply).ignore();
    }
    by_slot.into_values().collect()
}

/// SIGTERM or SIGINT: the driver is done with us.
pub async fn terminated() {
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
