//! One Phoenix socket, as a [`Handler`] of the ws driver: heartbeats, joins and leaves, client
//! pushes to `from:<topic>:<event>`, and token expiry per membership. The hub queues fan-out
//! frames for it.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use hyper_tungstenite::HyperWebsocket;
use hyper_tungstenite::tungstenite::Message;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::Gateway;
use crate::auth::Claims;
use crate::channels::endpoint::Channels;
use crate::channels::hub::Member;
use crate::channels::presence::{self, phx_ref};
use crate::error::{Close, PhxError};
use crate::http::limits::ConnectionSlot;
use crate::ids::ConnectionId;
use crate::metrics::{ChannelDrop, JoinResult};
use crate::phoenix::{self, InFrame, Topic, names};
use crate::redis::publisher::{Publish, Tag};
use crate::ws::driver::{self, Data, Handler};
use crate::ws::queue::Control;

/// Bad frames tolerated before the socket is closed with 1007.
const MAX_BAD_FRAMES: u32 = 10;

/// What the upgrade decided about the socket.
pub struct Admitted {
    pub slot: ConnectionSlot,
    /// The socket-level credential (`token`/`userToken` or the phoenix subprotocol), verified.
    pub credential: Option<Claims>,
}

struct Joined {
    join_ref: Arc<str>,
    key: Arc<str>,
    meta: Arc<str>,
    /// When this membership's token expires.
    expires: Option<Instant>,
}

struct Socket {
    gw: Arc<Gateway>,
    ch: Arc<Channels>,
    conn: ConnectionId,
    control: Arc<Control>,
    joined: HashMap<Topic, Joined>,
    credential: Option<Claims>,
    bad_frames: u32,
    shard: usize,
    _slot: ConnectionSlot,
}

pub async fn run(gw: Arc<Gateway>, ch: Arc<Channels>, upgrade: HyperWebsocket, admitted: Admitted) {
    let ws = match upgrade.await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(error = %e, "Channels upgrade did not complete");
            return;
        }
    };
    let socket = Socket::new(gw.clone(), ch, admitted);
    let span = tracing::debug_span!("socket", conn.id = %socket.conn);
    // A task of its own, as a route session is: it does not carry the upgrade's state.
    gw.tasks
        .spawn(tracing::Instrument::instrument(socket.serve(ws), span));
}

impl Socket {
    fn new(gw: Arc<Gateway>, ch: Arc<Channels>, admitted: Admitted) -> Self {
        Self {
            shard: gw.publisher.pick_shard(),
            conn: ConnectionId::random(),
            // Fan-out frames are shared between sockets, so the queue is bounded in frames only.
            control: Arc::new(Control::new(ch.settings.outbound_queue, usize::MAX)),
            gw,
            ch,
            joined: HashMap::new(),
            credential: admitted.credential,
            bad_frames: 0,
            _slot: admitted.slot,
        }
    }

    /// The socket's whole life once it is open.
    // Not an `async fn`, so its arguments are held once, not twice (see the route session).
    #[allow(clippy::manual_async_fn)]
    fn serve(mut self, mut ws: impl driver::Socket) -> impl Future<Output = ()> + Send {
        async move {
            let gw = self.gw.clone();
            let metrics = &gw.metrics.channels;
            metrics.sockets.inc();
            metrics.sockets_total.inc();
            let control = self.control.clone();
            let ch = self.ch.clone();
            let timing = &ch.timing;
            let reason = driver::drive(&mut ws, &control, &gw.shutdown, timing, &mut self).await;
            control.close();
            let topics: Vec<Topic> = self.joined.keys().cloned().collect();
            for topic in topics {
                Box::pin(self.leave_topic(&topic)).await;
            }
            metrics.sockets.dec();
            metrics.closed(reason);
        }
    }

    /// Counts a bad frame; past the limit, the close to send.
    fn bad_frame(&mut self) -> Option<Close> {
        self.ch.metrics().dropped(ChannelDrop::BadFrame);
        self.bad_frames += 1;
        (self.bad_frames >= MAX_BAD_FRAMES).then_some(Close::TOO_MANY_BAD_FRAMES)
    }

    /// Queues a frame for this socket (a full queue closes it as a slow client).
    fn send(&self, text: String) {
        if self.control.push(Message::text(text)).is_err() {
            self.ch.metrics().dropped(ChannelDrop::SlowClient);
        }
    }

    /// Answers a request on `topic` with an error.
    fn refuse(&self, f: &InFrame<'_>, error: PhxError) {
        let (join_ref, reference) = (f.join_ref.as_deref(), f.reference.as_deref());
        let reply = phoenix::error_reply(join_ref, reference, &f.topic, error.reason());
        self.send(reply);
    }

    /// Refuses a join, counting it.
    fn refuse_join(&self, f: &InFrame<'_>, error: PhxError) {
        self.ch.metrics().join(error.join_result());
        self.refuse(f, error);
    }

    async fn on_frame(&mut self, f: InFrame<'_>) {
        let (topic, event) = (&*f.topic, &*f.event);
        if topic == "phoenix" {
            if event == "heartbeat" {
                self.send(phoenix::reply(
                    None,
                    f.reference.as_deref(),
                    topic,
                    "ok",
                    "{}",
                ));
            }
            return;
        }
        match event {
            // Joins and leaves talk to Redis; their futures are large and rare, so they are
            // boxed rather than making every socket's future hold room for them.
            "phx_join" => Box::pin(self.join(&f)).await,
            "phx_leave" => {
                self.send(phoenix::reply(
                    f.join_ref.as_deref(),
                    f.reference.as_deref(),
                    topic,
                    "ok",
                    "{}",
                ));
                if let Some((topic, _)) = self.joined.get_key_value(topic) {
                    let topic = topic.clone();
                    self.close_channel(&topic);
                    Box::pin(self.leave_topic(&topic)).await;
                }
            }
            // Lifecycle and presence events are the gateway's, never a client's to publish.
            e if e.starts_with("phx_") || e.starts_with("presence_") || e == "heartbeat" => {
                self.ch.metrics().dropped(ChannelDrop::ReservedEvent);
            }
            _ => self.push(&f).await,
        }
    }

    fn close_channel(&self, topic: &Topic) {
        if let Some(j) = self.joined.get(topic) {
            self.send(phoenix::close(&j.join_ref, topic.as_str()));
        }
    }

    async fn join(&mut self, f: &InFrame<'_>) {
        let join_ref = f
            .join_ref
            .as_deref()
            .or(f.reference.as_deref())
            .unwrap_or("");
        let Some(topic) = Topic::new(&f.topic) else {
            return self.refuse_join(f, PhxError::InvalidTopic);
        };
        let claims = match f.payload.str_field("token") {
            Some(token) => self.ch.settings.verifier.verify(&token).ok(),
            None => self.credential.clone(),
        };
        let Some(claims) = claims else {
            return self.refuse_join(f, PhxError::Unauthorized);
        };
        let admin_ok = topic.as_str() != "admin"
            || claims.map.get("admin") == Some(&serde_json::Value::Bool(true));
        if !phoenix::scope_covers(&claims.map, topic.as_str()) || !admin_ok {
            return self.refuse_join(f, PhxError::Forbidden);
        }
        // Joining again replaces the old membership, as Phoenix does.
        if self.joined.contains_key(&topic) {
            self.close_channel(&topic);
            Box::pin(self.leave_topic(&topic)).await;
        }
        if self.joined.len() >= self.ch.settings.max_topics_per_socket {
            return self.refuse_join(f, PhxError::TooManyChannels);
        }
        if !self.gw.is_ready() {
            return self.refuse_join(f, PhxError::Unavailable);
        }
        let key: Arc<str> = claims
            .map
            .get("id")
            .or_else(|| claims.map.get("sub"))
            .and_then(|v| v.as_str())
            .unwrap_or(self.conn.as_str())
            .into();
        // The client's own `meta`, if any, under the gateway's fields (which always win).
        let mut meta = match f.payload.object_field("meta") {
            Some((_, size)) if size > self.ch.settings.presence.max_meta_size => {
                return self.refuse_join(f, PhxError::InvalidMeta);
            }
            Some((extra, _)) => extra,
            None => serde_json::Map::new(),
        };
        let phx_ref = phx_ref(&self.gw, &self.conn, join_ref);
        meta.insert("phx_ref".into(), phx_ref.clone().into());
        meta.insert("node".into(), self.gw.node.as_str().into());
        meta.insert("online_at".into(), (crate::auth::now_secs() * 1000).into());
        let meta: Arc<str> = serde_json::Value::Object(meta).to_string().into();
        let member = Member {
            conn: self.conn.clone(),
            join_ref: join_ref.into(),
            control: self.control.clone(),
            key: key.clone(),
            meta: meta.clone(),
        };
        let subscribed = !self.ch.hub.join(&topic, member) || self.ch.subscribe(&topic).await;
        let tracked = self.ch.settings.presence.enabled;
        let added = match (subscribed, tracked) {
            (true, true) => presence::join(&self.gw, &topic, &phx_ref, &key, &meta, false).await,
            (true, false) => Some(false),
            (false, _) => None,
        };
        let Some(added) = added else {
            if self.ch.hub.leave(&topic, &self.conn) {
                self.ch.unsubscribe(&topic);
            }
            return self.refuse_join(f, PhxError::Unavailable);
        };
        let expires = claims.time_left().map(|left| Instant::now() + left);
        self.joined.insert(
            topic.clone(),
            Joined {
                join_ref: join_ref.into(),
                key: key.clone(),
                meta: meta.clone(),
                expires,
            },
        );
        self.ch.metrics().join(JoinResult::Ok);
        let response = serde_json::json!({ "id": format!("{}:{}:{}", self.conn, topic, join_ref) });
        self.send(phoenix::reply(
            Some(join_ref),
            f.reference.as_deref(),
            topic.as_str(),
            "ok",
            &response.to_string(),
        ));
        // The whole topic, every node's members, after the ok; then everyone hears the join.
        let max = self.ch.settings.presence.max_listed;
        let state = match tracked {
            true => presence::state(&self.gw, &topic, max).await,
            false => None,
        };
        let state = state.unwrap_or_else(|| "{}".into());
        self.send(phoenix::push(
            Some(join_ref),
            topic.as_str(),
            "presence_state",
            &state,
        ));
        if added {
            let diff = presence::diff(&key, &meta, true);
            let sharded = self.gw.redis.sharded();
            let (channel, message) =
                names::to(topic.as_str(), "presence_diff", diff.as_bytes(), sharded);
            let p = Publish::new(channel, message, Tag::Channel);
            self.gw.publisher.publish(self.shard, p).await;
        }
        self.note(&topic, &key, "join").await;
    }

    async fn push(&mut self, f: &InFrame<'_>) {
        let topic = &*f.topic;
        let current = self.joined.get(topic).map(|j| j.join_ref.clone());
        if current.is_none() || f.join_ref.as_deref() != current.as_deref() {
            self.ch.metrics().dropped(ChannelDrop::UnmatchedTopic);
            return self.refuse(f, PhxError::UnmatchedTopic);
        }
        let channel = names::from(topic, &f.event, self.gw.redis.sharded());
        let bytes = Bytes::copy_from_slice(f.payload.bytes());
        let mut p = Publish::new(channel, bytes, Tag::Channel);
        if !self.ch.settings.ack_pushes {
            self.gw.publisher.publish(self.shard, p).await;
            return;
        }
        let (ack, done) = oneshot::channel();
        p.ack = Some(ack);
        self.gw.publisher.publish(self.shard, p).await;
        if done.await.unwrap_or(false) {
            let (jr, r) = (f.join_ref.as_deref(), f.reference.as_deref());
            self.send(phoenix::reply(jr, r, topic, "ok", "{}"));
        } else {
            self.refuse(f, PhxError::Unavailable);
        }
    }

    /// Leaves a joined topic: out of the hub (unsubscribing after the last local member), and
    /// its presence leave published.
    async fn leave_topic(&mut self, topic: &Topic) {
        let Some(j) = self.joined.remove(topic) else {
            return;
        };
        if self.ch.hub.leave(topic, &self.conn) {
            self.ch.unsubscribe(topic);
        }
        let phx_ref = phx_ref(&self.gw, &self.conn, &j.join_ref);
        if self.ch.settings.presence.enabled {
            presence::leave(&self.gw, topic, &phx_ref, &j.key, &j.meta).await;
        }
        self.note(topic, &j.key, "leave").await;
    }

    /// A membership whose token expired gets `phx_error`: the client rejoins with a fresh token.
    async fn expire_tokens(&mut self) {
        let now = Instant::now();
        let expired: Vec<(Topic, Arc<str>)> = self
            .joined
            .iter()
            .filter(|(_, j)| j.expires.is_some_and(|e| e <= now))
            .map(|(t, j)| (t.clone(), j.join_ref.clone()))
            .collect();
        for (topic, join_ref) in expired {
            self.send(phoenix::push(
                Some(&join_ref),
                topic.as_str(),
                "phx_error",
                "{\"reason\":\"token expired\"}",
            ));
            Box::pin(self.leave_topic(&topic)).await;
        }
    }

    /// A lifecycle note for backends, never with a token.
    async fn note(&self, topic: &Topic, key: &str, event: &str) {
        let channel = &self.ch.settings.lifecycle_channel;
        if channel.is_empty() {
            return;
        }
        let payload = serde_json::json!({
            "node": self.gw.node.as_str(), "conn": self.conn.as_str(), "id": key, "topic": topic.as_str(), "event": event,
        });
        let p = Publish::new(channel.as_str(), payload.to_string(), Tag::Channel);
        self.gw.publisher.publish(self.shard, p).await;
    }
}

impl Handler for Socket {
    async fn on_data(&mut self, data: Data<'_>) -> Option<Close> {
        let frame = match data {
            Data::Text(text) => phoenix::decode_text(text),
            Data::Binary(bytes) => phoenix::decode_binary(bytes),
        };
        match frame {
            Ok(f) => {
                self.on_frame(f).await;
                None
            }
            Err(_) => self.bad_frame(),
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.joined.values().filter_map(|j| j.expires).min()
    }

    async fn on_deadline(&mut self) -> Option<Close> {
        self.expire_tokens().await;
        None
    }
}

/// The socket handler driven over in-memory channels, without a network and without Redis: what
/// a socket answers on its own.
#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::worker::Workers;
    use crate::ws::driver::pipe;

    const SECRET: &str = "a-test-secret-of-32-bytes-length";

    /// A socket of a gateway whose Redis nobody answers (port 1): never ready.
    fn start() -> (pipe::Client, tokio::task::JoinHandle<()>, Arc<Gateway>) {
        let toml = format!(
            "[redis]\nurl = \"redis://127.0.0.1:1\"\n[channels]\njwt_secret = \"{SECRET}\"\n"
        );
        let settings = crate::Settings::from_toml(&toml).unwrap();
        let (gw, _) = Gateway::new(settings, Default::default(), &Workers::default()).unwrap();
        let ch = gw.channels.clone().unwrap();
        let slot = ConnectionSlot::reserve(&gw.live, None).unwrap();
        let socket = Socket::new(
            gw.clone(),
            ch,
            Admitted {
                slot,
                credential: None,
            },
        );
        let (ws, client) = pipe::new();
        (client, tokio::spawn(socket.serve(ws)), gw)
    }

    async fn next_json(client: &mut pipe::Client) -> Value {
        match client.next().await {
            Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn heartbeats_are_answered_and_pushes_to_unjoined_topics_refused() {
        let (mut client, task, gw) = start();
        client.text(r#"[null,"1","phoenix","heartbeat",{}]"#);
        let reply = json!([null, "1", "phoenix", "phx_reply", {"status": "ok", "response": {}}]);
        assert_eq!(next_json(&mut client).await, reply);
        client.text(r#"["3","4","room:1","shout",{"body":"hi"}]"#);
        let refused = json!(["3", "4", "room:1", "phx_reply",
            {"status": "error", "response": {"reason": "unmatched topic"}}]);
        assert_eq!(next_json(&mut client).await, refused);
        gw.shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_join_while_redis_is_away_is_refused_as_unavailable() {
        let (mut client, task, gw) = start();
        let mut claims = serde_json::Map::new();
        claims.insert("channel".into(), "room:*".into());
        let ttl = std::time::Duration::from_secs(60);
        let hs256 = jsonwebtoken::Algorithm::HS256;
        let token = crate::auth::mint_hmac(SECRET.as_bytes(), hs256, claims, ttl).unwrap();
        let join = json!(["1", "1", "room:1", "phx_join", {"token": token}]);
        client.text(&join.to_string());
        let refused = json!(["1", "1", "room:1", "phx_reply",
            {"status": "error", "response": {"reason": "unavailable"}}]);
        assert_eq!(next_json(&mut client).await, refused);
        gw.shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn ten_malformed_frames_close_the_socket_with_1007() {
        let (mut client, task, _gw) = start();
        for _ in 0..MAX_BAD_FRAMES {
            client.text("not a phoenix frame");
        }
        match client.next().await {
            Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1007),
            other => panic!("expected a close frame, got {other:?}"),
        }
        drop(client.send);
        task.await.unwrap();
    }
}
