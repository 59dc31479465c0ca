//! The node's subscription to its response channel, and the canary that proves it works.
//!
//! The node is ready only after a canary it published to its own response channel has come back
//! through the live subscription. A canary that does not return in time (a subscription that
//! looks connected but delivers nothing) makes the node not-ready and re-subscribe. Reconnects
//! use capped exponential backoff with jitter.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::{Instant, sleep_until};

use crate::Gateway;
use crate::backoff::Backoff;
use crate::log::LogLimiter;
use crate::metrics::Resubscribe;
use crate::prism::{self, Inbound};
use crate::redis::client::RedisError;
use crate::redis::pubsub::{Push, Subscription};
use crate::worker::Part;

/// Why one subscription ended.
enum End {
    Shutdown,
    Lost(RedisError),
    /// The subscription looks connected but delivers nothing.
    CanaryMissing,
}

pub async fn run(gw: Arc<Gateway>) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let log = LogLimiter::new(Duration::from_secs(1));
    // Until the first subscription, a failure is "cannot subscribe", not "lost".
    let mut subscribed_once = false;
    loop {
        let end = match subscribe(&gw).await {
            Ok(sub) => {
                subscribed_once = true;
                gw.metrics.subscriber_connects.inc();
                tracing::info!(channel = %gw.response_channel, "subscribed to the response channel");
                serve(&gw, sub, &mut backoff, &log).await
            }
            Err(end) => end,
        };
        let (why, reason) = match end {
            End::Shutdown => return,
            End::Lost(RedisError::MasterChanged) => (
                "the sentinels named a new master".into(),
                Resubscribe::MasterChanged,
            ),
            End::Lost(e) => (e.to_string(), Resubscribe::ConnectionLost),
            End::CanaryMissing => (
                "canary did not come back through the subscription".into(),
                Resubscribe::CanaryMissing,
            ),
        };
        gw.metrics.resubscribed(reason);
        gw.set_ready(Part::ResponseChannel, false);
        let delay = backoff.next_delay();
        if subscribed_once {
            tracing::warn!(error = %why, retry_in = ?delay, "response-channel subscription lost");
        } else {
            let redis = crate::redis::client::describe(&gw.settings.redis);
            tracing::warn!(error = %why, %redis, retry_in = ?delay, "cannot subscribe to the response channel yet");
        }
        tokio::select! {
            _ = gw.shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

async fn subscribe(gw: &Gateway) -> Result<Subscription, End> {
    let attempt = async {
        let mut sub = gw.redis.subscription().await?;
        sub.subscribe(&gw.response_channel).await?;
        Ok(sub)
    };
    tokio::select! {
        _ = gw.shutdown.cancelled() => Err(End::Shutdown),
        r = attempt => r.map_err(End::Lost),
    }
}

/// Reads the subscription until it fails, its canary goes missing, or shutdown.
async fn serve(
    gw: &Arc<Gateway>,
    mut sub: Subscription,
    backoff: &mut Backoff,
    log: &LogLimiter,
) -> End {
    let redis = &gw.settings.redis;
    let mut seq: u64 = 0;
    // The canary in flight: its number and when it is overdue; and its publish, run here
    // rather than on a task of its own, so that it never blocks the reader and ends with it.
    let mut pending: Option<(u64, Instant)> = None;
    let mut sending: Option<BoxFuture<'static, ()>> = None;
    let mut next_send = Instant::now();
    loop {
        let wake = pending.map_or(next_send, |(_, due)| due);
        tokio::select! {
            biased;
            _ = gw.shutdown.cancelled() => return End::Shutdown,
            heard = sub.next() => {
                let msg = match heard {
                    Err(e) => return End::Lost(e),
                    Ok(Push::Message(msg)) => msg,
                    Ok(Push::Unsubscribed(channel)) if *channel == *gw.response_channel => {
                        // The channel's slot moved: subscribe again (the cluster connection
                        // routes it to the new owner) and prove it with a canary at once; not
                        // ready until it comes back.
                        gw.metrics.resubscribed(Resubscribe::SlotMoved);
                        gw.set_ready(Part::ResponseChannel, false);
                        tracing::warn!(channel = %gw.response_channel, "the response channel's slot moved; subscribing again");
                        if let Err(e) = sub.subscribe(&gw.response_channel).await {
                            return End::Lost(e);
                        }
                        pending = None;
                        next_send = Instant::now();
                        continue;
                    }
                    Ok(Push::Unsubscribed(_)) => continue,
                };
                match prism::decode_inbound(&msg.payload, redis.max_reply_size) {
                    Ok(Inbound::Canary(n)) if pending.is_some_and(|(p, _)| p == n) => {
                        if let Some((_, due)) = pending {
                            let sent = due - redis.canary_timeout;
                            gw.metrics.canary_round_trip.set(sent.elapsed().as_secs_f64());
                        }
                        pending = None;
                        next_send = Instant::now() + redis.canary_interval;
                        gw.set_ready(Part::ResponseChannel, true);
                        backoff.reset();
                    }
                    // A late or foreign canary proves nothing about the current one.
                    Ok(Inbound::Canary(_)) => {}
                    Ok(Inbound::Reply(reply)) => crate::routes::relay::deliver(gw, log, reply),
                    Err(e) => crate::routes::relay::bad_reply(gw, log, e),
                }
            }
            _ = sleep_until(wake) => {
                if pending.is_some() {
                    gw.metrics.canary_failures.inc();
                    return End::CanaryMissing;
                }
                seq += 1;
                pending = Some((seq, Instant::now() + redis.canary_timeout));
                sending = Some(Box::pin(send_canary(gw.clone(), seq)));
            }
            () = until_sent(&mut sending), if sending.is_some() => sending = None,
        }
    }
}

async fn until_sent(sending: &mut Option<BoxFuture<'static, ()>>) {
    if let Some(f) = sending {
        f.await;
    }
}

/// Publishes a canary; if it cannot be sent, it simply never arrives and the deadline does the
/// rest.
async fn send_canary(gw: Arc<Gateway>, seq: u64) {
    let mut cmd = redis::cmd(gw.redis.publish_command());
    cmd.arg(&*gw.response_channel)
        .arg(prism::encode_canary(seq));
    if let Err(e) = gw.redis.query::<()>(&cmd).await {
        tracing::debug!(error = %e, "canary publish failed");
    }
}
