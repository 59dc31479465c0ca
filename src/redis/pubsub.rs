//! One subscription connection, whichever mode: the sink subscribes (SUBSCRIBE on a server,
//! SSUBSCRIBE in a cluster), the stream yields messages and the server's own unsubscriptions.
//!
//! The stream ends with an error when the connection is gone, when the sentinels name a new
//! master (a subscription on a demoted master hears nothing the services publish), and in a
//! cluster when a node's connection drops: the client would re-subscribe by itself, but a
//! subscription it believes restored may be held by no node, so the owner starts again from a
//! fresh connection. When a slot moves, the cluster unsubscribes its channels itself
//! ([`Push::Unsubscribed`]); the owner subscribes again, and the cluster connection routes the
//! SSUBSCRIBE to the new owner.

use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use redis::cluster_async::ClusterConnection;
use redis::{Msg, PushInfo, PushKind};
use tokio::sync::{mpsc, watch};

use crate::redis::error::RedisError;

pub enum SubSink {
    Server(PubSubSink, Duration),
    Cluster(ClusterConnection, Duration),
}

pub struct SubStream {
    inner: Inner,
    /// Sentinel mode: the master's generation; a change ends the stream.
    master: Option<watch::Receiver<u64>>,
}

enum Inner {
    Server(PubSubStream),
    Cluster(mpsc::UnboundedReceiver<PushInfo>),
}

/// What a subscription hears.
pub enum Push {
    Message(Msg),
    /// The server unsubscribed this channel on its own (its slot moved to another node).
    Unsubscribed(String),
}

pub(super) fn server(
    pubsub: redis::aio::PubSub,
    master: Option<watch::Receiver<u64>>,
    timeout: Duration,
) -> (SubSink, SubStream) {
    let (sink, stream) = pubsub.split();
    let stream = SubStream {
        inner: Inner::Server(stream),
        master,
    };
    (SubSink::Server(sink, timeout), stream)
}

pub(super) fn cluster(
    conn: ClusterConnection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
    timeout: Duration,
) -> (SubSink, SubStream) {
    let stream = SubStream {
        inner: Inner::Cluster(pushes),
        master: None,
    };
    (SubSink::Cluster(conn, timeout), stream)
}

impl SubSink {
    /// Subscribes to one channel, within the command timeout.
    pub async fn subscribe(&mut self, channel: &str) -> Result<(), RedisError> {
        let done = match self {
            Self::Server(s, t) => bounded(*t, s.subscribe(channel)).await,
            Self::Cluster(c, t) => bounded(*t, c.ssubscribe(channel)).await,
        };
        done.map_err(|_| RedisError::Timeout("subscribing"))?
    }

    pub async fn unsubscribe(&mut self, channel: &str) -> Result<(), RedisError> {
        let done = match self {
            Self::Server(s, t) => bounded(*t, s.unsubscribe(channel)).await,
            Self::Cluster(c, t) => bounded(*t, c.sunsubscribe(channel)).await,
        };
        done.map_err(|_| RedisError::Timeout("unsubscribing"))?
    }

    /// Pattern subscriptions exist only outside a cluster (sharded pub/sub has none).
    pub async fn psubscribe(&mut self, pattern: &str) -> Result<(), RedisError> {
        match self {
            Self::Server(s, t) => bounded(*t, s.psubscribe(pattern))
                .await
                .map_err(|_| RedisError::Timeout("subscribing"))?,
            Self::Cluster(..) => Err(RedisError::Unsupported("PSUBSCRIBE")),
        }
    }

    pub async fn punsubscribe(&mut self, pattern: &str) -> Result<(), RedisError> {
        match self {
            Self::Server(s, t) => bounded(*t, s.punsubscribe(pattern))
                .await
                .map_err(|_| RedisError::Timeout("unsubscribing"))?,
            Self::Cluster(..) => Err(RedisError::Unsupported("PUNSUBSCRIBE")),
        }
    }
}

async fn bounded<F: Future<Output = redis::RedisResult<()>>>(
    timeout: Duration,
    f: F,
) -> Result<Result<(), RedisError>, tokio::time::error::Elapsed> {
    tokio::time::timeout(timeout, f)
        .await
        .map(|r| r.map_err(RedisError::from))
}

impl SubStream {
    /// The next message or server-side unsubscription; an error once the subscription is over.
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

/// One item from the connection: `None` for pushes that are not news (confirmations).
async fn next_push(inner: &mut Inner) -> Result<Option<Push>, RedisError> {
    match inner {
        Inner::Server(s) => s
            .next()
            .await
            .map(|m| Some(Push::Message(m)))
            .ok_or(RedisError::Closed),
        Inner::Cluster(rx) => rx.recv().await.ok_or(RedisError::Closed).and_then(classify),
    }
}

fn classify(push: PushInfo) -> Result<Option<Push>, RedisError> {
    match push.kind {
        PushKind::SMessage | PushKind::Message => Ok(Msg::from_push_info(push).map(Push::Message)),
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
