//! The node's one pub/sub connection for Channels: for every topic with a local member,
//! `PSUBSCRIBE to:<topic>:*` (or, in a cluster, `SSUBSCRIBE to:{<topic>}`: [`phoenix::names`]),
//! messages handed to the hub, and everything re-subscribed after a reconnect or a slot move.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::Gateway;
use crate::backoff::Backoff;
use crate::channels::hub::Hub;
use crate::phoenix::{Topic, names};
use crate::redis::pubsub::{Push, Subscription};

pub enum Cmd {
    /// Subscribe to a topic; told whether Redis confirmed it.
    Subscribe(Topic, oneshot::Sender<bool>),
    Unsubscribe(Topic),
}

/// Subscribes to a topic's messages: a pattern, or (sharded) the topic's one channel.
async fn subscribe(sink: &mut Subscription, topic: &str, sharded: bool) -> bool {
    let name = names::subscription(topic, sharded);
    let done = if sharded {
        sink.subscribe(&name).await
    } else {
        sink.psubscribe(&name).await
    };
    done.is_ok()
}

async fn unsubscribe(sink: &mut Subscription, topic: &str, sharded: bool) -> bool {
    let name = names::subscription(topic, sharded);
    let done = if sharded {
        sink.unsubscribe(&name).await
    } else {
        sink.punsubscribe(&name).await
    };
    done.is_ok()
}

pub async fn run(gw: Arc<Gateway>, hub: Arc<Hub>, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let sharded = gw.redis.sharded();
    loop {
        let connected = tokio::select! {
            _ = gw.shutdown.cancelled() => return,
            c = gw.redis.subscription() => c,
        };
        let mut sub = match connected {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "Channels bridge cannot connect to Redis");
                if !wait_or_refuse(&gw, &mut cmds, backoff.next_delay()).await {
                    return;
                }
                continue;
            }
        };
        let mut healthy = true;
        for topic in hub.topics() {
            if !subscribe(&mut sub, topic.as_str(), sharded).await {
                healthy = false;
                break;
            }
        }
        if healthy {
            backoff.reset();
            tracing::info!(topics = hub.topics().len(), "Channels bridge subscribed");
        }
        while healthy {
            tokio::select! {
                _ = gw.shutdown.cancelled() => return,
                cmd = cmds.recv() => match cmd {
                    None => return,
                    Some(Cmd::Subscribe(topic, done)) => {
                        let ok = subscribe(&mut sub, topic.as_str(), sharded).await;
                        let _ = done.send(ok);
                        healthy = ok;
                    }
                    // Only if nobody joined again meanwhile.
                    Some(Cmd::Unsubscribe(topic)) if !hub.has_topic(topic.as_str()) => {
                        healthy = unsubscribe(&mut sub, topic.as_str(), sharded).await;
                    }
                    Some(Cmd::Unsubscribe(_)) => {}
                },
                heard = sub.next() => match heard {
                    Err(_) => healthy = false,
                    Ok(Push::Message(msg)) => {
                        let split = msg.channel().and_then(|c| names::split(c, &msg.payload, sharded));
                        if let Some((topic, event, payload)) = split {
                            hub.deliver(topic, event, payload);
                        }
                    }
                    // A topic's slot moved: subscribe again if it still has members here.
                    Ok(Push::Unsubscribed(channel)) => {
                        let topic = names::sharded_topic(&channel);
                        if let Some(topic) = topic.filter(|t| hub.has_topic(t)) {
                            gw.metrics.resubscribed(crate::metrics::Resubscribe::SlotMoved);
                            healthy = subscribe(&mut sub, topic, sharded).await;
                        }
                    }
                },
            }
        }
        tracing::warn!("Channels bridge lost its Redis subscription; reconnecting");
        if !wait_or_refuse(&gw, &mut cmds, backoff.next_delay()).await {
            return;
        }
    }
}

/// Sleeps before a reconnect attempt, answering subscribe requests with "no" meanwhile (Redis
/// is down: joins fail with `unavailable`). False on shutdown.
async fn wait_or_refuse(
    gw: &Gateway,
    cmds: &mut mpsc::UnboundedReceiver<Cmd>,
    delay: Duration,
) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = gw.shutdown.cancelled() => return false,
            _ = &mut sleep => return true,
            cmd = cmds.recv() => match cmd {
                None => return false,
                Some(Cmd::Subscribe(_, done)) => { let _ = done.send(false); }
                Some(Cmd::Unsubscribe(_)) => {}
            },
        }
    }
}
