//! The node's subscription to its response channel, and the canary that proves it works.
//!
//! The node is ready only after a canary it published to its own response channel has come back
//! through the live subscription. A canary that does not return in time (a subscription that
//! looks connected but delivers nothing) makes the node not-ready and re-subscribe. Reconnects
//! use capped exponential backoff with jitter.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::PubSubStream;
use tokio::time::{Instant, sleep_until};

use crate::Gateway;
use crate::backoff::Backoff;
use crate::log::LogLimiter;
use crate::prism::{self, Inbound};

/// Why one subscription ended.
enum End {
    Shutdown,
    Lost(String),
}

pub async fn run(gw: Arc<Gateway>) {
    let client = match redis::Client::open(gw.settings.redis.url.as_str()) {
        Ok(c) => c,
        Err(e) => {
            // The URL was validated at start-up; this cannot happen, but never panic a worker.
            tracing::error!(error = %e, "invalid Redis URL; the node stays not-ready");
            return;
        }
    };
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let log = LogLimiter::new(Duration::from_secs(1));
    loop {
        let end = match subscribe(&client, &gw).await {
            Ok(stream) => {
                gw.metrics.subscriber_connects.inc();
                tracing::info!(channel = %gw.response_channel, "subscribed to the response channel");
                serve(&gw, stream, &mut backoff, &log).await
            }
            Err(e) => End::Lost(e),
        };
        match end {
            End::Shutdown => return,
            End::Lost(why) => {
                gw.set_ready(false);
                let delay = backoff.next_delay();
                tracing::warn!(error = %why, retry_in = ?delay, "response-channel subscription lost");
                tokio::select! {
                    _ = gw.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

async fn subscribe(client: &redis::Client, gw: &Gateway) -> Result<PubSubStream, String> {
    let timeout = gw.settings.redis.command_timeout;
    let attempt = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&*gw.response_channel).await?;
        Ok::<_, redis::RedisError>(pubsub.into_on_message())
    };
    tokio::select! {
        _ = gw.shutdown.cancelled() => Err("shutting down".into()),
        r = tokio::time::timeout(timeout, attempt) => match r {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out subscribing".into()),
        }
    }
}

/// Reads the subscription until it fails, its canary goes missing, or shutdown.
async fn serve(
    gw: &Arc<Gateway>,
    mut stream: PubSubStream,
    backoff: &mut Backoff,
    log: &LogLimiter,
) -> End {
    let redis = &gw.settings.redis;
    let mut seq: u64 = 0;
    // The canary in flight: its number and when it is overdue.
    let mut pending: Option<(u64, Instant)> = None;
    let mut next_send = Instant::now();
    loop {
        let wake = pending.map_or(next_send, |(_, due)| due);
        tokio::select! {
            biased;
            _ = gw.shutdown.cancelled() => return End::Shutdown,
            msg = stream.next() => {
                let Some(msg) = msg else {
                    return End::Lost("connection closed".into());
                };
                match prism::decode_inbound(msg.get_payload_bytes(), redis.max_reply_size) {
                    Ok(Inbound::Canary(n)) if pending.is_some_and(|(p, _)| p == n) => {
                        pending = None;
                        next_send = Instant::now() + redis.canary_interval;
                        gw.set_ready(true);
                        backoff.reset();
                    }
                    // A late or foreign canary proves nothing about the current one.
                    Ok(Inbound::Canary(_)) => {}
                    Ok(Inbound::Reply(reply)) => crate::relay::deliver(gw, log, reply),
                    Err(e) => crate::relay::bad_reply(gw, log, e),
                }
            }
            _ = sleep_until(wake) => {
                if pending.is_some() {
                    gw.metrics.canary_failures.inc();
                    return End::Lost("canary did not come back through the subscription".into());
                }
                seq += 1;
                pending = Some((seq, Instant::now() + redis.canary_timeout));
                send_canary(gw, seq);
            }
        }
    }
}

/// Publishes a canary without blocking the reader; if it cannot be sent, it simply never
/// arrives and the deadline does the rest.
fn send_canary(gw: &Arc<Gateway>, seq: u64) {
    let gw = gw.clone();
    tokio::spawn(async move {
        let timeout = gw.settings.redis.command_timeout;
        let publish = async {
            let mut conn = gw.publisher.pool().get().await.map_err(|e| e.to_string())?;
            redis::cmd("PUBLISH")
                .arg(&*gw.response_channel)
                .arg(prism::encode_canary(seq))
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(timeout, publish).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "canary publish failed"),
            Err(_) => tracing::debug!("canary publish timed out"),
        }
    });
}
