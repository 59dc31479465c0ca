//! One subscription connection, whichever mode: it subscribes (SUBSCRIBE on a server,
//! SSUBSCRIBE in a cluster) and yields messages and the server's own unsubscriptions. On one
//! server the connection is the gateway's own ([`super::direct`]); in a cluster it is
//! redis-rs's.
//!
//! The stream ends with an error when the connection is gone, when the sentinels name a new
//! master (a subscription on a demoted master hears nothing the services publish), and in a
//! cluster when a node's connection drops: the client would re-subscribe by itself, but a
//! subscription it believes restored may be held by no node, so the owner starts again from a
//! fresh connection. When a slot moves, the cluster unsubscribes its channels itself
//! ([`Push::Unsubscribed`]); the owner subscribes again, and the cluster connection routes the
//! SSUBSCRIBE to the new owner.

use std::time::Duration;

use bytes::Bytes;
use redis::cluster_async::ClusterConnection;
use redis::{Msg, PushInfo, PushKind};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

use crate::redis::direct::Conn;
pub use crate::redis::direct::Message;
use crate::redis::error::RedisError;

pub struct Subscription {
    inner: Inner,
    timeout: Duration,
    /// Sentinel mode: the master's generation; a change ends the subscription.
    master: Option<watch::Receiver<u64>>,
}

enum Inner {
    Direct(Conn),
    Cluster(ClusterConnection, mpsc::UnboundedReceiver<PushInfo>),
}

/// What a subscription is asked to do.
#[derive(Debug, Clone, Copy)]
enum Op {
    Subscribe,
    Unsubscribe,
    PSubscribe,
    PUnsubscribe,
}

impl Op {
    fn command(self) -> &'static str {
        match self {
            Op::Subscribe => "SUBSCRIBE",
            Op::Unsubscribe => "UNSUBSCRIBE",
            Op::PSubscribe => "PSUBSCRIBE",
            Op::PUnsubscribe => "PUNSUBSCRIBE",
        }
    }

    /// For a timeout's message.
    fn doing(self) -> &'static str {
        match self {
            Op::Subscribe | Op::PSubscribe => "subscribing",
            Op::Unsubscribe | Op::PUnsubscribe => "unsubscribing",
        }
    }
}

/// What a subscription hears.
pub enum Push {
    Message(Message),
    /// The server unsubscribed this channel on its own (its slot moved to another node).
    Unsubscribed(String),
}

impl Subscription {
    pub(super) fn direct(
        conn: Conn,
        master: Option<watch::Receiver<u64>>,
        timeout: Duration,
    ) -> Self {
        let inner = Inner::Direct(conn);
        Self {
            inner,
            timeout,
            master,
        }
    }

    pub(super) fn cluster(
        conn: ClusterConnection,
        pushes: mpsc::UnboundedReceiver<PushInfo>,
        timeout: Duration,
    ) -> Self {
        Self {
            inner: Inner::Cluster(conn, pushes),
            timeout,
            master: None,
        }
    }

    /// Subscribes to one channel, within the command timeout.
    pub async fn subscribe(&mut self, channel: &str) -> Result<(), RedisError> {
        self.run(Op::Subscribe, channel).await
    }

    pub async fn unsubscribe(&mut self, channel: &str) -> Result<(), RedisError> {
        self.run(Op::Unsubscribe, channel).await
    }

    /// Pattern subscriptions exist only outside a cluster (sharded pub/sub has none).
    pub async fn psubscribe(&mut self, pattern: &str) -> Result<(), RedisError> {
        self.run(Op::PSubscribe, pattern).await
    }

    pub async fn punsubscribe(&mut self, pattern: &str) -> Result<(), RedisError> {
        self.run(Op::PUnsubscribe, pattern).await
    }

    /// One (un)subscription, confirmed within the command timeout. In a cluster a channel is
    /// (un)subscribed with its sharded command.
    async fn run(&mut self, op: Op, name: &str) -> Result<(), RedisError> {
        let t = self.timeout;
        let done = match (&mut self.inner, op) {
            (Inner::Direct(c), _) => timeout(t, c.command(op.command(), name)).await,
            (Inner::Cluster(c, _), Op::Subscribe) => timeout(t, lib(c.ssubscribe(name))).await,
            (Inner::Cluster(c, _), Op::Unsubscribe) => timeout(t, lib(c.sunsubscribe(name))).await,
            (Inner::Cluster(..), _) => return Err(RedisError::Unsupported(op.command())),
        };
        done.map_err(|_| RedisError::Timeout(op.doing()))?
    }

    /// The next message or server-side unsubscription; an error once the subscription is over.
    /// Cancel-safe.
    pub async fn next(&mut self) -> Result<Push, RedisError> {
        loop {
            let master = async {
                match &mut self.master {
                    Some(m) => m.changed().await,
                    None => std::future::pending().await,
                }
            };
            let heard = tokio::select! {
                _ = master => return Err(RedisError::MasterChanged),
                heard = next_push(&mut self.inner) => heard?,
            };
            if let Some(push) = heard {
                return Ok(push);
            }
        }
    }
}

async fn lib<F: Future<Output = redis::RedisResult<()>>>(f: F) -> Result<(), RedisError> {
    Ok(f.await?)
}

/// One item from the connection: `None` for pushes that are not news (confirmations).
async fn next_push(inner: &mut Inner) -> Result<Option<Push>, RedisError> {
    match inner {
        Inner::Direct(c) => c.next().await.map(|m| Some(Push::Message(m))),
        Inner::Cluster(_, rx) => rx.recv().await.ok_or(RedisError::Closed).and_then(classify),
    }
}

fn message(m: &Msg) -> Message {
    Message {
        channel: Bytes::copy_from_slice(m.get_channel_name().as_bytes()),
        payload: Bytes::copy_from_slice(m.get_payload_bytes()),
    }
}

fn classify(push: PushInfo) -> Result<Option<Push>, RedisError> {
    match push.kind {
        PushKind::SMessage | PushKind::Message => {
            Ok(Msg::from_push_info(push).map(|m| Push::Message(message(&m))))
        }
        PushKind::SUnsubscribe => {
            let channel = push.data.first().and_then(|v| match v {
                redis::Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
                _ => None,
            });
            Ok(channel.map(Push::Unsubscribed))
        }
        PushKind::Disconnection => Err(RedisError::Closed),
        _ => Ok(None),
    }
}
