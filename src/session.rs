//! One WebSocket client on a route: its frames become events for the route's services, and its
//! outbound queue (filled by [`crate::relay`]) is written to it.
//!
//! Every session ends the same way, whatever the cause: it leaves the registry and publishes
//! `disconnect`, so services always hear the end of a connection they heard begin.

use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use hyper_tungstenite::tungstenite::Message;
use hyper_tungstenite::tungstenite::protocol::CloseFrame;
use hyper_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use hyper_tungstenite::{HyperWebsocket, HyperWebsocketStream};
use tokio::time::{Instant, Sleep};
use tracing::Instrument;

use crate::admission::Identity;
use crate::config::{RateLimit, RateLimitAction};
use crate::error::{Close, close_for_read_error};
use crate::ids::ConnectionId;
use crate::legacy::{Data, Lane, PeerInfo};
use crate::metrics::{CloseReason, Denial, Loss};
use crate::prism::{self, ClientData, EventKind};
use crate::publisher::{Publish, Tag};
use crate::registry::{Control, Handle};
use crate::routes::Route;
use crate::{ConnectionSlot, Gateway};

type Ws = HyperWebsocketStream;

/// Most frames written before one flush.
const WRITE_BATCH: usize = 64;
/// How long to wait for the client's side of a close handshake.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Who connected, decided before the upgrade.
pub struct Admitted {
    pub route: Arc<Route>,
    pub remote_address: String,
    pub remote_port: u16,
    pub slot: ConnectionSlot,
    pub identity: Identity,
}

pub async fn run(gw: Arc<Gateway>, upgrade: HyperWebsocket, admitted: Admitted) {
    let ws = match upgrade.await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(error = %e, "WebSocket upgrade did not complete");
            return;
        }
    };
    let id = ConnectionId::random();
    let span = tracing::debug_span!("conn", conn.id = %id, route = %admitted.route.path);
    // The slot moves into the session and is freed when it ends. The session is a task of its
    // own, so it does not carry this function's state for as long as the connection lives.
    let session = Session::new(gw.clone(), id, admitted).run(ws);
    gw.tasks.spawn(session.instrument(span));
}

struct Session {
    gw: Arc<Gateway>,
    peer: Arc<PeerInfo>,
    shard: usize,
    control: Arc<Control>,
    /// One per legacy HTTP service of the route.
    lanes: Vec<Lane>,
    /// Held for the life of the session: frees the connection slot when dropped.
    _slot: ConnectionSlot,
    /// When the client's token expires: the session is closed with 4001 then.
    expires_at: Option<Instant>,
}

impl Session {
    fn new(gw: Arc<Gateway>, id: ConnectionId, admitted: Admitted) -> Self {
        let shard = gw.publisher.pick_shard();
        let expires_at = admitted
            .identity
            .expires_in
            .map(|left| Instant::now() + left);
        let peer = Arc::new(PeerInfo {
            id,
            route: admitted.route,
            remote_address: admitted.remote_address,
            remote_port: admitted.remote_port,
            user: admitted.identity.user,
            claims: admitted.identity.claims,
        });
        let control = Arc::new(Control::new(
            gw.settings.server.outbound_queue,
            gw.settings.server.outbound_queue_bytes,
        ));
        Self {
            gw,
            peer,
            expires_at,
            shard,
            control,
            lanes: Vec::new(),
            _slot: admitted.slot,
        }
    }

    /// The whole life of the connection once it is open.
    // Not an `async fn`: its arguments would be moved into the future twice (once as
    // arguments, once as locals), and every open connection holds this future.
    #[allow(clippy::manual_async_fn)]
    fn run(mut self, mut ws: Ws) -> impl Future<Output = ()> + Send {
        async move {
            let gw = self.gw.clone();
            let route = self.peer.route.clone();
            let route_metrics = &gw.metrics.routes[route.index];
            let handle = Handle {
                route: route.index,
                control: self.control.clone(),
            };
            self.lanes = route
                .http
                .iter()
                .map(|svc| Lane::start(&gw, svc.clone(), self.peer.clone(), handle.clone()))
                .collect();
            gw.registry.insert(self.peer.id.clone(), handle);
            route_metrics.connections.inc();
            route_metrics.connections_total.inc();
            tracing::debug!(remote = %self.peer.remote_address, "connected");

            self.publish(EventKind::Connect, None).await;
            let reason = self.pump(&mut ws).await;

            gw.registry.remove(self.peer.id.as_str());
            self.control.close();
            self.publish(EventKind::Disconnect, None).await;
            route_metrics.connections.dec();
            route_metrics.closed(reason);
            tracing::debug!(reason = reason.as_str(), "disconnected");
        }
    }

    /// Moves frames both ways until the connection ends; returns why it ended.
    async fn pump(&self, ws: &mut Ws) -> CloseReason {
        let server = &self.gw.settings.server;
        let write_timeout = server.write_timeout;
        let control = &*self.control;
        let mut bucket = self.peer.route.rate_limit.map(TokenBucket::new);
        let mut last_seen = Instant::now();
        let mut keepalive =
            tokio::time::interval_at(Instant::now() + server.ping_interval, server.ping_interval);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Made once and polled on every turn: making them anew each turn would register and
        // unregister a waiter each time.
        let mut shutdown = pin!(self.gw.shutdown.cancelled());
        let mut killed = pin!(control.killed());
        let mut ready = pin!(control.ready());
        let mut expiry = self
            .expires_at
            .map(|at| Box::pin(tokio::time::sleep_until(at)));
        loop {
            if let Some(first) = control.pop() {
                let written = tokio::select! {
                    biased;
                    // What was already written is flushed before the close frame says why.
                    why = &mut killed => return close(ws, Close::for_kill(why)).await,
                    r = tokio::time::timeout(write_timeout, write_batch(ws, control, first)) => r,
                };
                match written {
                    Ok(Ok(false)) => continue,
                    Ok(Ok(true)) => {
                        // A service asked for the close; the close frame is on its way.
                        Box::pin(linger(ws)).await;
                        return CloseReason::DroppedByService;
                    }
                    Ok(Err(_)) => return CloseReason::ConnectionLost,
                    Err(_) => return CloseReason::WriteTimeout,
                }
            }
            tokio::select! {
                biased;
                _ = &mut shutdown => return close(ws, Close::SHUTDOWN).await,
                why = &mut killed => return close(ws, Close::for_kill(why)).await,
                () = &mut ready => ready.set(control.ready()),
                () = sleep_opt(&mut expiry) => return close(ws, Close::TOKEN_EXPIRED).await,
                _ = keepalive.tick() => {
                    if last_seen.elapsed() >= server.idle_timeout {
                        return close(ws, Close::IDLE).await;
                    }
                    let ping = ws.send(Message::Ping(Bytes::new()));
                    match tokio::time::timeout(write_timeout, ping).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return CloseReason::ConnectionLost,
                        Err(_) => return CloseReason::WriteTimeout,
                    }
                }
                frame = ws.next() => {
                    last_seen = Instant::now();
                    let data = match &frame {
                        Some(Ok(Message::Text(text))) => Some(ClientData::Text(text.as_str())),
                        Some(Ok(Message::Binary(data))) => Some(ClientData::Binary(data)),
                        _ => None,
                    };
                    if let Some(data) = data {
                        match bucket.as_mut().map_or(Ok(()), |b| b.take(Instant::now())) {
                            Ok(()) => self.publish(EventKind::Message, Some(data)).await,
                            Err(RateLimitAction::Drop) => {
                                self.gw.metrics.routes[self.peer.route.index].denied(Denial::RateLimited);
                                let per_event = self.peer.route.channels.len().max(1) as u64;
                                self.gw.metrics.routes[self.peer.route.index]
                                    .lost(Loss::RateLimited, per_event);
                            }
                            Err(_) => {
                                self.gw.metrics.routes[self.peer.route.index].denied(Denial::RateLimited);
                                return close(ws, Close::RATE_LIMIT).await;
                            }
                        }
                        continue;
                    }
                    if let Some(why) = on_control_frame(frame, ws, write_timeout).await {
                        return why;
                    }
                }
            }
        }
    }

    /// Tells every service of the route: one encoding published to each distinct request
    /// channel, and the event queued on each HTTP service's lane.
    async fn publish(&self, kind: EventKind, data: Option<ClientData<'_>>) {
        for lane in &self.lanes {
            let owned = data.map(|d| match d {
                ClientData::Text(t) => Data::Text(t.to_owned()),
                ClientData::Binary(b) => Data::Binary(Bytes::copy_from_slice(b)),
            });
            lane.send(&self.gw, kind, owned);
        }
        let route = &self.peer.route;
        if route.channels.is_empty() {
            return;
        }
        let payload = Bytes::from(prism::encode_event(
            &self.peer.peer(),
            kind,
            data,
            Some(&self.gw.response_channel),
        ));
        for channel in &route.channels {
            let tag = Tag::Event {
                route: route.index,
                kind,
            };
            let p = Publish::new(channel.clone(), payload.clone(), tag);
            self.gw.publisher.publish(self.shard, p).await;
        }
    }
}

/// Handles what a client sent that is not data: a close (answered), a ping (answered), a read
/// error (closed with the code it deserves) or the end of the stream. Returns why the connection
/// ended, or `None` to go on.
pub(crate) fn on_control_frame(
    frame: Option<Result<Message, hyper_tungstenite::tungstenite::Error>>,
    ws: &mut Ws,
    write_timeout: Duration,
) -> BoxFuture<'_, Option<CloseReason>> {
    Box::pin(async move {
        match frame {
            Some(Ok(Message::Close(_))) => {
                // tungstenite queued the close reply; flushing sends it.
                let _ = tokio::time::timeout(CLOSE_LINGER, ws.flush()).await;
                Some(CloseReason::ClientClosed)
            }
            // Pings are answered by tungstenite on the next write or flush.
            Some(Ok(Message::Ping(_))) => {
                let _ = tokio::time::timeout(write_timeout, ws.flush()).await;
                None
            }
            Some(Ok(_)) => None,
            Some(Err(e)) => {
                let (reply, why) = close_for_read_error(&e);
                if let Some(reply) = reply {
                    close(ws, reply).await;
                }
                Some(why)
            }
            None => Some(CloseReason::ConnectionLost),
        }
    })
}

/// Sleeps until the deadline, or forever when there is none. The timer lives in a box made
/// only for sessions that have a deadline, so the others do not carry one.
async fn sleep_opt(deadline: &mut Option<Pin<Box<Sleep>>>) {
    match deadline {
        Some(sleep) => sleep.await,
        None => std::future::pending().await,
    }
}

/// Writes `first` and whatever else is already queued, then flushes once. Returns true when a
/// close frame was written (nothing may follow it).
///
/// Written against the sink's poll functions rather than `feed().await`: a `Feed` future per
/// frame would make this future, and so every session's, several hundred bytes bigger.
pub(crate) async fn write_batch(
    ws: &mut Ws,
    control: &Control,
    first: Message,
) -> Result<bool, hyper_tungstenite::tungstenite::Error> {
    let mut next = Some(first);
    let mut closing = false;
    let mut written = 0;
    std::future::poll_fn(|cx| {
        while let Some(message) = next.take() {
            if ws.poll_ready_unpin(cx)?.is_pending() {
                next = Some(message);
                return Poll::Pending;
            }
            closing = matches!(message, Message::Close(_));
            ws.start_send_unpin(message)?;
            written += 1;
            if !closing && written < WRITE_BATCH {
                next = control.pop();
            }
        }
        ws.poll_flush_unpin(cx).map_ok(|()| closing)
    })
    .await
}

/// A per-connection token bucket: `per_second` tokens a second, at most `burst` saved up.
struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(limit: RateLimit) -> Self {
        Self {
            tokens: limit.burst(),
            limit,
            at: Instant::now(),
        }
    }

    /// Takes one token, or says what the route does with a message over the limit.
    fn take(&mut self, now: Instant) -> Result<(), RateLimitAction> {
        let refill = now.duration_since(self.at).as_secs_f64() * self.limit.per_second;
        self.tokens = (self.tokens + refill).min(self.limit.burst());
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.limit.action)
        }
    }
}

/// Sends a close frame (bounded in time) and waits briefly for the client's answer, so the
/// frame is not lost to a reset. Returns the close's reason for counting.
///
/// Boxed, like the other once-per-connection paths: a session's future is as big as its biggest
/// state, and every connection holds one for as long as it is open.
pub(crate) fn close(ws: &mut Ws, close: Close) -> BoxFuture<'_, CloseReason> {
    Box::pin(async move {
        let frame = Message::Close(Some(CloseFrame {
            code: CloseCode::from(close.code),
            reason: close.reason.into(),
        }));
        if let Ok(Ok(())) = tokio::time::timeout(CLOSE_LINGER, ws.send(frame)).await {
            linger(ws).await;
        }
        close.why
    })
}

/// Reads (and discards) until the client closes its side, for at most [`CLOSE_LINGER`].
async fn linger(ws: &mut Ws) {
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_allows_a_burst_then_the_rate() {
        let limit = RateLimit {
            per_second: 2.0,
            burst: Some(3.0),
            action: RateLimitAction::Close,
        };
        let mut b = TokenBucket::new(limit);
        let t0 = b.at;
        for _ in 0..3 {
            assert_eq!(b.take(t0), Ok(()));
        }
        assert_eq!(b.take(t0), Err(RateLimitAction::Close));
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(b.take(t1), Ok(()), "one token after half a second at 2/s");
        assert_eq!(b.take(t1), Err(RateLimitAction::Close));
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(b.take(t2), Ok(()));
        }
        assert!(b.take(t2).is_err(), "never more than the burst");
    }
}
