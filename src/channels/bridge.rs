//! The node's one pub/sub connection for Channels: `PSUBSCRIBE to:<topic>:*` for every topic
//! with a local member, messages handed to the hub, and everything re-subscribed after a
//! reconnect.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use crate::Gateway;
use crate::backoff::Backoff;
use crate::channels::hub::Hub;
use crate::phoenix::{self, Topic};

pub enum Cmd {
    /// Subscribe to a topic; told whether Redis confirmed it.
    Subscribe(Topic, oneshot::Sender<bool>),
    Unsubscribe(Topic),
}

fn pattern(topic: &Topic) -> String {
    format!("to:{topic}:*")
}

pub async fn run(gw: Arc<Gateway>, hub: Arc<Hub>, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let connected = tokio::select! {
            _ = gw.shutdown.cancelled() => return,
            c = gw.redis.pubsub() => c,
        };
        let pubsub = match connected {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "Channels bridge cannot connect to Redis");
                if !wait_or_refuse(&gw, &mut cmds, backoff.next_delay()).await {
                    return;
                }
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        let mut healthy = true;
        for topic in hub.topics() {
            if sink.psubscribe(pattern(&topic)).await.is_err() {
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
                        let ok = sink.psubscribe(pattern(&topic)).await.is_ok();
                        let _ = done.send(ok);
                        healthy = ok;
                    }
                    // Only if nobody joined again meanwhile.
                    Some(Cmd::Unsubscribe(topic)) if !hub.has_topic(&topic) => {
                        healthy = sink.punsubscribe(pattern(&topic)).await.is_ok();
                    }
                    Some(Cmd::Unsubscribe(_)) => {}
                },
                msg = stream.next() => match msg {
                    None => healthy = false,
                    Some(msg) => {
                        if let Some((topic, event)) = phoenix::split_channel(msg.get_channel_name().as_bytes()) {
                            hub.deliver(topic, event, msg.get_payload_bytes());
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
