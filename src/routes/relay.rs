//! Where a service reply becomes frames on one client's outbound queue.
//!
//! Called from the Redis reader, so nothing here awaits: a full queue means a slow client, which
//! the queue closes rather than let it stall everyone else's replies.

use bytes::Bytes;
use hyper_tungstenite::tungstenite::Message;
use hyper_tungstenite::tungstenite::protocol::CloseFrame;
use hyper_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::Gateway;
use crate::log::LogLimiter;
use crate::metrics::ReplyDrop;
use crate::prism::{self, Action, Payload, Reply, ReplyError};
use crate::redis::publisher::{Publish, Tag};
use crate::routes::registry::Handle;
use crate::ws::queue::Refused;

/// Counts and (rate-limited) logs a message on the response channel that could not be decoded.
pub fn bad_reply(gw: &Gateway, log: &LogLimiter, e: ReplyError) {
    gw.metrics.reply_dropped(e.into());
    if log.allow() {
        tracing::warn!(reason = e.code(), error = %e, "dropping a bad message from the response channel");
    }
}

/// Delivers one decoded reply to its client, or says why not.
pub fn deliver(gw: &Gateway, log: &LogLimiter, reply: Reply) {
    let Some(conn) = gw.registry.get(&reply.id) else {
        gw.metrics.reply_dropped(ReplyDrop::UnknownConnection);
        if let Some(channel) = reply.response_channel.filter(|c| !c.is_empty()) {
            gw.publisher.try_publish(
                0,
                Publish::new(
                    channel,
                    prism::encode_not_connected(&reply.id),
                    Tag::NotConnected,
                ),
            );
        }
        return;
    };
    let route = &conn.route;
    if !route.has_service(&reply.service) {
        gw.metrics.reply_dropped(ReplyDrop::UnknownService);
        if log.allow() {
            tracing::warn!(route = %route.path, "dropping a reply from a service not on the connection's route");
        }
        return;
    }
    push_actions(gw, &conn, [reply.action]);
}

/// Queues the frames of `actions` on one connection, in order, never waiting.
pub fn push_actions(gw: &Gateway, conn: &Handle, actions: impl IntoIterator<Item = Action>) {
    for action in actions {
        if !push_action(gw, conn, action) {
            return;
        }
    }
}

/// Returns false when the connection can take no more.
fn push_action(gw: &Gateway, conn: &Handle, action: Action) -> bool {
    let frames = match action {
        Action::Send(payload) => [Some(frame(payload)), None],
        Action::Close { last, code, reason } => [
            last.map(frame),
            Some(Message::Close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            }))),
        ],
    };
    for message in frames.into_iter().flatten() {
        match conn.control.push(message) {
            Ok(()) => {
                conn.route.metrics.replies_relayed.inc();
            }
            Err(Refused::Full) => {
                gw.metrics.reply_dropped(ReplyDrop::SlowClient);
                return false;
            }
            Err(Refused::Closed) => {
                gw.metrics.reply_dropped(ReplyDrop::UnknownConnection);
                return false;
            }
        }
    }
    true
}

fn frame(payload: Payload) -> Message {
    match payload {
        Payload::Text(t) => Message::Text(t.into()),
        Payload::Binary(b) => Message::Binary(Bytes::from(b)),
    }
}
