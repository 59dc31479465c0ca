//! Topic membership on this node, and fan-out: one message from `to:<topic>:<event>` becomes a
//! frame for every local member of the topic, encoded once per distinct `join_ref` and shared.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use hyper_tungstenite::tungstenite::Message;

use crate::ids::ConnectionId;
use crate::metrics::{ChannelDrop, Metrics};
use crate::phoenix::{self, Topic};
use crate::ws::queue::{Control, Refused};

/// One socket's membership of one topic.
#[derive(Clone)]
pub struct Member {
    pub conn: ConnectionId,
    pub join_ref: Arc<str>,
    pub control: Arc<Control>,
    /// The presence key (the token's `id`).
    pub key: Arc<str>,
    /// The presence meta, as JSON.
    pub meta: Arc<str>,
}

pub struct Hub {
    /// Each topic's members by connection: a leave is one removal, so 10,000 members leaving
    /// together cost 10,000 removals, not 10,000 scans of the list.
    topics: DashMap<Topic, HashMap<ConnectionId, Member>>,
    metrics: Arc<Metrics>,
}

impl Hub {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            topics: DashMap::new(),
            metrics,
        }
    }

    /// Adds a member; true when it is the topic's first on this node (subscribe to it).
    pub fn join(&self, topic: &Topic, member: Member) -> bool {
        let mut members = self.topics.entry(topic.clone()).or_default();
        if members.insert(member.conn.clone(), member).is_none() {
            self.metrics.channels.joined.inc();
        }
        members.len() == 1
    }

    /// Removes `conn`'s membership; true when the topic has no local member left (unsubscribe).
    pub fn leave(&self, topic: &Topic, conn: &ConnectionId) -> bool {
        let Some(mut members) = self.topics.get_mut(topic) else {
            return false;
        };
        if members.remove(conn).is_some() {
            self.metrics.channels.joined.dec();
        }
        let empty = members.is_empty();
        drop(members);
        empty
            && self
                .topics
                .remove_if(topic.as_str(), |_, m| m.is_empty())
                .is_some()
    }

    /// Topics with local members, for re-subscribing after a reconnect.
    pub fn topics(&self) -> Vec<Topic> {
        self.topics.iter().map(|e| e.key().clone()).collect()
    }

    pub fn has_topic(&self, topic: &str) -> bool {
        self.topics.contains_key(topic)
    }

    /// Every topic with its number of local members (no member is copied).
    pub fn topic_sizes(&self) -> Vec<(String, usize)> {
        let sizes = self
            .topics
            .iter()
            .map(|e| (e.key().to_string(), e.value().len()));
        sizes.collect()
    }

    /// Every topic's local members, for re-writing presence after Redis recovers.
    pub fn snapshot(&self) -> Vec<(Topic, Vec<Member>)> {
        self.topics
            .iter()
            .map(|e| (e.key().clone(), e.value().values().cloned().collect()))
            .collect()
    }

    /// Delivers one message from Redis to every local member of `topic`. JSON payloads go out as
    /// text frames with the payload inserted; other bytes as binary pushes; empty ones nowhere.
    pub fn deliver(&self, topic: &str, event: &str, payload: &[u8]) {
        self.metrics.channels.messages_in.inc();
        // Looked up by name: what Redis delivers is a channel name, not yet a topic.
        let Some(members) = self.topics.get(topic) else {
            return;
        };
        if payload.is_empty() {
            self.metrics.channels.dropped(ChannelDrop::EmptyPayload);
            return;
        }
        let json = phoenix::is_json(payload)
            .then(|| std::str::from_utf8(payload).ok())
            .flatten();
        // Encoded once per distinct join_ref; the bytes are shared by reference count.
        let mut frames: HashMap<&str, Option<Message>> = HashMap::new();
        for m in members.values() {
            let frame = frames.entry(&m.join_ref).or_insert_with(|| match json {
                Some(text) => Some(Message::text(phoenix::push(
                    Some(&m.join_ref),
                    topic,
                    event,
                    text,
                ))),
                None => phoenix::binary_push(&m.join_ref, topic, event, payload)
                    .map(|b| Message::Binary(Bytes::from(b))),
            });
            let Some(frame) = frame else {
                self.metrics.channels.dropped(ChannelDrop::NameTooLong);
                continue;
            };
            match m.control.push(frame.clone()) {
                Ok(()) => {
                    self.metrics.channels.frames_out.inc();
                }
                Err(Refused::Full) => self.metrics.channels.dropped(ChannelDrop::SlowClient),
                Err(Refused::Closed) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(conn: &ConnectionId, join_ref: &str) -> Member {
        Member {
            conn: conn.clone(),
            join_ref: join_ref.into(),
            control: Arc::new(Control::new(16, 1 << 16)),
            key: "k".into(),
            meta: "{}".into(),
        }
    }

    #[test]
    fn membership_is_one_entry_per_connection() {
        let metrics = Arc::new(Metrics::new());
        let hub = Hub::new(metrics.clone());
        let topic = Topic::new("room").unwrap();
        let conns: Vec<ConnectionId> = (0..10_000).map(|_| ConnectionId::random()).collect();
        for (i, c) in conns.iter().enumerate() {
            assert_eq!(
                hub.join(&topic, member(c, "1")),
                i == 0,
                "first member only"
            );
        }
        // A rejoin replaces the connection's membership; it does not add one.
        assert!(!hub.join(&topic, member(&conns[0], "2")));
        assert_eq!(metrics.channels.joined.get(), 10_000);
        assert_eq!(hub.topic_sizes(), vec![("room".to_string(), 10_000)]);
        // Everyone leaves: only the last leave empties the topic.
        for (i, c) in conns.iter().enumerate() {
            assert_eq!(hub.leave(&topic, c), i == conns.len() - 1);
        }
        assert_eq!(metrics.channels.joined.get(), 0);
        assert!(!hub.has_topic("room"));
        assert!(!hub.leave(&topic, &conns[0]), "a second leave is a no-op");
    }
}
