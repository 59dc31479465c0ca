//! One Phoenix socket: heartbeats, joins and leaves, client pushes to `from:<topic>:<event>`,
//! and the frames the hub queues for it.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use hyper_tungstenite::tungstenite::Message;
use hyper_tungstenite::{HyperWebsocket, HyperWebsocketStream};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::auth::Claims;
use crate::channels::Channels;
use crate::channels::hub::Member;
use crate::channels::presence;
use crate::error::Close;
use crate::ids::ConnectionId;
use crate::metrics::{ChannelDrop, CloseReason, JoinResult};
use crate::phoenix::{self, InFrame};
use crate::publisher::{Publish, Tag};
use crate::registry::Control;
use crate::session::{close, on_control_frame, write_batch};
use crate::{ConnectionSlot, Gateway};

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
    conn: Arc<str>,
    control: Arc<Control>,
    joined: HashMap<String, Joined>,
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
    let conn: Arc<str> = ConnectionId::random().as_str().into();
    // Fan-out frames are shared between sockets, so the queue is bounded in frames only.
    let control = Arc::new(Control::new(ch.settings.outbound_queue, usize::MAX));
    let socket = Socket {
        shard: gw.publisher.pick_shard(),
        gw: gw.clone(),
        ch,
        conn: conn.clone(),
        control,
        joined: HashMap::new(),
        credential: admitted.credential,
        bad_frames: 0,
        _slot: admitted.slot,
    };
    let span = tracing::debug_span!("socket", conn.id = %conn);
    // A task of its own, as a route session is: it does not carry the upgrade's state.
    gw.tasks
        .spawn(tracing::Instrument::instrument(socket.serve(ws), span));
}

/// A membership's presence reference: unique across nodes, sockets and rejoins.
pub fn phx_ref(gw: &Gateway, conn: &str, join_ref: &str) -> String {
    format!("{}:{conn}:{join_ref}", gw.node)
}

/// Sleeps until `at`, or forever.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Socket {
    /// The socket's whole life once it is open.
    // Not an `async fn`, so its arguments are held once, not twice (see `Session::run`).
    #[allow(clippy::manual_async_fn)]
    fn serve(mut self, mut ws: HyperWebsocketStream) -> impl Future<Output = ()> + Send {
        async move {
            let gw = self.gw.clone();
            let metrics = &gw.metrics.channels;
            metrics.sockets.inc();
            metrics.sockets_total.inc();
            let reason = self.pump(&mut ws).await;
            metrics.sockets.dec();
            metrics.closed(reason);
        }
    }

    async fn pump(&mut self, ws: &mut HyperWebsocketStream) -> CloseReason {
        let idle = self.ch.settings.idle_timeout;
        let write_timeout = self.gw.settings.server.write_timeout;
        let control = self.control.clone();
        let mut last_seen = Instant::now();
        // Made once and polled on every turn, as in a route session.
        let gw = self.gw.clone();
        let mut shutdown = pin!(gw.shutdown.cancelled());
        let mut killed = pin!(control.killed());
        let mut ready = pin!(control.ready());
        // One timer, pushed back when it fires early, rather than a new one on every turn.
        let mut idle_timer = pin!(tokio::time::sleep_until(last_seen + idle));
        let reason = loop {
            if let Some(first) = control.pop() {
                let written = tokio::select! {
                    biased;
                    why = &mut killed => break close(ws, Close::for_kill(why)).await,
                    r = tokio::time::timeout(write_timeout, write_batch(ws, &control, first)) => r,
                };
                match written {
                    Ok(Ok(_)) => continue,
                    Ok(Err(_)) => break CloseReason::ConnectionLost,
                    Err(_) => break CloseReason::WriteTimeout,
                }
            }
            let next_expiry = self.joined.values().filter_map(|j| j.expires).min();
            tokio::select! {
                biased;
                _ = &mut shutdown => break close(ws, Close::SHUTDOWN).await,
                why = &mut killed => break close(ws, Close::for_kill(why)).await,
                () = &mut ready => ready.set(control.ready()),
                () = &mut idle_timer => {
                    if last_seen + idle > Instant::now() {
                        idle_timer.as_mut().reset(last_seen + idle);
                        continue;
                    }
                    // 1001, not 1000: phoenix.js reconnects after 1001.
                    break close(ws, Close::IDLE).await;
                }
                _ = until(next_expiry), if next_expiry.is_some() => self.expire_tokens().await,
                frame = ws.next() => {
                    last_seen = Instant::now();
                    match frame {
                        Some(Ok(Message::Text(text))) => {
                            match phoenix::decode_text(text.as_str()) {
                                Ok(f) => self.on_frame(f).await,
                                Err(_) => {
                                    if let Some(close_with) = self.bad_frame() {
                                        break close(ws, close_with).await;
                                    }
                                }
                            }
                        }
                        Some(Ok(Message::Binary(data))) => match phoenix::decode_binary(&data) {
                            Ok(f) => self.on_frame(f).await,
                            Err(_) => {
                                if let Some(close_with) = self.bad_frame() {
                                    break close(ws, close_with).await;
                                }
                            }
                        },
                        other => {
                            if let Some(why) = on_control_frame(other, ws, write_timeout).await {
                                break why;
                            }
                        }
                    }
                }
            }
        };
        control.close();
        let topics: Vec<String> = self.joined.keys().cloned().collect();
        for topic in topics {
            Box::pin(self.leave_topic(&topic)).await;
        }
        reason
    }

    /// Counts a bad frame; past the limit, the close to send.
    fn bad_frame(&mut self) -> Option<Close> {
        self.ch.metrics().dropped(ChannelDrop::BadFrame);
        self.bad_frames += 1;
        (self.bad_frames >= MAX_BAD_FRAMES).then_some(Close {
            code: 1007,
            reason: "too many malformed frames",
            why: CloseReason::ProtocolError,
        })
    }

    /// Queues a frame for this socket; a full queue closes it as a slow client.
    fn send(&self, text: String) {
        if self.control.push(Message::text(text)).is_err() {
            self.ch.metrics().dropped(ChannelDrop::SlowClient);
            self.control.kill(CloseReason::SlowClient);
        }
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
                if self.joined.contains_key(topic) {
                    self.close_channel(topic);
                    Box::pin(self.leave_topic(topic)).await;
                }
            }
            // Lifecycle and presence events are the gateway's, never a client's to publish.
            e if e.starts_with("phx_") || e.starts_with("presence_") || e == "heartbeat" => {
                self.ch.metrics().dropped(ChannelDrop::ReservedEvent);
            }
            _ => self.push(&f).await,
        }
    }

    fn close_channel(&self, topic: &str) {
        if let Some(j) = self.joined.get(topic) {
            self.send(phoenix::close(&j.join_ref, topic));
        }
    }

    async fn join(&mut self, f: &InFrame<'_>) {
        let topic = &*f.topic;
        let join_ref = f
            .join_ref
            .as_deref()
            .or(f.reference.as_deref())
            .unwrap_or("");
        let refuse = |this: &Self, reason: &str, result: JoinResult| {
            this.ch.metrics().join(result);
            this.send(phoenix::error_reply(
                f.join_ref.as_deref(),
                f.reference.as_deref(),
                topic,
                reason,
            ));
        };
        if !phoenix::valid_topic(topic) {
            return refuse(self, "invalid topic", JoinResult::InvalidTopic);
        }
        let claims = match f.payload.str_field("token") {
            Some(token) => self.ch.verifier.verify(&token).ok(),
            None => self.credential.clone(),
        };
        let Some(claims) = claims else {
            return refuse(self, "unauthorized", JoinResult::Unauthorized);
        };
        let admin_ok =
            topic != "admin" || claims.map.get("admin") == Some(&serde_json::Value::Bool(true));
        if !phoenix::scope_covers(&claims.map, topic) || !admin_ok {
            return refuse(self, "forbidden", JoinResult::Forbidden);
        }
        // Joining again replaces the old membership, as Phoenix does.
        if self.joined.contains_key(topic) {
            self.close_channel(topic);
            Box::pin(self.leave_topic(topic)).await;
        }
        if self.joined.len() >= self.ch.settings.max_topics_per_socket {
            return refuse(
                self,
                "too many channels joined",
                JoinResult::TooManyChannels,
            );
        }
        if !self.gw.is_ready() {
            return refuse(self, "unavailable", JoinResult::Unavailable);
        }
        let key: Arc<str> = claims
            .map
            .get("id")
            .or_else(|| claims.map.get("sub"))
            .and_then(|v| v.as_str())
            .unwrap_or(&self.conn)
            .into();
        // The client's own `meta`, if any, under the gateway's fields (which always win).
        let mut meta = match f.payload.object_field("meta") {
            Some((_, size)) if size > self.ch.settings.presence.max_meta_size => {
                return refuse(self, "invalid meta", JoinResult::Forbidden);
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
        let subscribed = !self.ch.hub.join(topic, member) || self.ch.subscribe(topic).await;
        let tracked = self.ch.settings.presence.enabled;
        let added = match (subscribed, tracked) {
            (true, true) => presence::join(&self.gw, topic, &phx_ref, &key, &meta, false).await,
            (true, false) => Some(false),
            (false, _) => None,
        };
        let Some(added) = added else {
            if self.ch.hub.leave(topic, &self.conn) {
                self.ch.unsubscribe(topic);
            }
            return refuse(self, "unavailable", JoinResult::Unavailable);
        };
        let expires = claims.time_left().map(|left| Instant::now() + left);
        self.joined.insert(
            topic.to_owned(),
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
            topic,
            "ok",
            &response.to_string(),
        ));
        // The whole topic, every node's members, after the ok; then everyone hears the join.
        let max = self.ch.settings.presence.max_listed;
        let state = match tracked {
            true => presence::state(&self.gw, topic, max).await,
            false => None,
        };
        let state = state.unwrap_or_else(|| "{}".into());
        self.send(phoenix::push(
            Some(join_ref),
            topic,
            "presence_state",
            &state,
        ));
        if added {
            let diff = presence::diff(&key, &meta, true);
            let p = Publish::new(format!("to:{topic}:presence_diff"), diff, Tag::Channel);
            self.gw.publisher.publish(self.shard, p).await;
        }
        self.note(topic, &key, "join").await;
    }

    async fn push(&mut self, f: &InFrame<'_>) {
        let topic = &*f.topic;
        let current = self.joined.get(topic).map(|j| j.join_ref.clone());
        if current.is_none() || f.join_ref.as_deref() != current.as_deref() {
            self.ch.metrics().dropped(ChannelDrop::UnmatchedTopic);
            self.send(phoenix::error_reply(
                f.join_ref.as_deref(),
                f.reference.as_deref(),
                topic,
                "unmatched topic",
            ));
            return;
        }
        let channel = format!("from:{topic}:{}", f.event);
        let bytes = Bytes::copy_from_slice(f.payload.bytes());
        let mut p = Publish::new(channel, bytes, Tag::Channel);
        if !self.ch.settings.ack_pushes {
            self.gw.publisher.publish(self.shard, p).await;
            return;
        }
        let (ack, done) = oneshot::channel();
        p.ack = Some(ack);
        self.gw.publisher.publish(self.shard, p).await;
        let ok = done.await.unwrap_or(false);
        let (jr, r) = (f.join_ref.as_deref(), f.reference.as_deref());
        self.send(if ok {
            phoenix::reply(jr, r, topic, "ok", "{}")
        } else {
            phoenix::error_reply(jr, r, topic, "unavailable")
        });
    }

    /// Leaves a joined topic: out of the hub (unsubscribing after the last local member), and
    /// its presence leave published.
    async fn leave_topic(&mut self, topic: &str) {
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
        let expired: Vec<(String, Arc<str>)> = self
            .joined
            .iter()
            .filter(|(_, j)| j.expires.is_some_and(|e| e <= now))
            .map(|(t, j)| (t.clone(), j.join_ref.clone()))
            .collect();
        for (topic, join_ref) in expired {
            self.send(phoenix::push(
                Some(&join_ref),
                &topic,
                "phx_error",
                "{\"reason\":\"token expired\"}",
            ));
            Box::pin(self.leave_topic(&topic)).await;
        }
    }

    /// A lifecycle note for backends, never with a token.
    async fn note(&self, topic: &str, key: &str, event: &str) {
        let channel = &self.ch.settings.lifecycle_channel;
        if channel.is_empty() {
            return;
        }
        let payload = serde_json::json!({
            "node": self.gw.node.as_str(), "conn": &*self.conn, "id": key, "topic": topic, "event": event,
        });
        let p = Publish::new(channel.as_str(), payload.to_string(), Tag::Channel);
        self.gw.publisher.publish(self.shard, p).await;
    }
}
