//! Publishing to Redis: a few shard workers, each owning one connection and sending whatever has
//! queued up as pipelines ([`Redis::publish_batch`]: PUBLISH, or SPUBLISH per slot in a cluster).
//!
//! A connection's events always go to the same shard, and a shard sends in queue order, so each
//! connection's events reach each channel in order (connect, messages, disconnect) while the
//! node as a whole never waits one round trip per message.
//!
//! While Redis is unreachable a shard does not stall its queue: batches are counted as lost
//! (`redis_unavailable`) until the capped backoff lets the next attempt through.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::RedisSettings;
use crate::log::LogLimiter;
use crate::metrics::{Loss, Metrics, RouteMetrics};
use crate::prism::EventKind;
use crate::redis::client::{Conn, Redis, RedisError, discard};
use crate::worker::Workers;

/// What a publish is for, so its fate is counted in the right place.
#[derive(Clone, Debug)]
pub enum Tag {
    /// A route's event: counted in that route's series.
    Event {
        route: Arc<RouteMetrics>,
        kind: EventKind,
    },
    NotConnected,
    /// A Channels publish: a client push, a presence diff, a lifecycle note, the clock.
    Channel,
}

#[derive(Debug)]
pub struct Publish {
    pub channel: Arc<str>,
    pub payload: Bytes,
    pub tag: Tag,
    /// Told whether Redis took the publish (for Channels' `ack_pushes`).
    pub ack: Option<tokio::sync::oneshot::Sender<bool>>,
}

impl Publish {
    pub fn new(channel: impl Into<Arc<str>>, payload: impl Into<Bytes>, tag: Tag) -> Self {
        Self {
            channel: channel.into(),
            payload: payload.into(),
            tag,
            ack: None,
        }
    }
}

#[derive(Clone)]
pub struct Publisher {
    shards: Arc<[mpsc::Sender<Publish>]>,
    metrics: Arc<Metrics>,
    /// Bumped when Redis is proven reachable again; a shard backing off gives up its backoff
    /// when this changes, so events right after a recovery are not dropped.
    recoveries: Arc<AtomicU64>,
}

/// Largest pipeline one shard sends at once.
const BATCH: usize = 512;

impl Publisher {
    /// Starts one worker per shard. Unlike other workers they outlive the connections: once
    /// `workers` is told to stop (after every client has closed and queued its `disconnect`),
    /// they finish what is queued, then exit.
    pub fn start(
        settings: &RedisSettings,
        redis: Arc<Redis>,
        metrics: Arc<Metrics>,
        workers: &Workers,
    ) -> Self {
        let log = Arc::new(LogLimiter::new(Duration::from_secs(5)));
        let recoveries = Arc::new(AtomicU64::new(0));
        let shards = (0..settings.publishers)
            .map(|_| {
                let (tx, rx) = mpsc::channel(settings.publish_queue);
                workers.spawn(
                    "publisher",
                    worker(
                        rx,
                        redis.clone(),
                        metrics.clone(),
                        workers.drain_token(),
                        log.clone(),
                        recoveries.clone(),
                    ),
                );
                tx
            })
            .collect();
        Self {
            shards,
            metrics,
            recoveries,
        }
    }

    /// Tells the shards that Redis works again (the canary came back).
    pub fn redis_recovered(&self) {
        self.recoveries.fetch_add(1, Relaxed);
    }

    /// How many times Redis has been proven reachable again; a change means it came back.
    /// Events waiting in every shard's queue.
    pub fn queued(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.max_capacity() - s.capacity())
            .sum()
    }

    pub fn recoveries(&self) -> u64 {
        self.recoveries.load(Relaxed)
    }

    /// A shard for a new connection; all its events use it.
    pub fn pick_shard(&self) -> usize {
        rand::random_range(0..self.shards.len())
    }

    /// Queues a publish, waiting while the shard's queue is full (backpressure on the client
    /// that produced it). Counted as lost if the node is shutting down.
    pub async fn publish(&self, shard: usize, p: Publish) {
        let p = match self.shards[shard].try_send(p) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(p)) => p,
            Err(mpsc::error::TrySendError::Closed(p)) => {
                return count_lost(&self.metrics, &p, Loss::Shutdown);
            }
        };
        // The queue is full: wait for room. Boxed because this is the rare path, and every
        // session future would otherwise carry room for it.
        if let Err(mpsc::error::SendError(p)) = Box::pin(self.shards[shard].send(p)).await {
            count_lost(&self.metrics, &p, Loss::Shutdown);
        }
    }

    /// Queues a publish without waiting, for callers that must never block (the Redis reader).
    pub fn try_publish(&self, shard: usize, p: Publish) {
        if let Err(e) = self.shards[shard].try_send(p) {
            let p = match e {
                mpsc::error::TrySendError::Full(p) => p,
                mpsc::error::TrySendError::Closed(p) => p,
            };
            count_lost(&self.metrics, &p, Loss::RedisUnavailable);
        }
    }
}

/// Counts one publish that did not happen, and tells whoever waits for it.
fn count_lost(metrics: &Metrics, p: &Publish, reason: Loss) {
    match &p.tag {
        Tag::Event { route, .. } => route.lost(reason, 1),
        Tag::NotConnected => {
            metrics.other_lost.inc();
        }
        Tag::Channel => {
            metrics.channels.publishes_lost.inc();
        }
    }
}

fn acknowledge(p: &mut Publish, ok: bool) {
    if let Some(ack) = p.ack.take() {
        let _ = ack.send(ok);
    }
}

/// Counts a sent batch; `receivers[i]` is how many subscribers PUBLISH `i` reached. An event
/// nobody heard is counted as lost, so that published + lost always equals what clients sent.
fn count_published(metrics: &Metrics, batch: &mut [Publish], receivers: &[i64]) {
    for (p, &heard) in batch.iter_mut().zip(receivers) {
        acknowledge(p, true);
        match &p.tag {
            Tag::Channel => {
                metrics.channels.publishes.inc();
            }
            Tag::Event { route, .. } if heard == 0 => {
                route.lost(Loss::NoSubscriber, 1);
            }
            Tag::Event { route, kind } => route.published(*kind, 1),
            Tag::NotConnected => {
                metrics.notconnected_sent.inc();
            }
        }
    }
}

async fn worker(
    mut rx: mpsc::Receiver<Publish>,
    redis: Arc<Redis>,
    metrics: Arc<Metrics>,
    drain: CancellationToken,
    log: Arc<LogLimiter>,
    recoveries: Arc<AtomicU64>,
) {
    let mut conn: Option<Conn> = None;
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    // While backing off: until when, and the recovery count when the backoff began.
    let mut down_until: Option<(Instant, u64)> = None;
    let mut batch = Vec::with_capacity(BATCH);
    let mut draining = false;
    loop {
        batch.clear();
        tokio::select! {
            _ = drain.cancelled(), if !draining => {
                // Refuse new work, then finish what is queued.
                rx.close();
                draining = true;
                continue;
            }
            n = rx.recv_many(&mut batch, BATCH) => if n == 0 { return },
        }
        if down_until
            .is_some_and(|(t, epoch)| Instant::now() < t && recoveries.load(Relaxed) == epoch)
        {
            lose_batch(&metrics, &mut batch);
            continue;
        }
        // A recovery announced while this attempt is under way must still release the backoff
        // that its failure begins: the epoch is the one it started in.
        let epoch = recoveries.load(Relaxed);
        match send(&mut conn, &redis, &batch).await {
            Ok(receivers) => {
                metrics.publish_batches.inc();
                count_published(&metrics, &mut batch, &receivers);
                backoff.reset();
                down_until = None;
            }
            Err(e) => {
                discard(&mut conn);
                lose_batch(&metrics, &mut batch);
                down_until = Some((Instant::now() + backoff.next_delay(), epoch));
                if log.allow() {
                    tracing::warn!(error = %e, lost = batch.len(), "publishing to Redis failed");
                }
            }
        }
    }
}

fn lose_batch(metrics: &Metrics, batch: &mut [Publish]) {
    for p in batch {
        acknowledge(p, false);
        count_lost(metrics, p, Loss::RedisUnavailable);
    }
}

async fn send(
    conn: &mut Option<Conn>,
    redis: &Redis,
    batch: &[Publish],
) -> Result<Vec<i64>, RedisError> {
    let items: Vec<(&str, &[u8])> = batch
        .iter()
        .map(|p| (&*p.channel, p.payload.as_ref()))
        .collect();
    redis.publish_batch(conn, &items).await
}
