//! One WebSocket client on a route, as a [`Handler`] of the ws driver: its frames become events
//! for the route's services; replies reach it through its queue (filled by
//! [`crate::routes::relay`]).
//!
//! Every session ends the same way, whatever the cause: it leaves the registry and publishes
//! `disconnect`, so services always hear the end of a connection they heard begin.

use std::sync::Arc;

use bytes::Bytes;
use hyper_tungstenite::HyperWebsocket;
use tokio::time::Instant;
use tracing::Instrument;

use crate::Gateway;
use crate::config::{RateLimit, RateLimitAction};
use crate::error::Close;
use crate::http::admission::Identity;
use crate::http::limits::ConnectionSlot;
use crate::ids::ConnectionId;
use crate::metrics::{CloseReason, Loss, RateLimited};
use crate::prism::{ClientData, EventKind, EventTemplate};
use crate::redis::publisher::{Publish, Tag};
use crate::routes::lane::{Data as LaneData, Lane};
use crate::routes::peer::PeerInfo;
use crate::routes::registry::Handle;
use crate::routes::table::Route;
use crate::ws::driver::{self, Data, Handler};
use crate::ws::queue::Control;

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
    route: Arc<Route>,
    peer: Arc<PeerInfo>,
    /// This connection's events, with what never changes encoded once.
    events: EventTemplate,
    shard: usize,
    control: Arc<Control>,
    /// One per legacy HTTP service of the route.
    lanes: Vec<Lane>,
    bucket: Option<TokenBucket>,
    /// When the client's token expires: the session is closed with 4001 then.
    expires_at: Option<Instant>,
    /// Held for the life of the session: frees the connection slot when dropped.
    _slot: ConnectionSlot,
}

impl Session {
    fn new(gw: Arc<Gateway>, id: ConnectionId, admitted: Admitted) -> Self {
        let Admitted {
            route,
            remote_address,
            remote_port,
            slot,
            identity,
        } = admitted;
        let peer = Arc::new(PeerInfo {
            id,
            route: route.path.clone(),
            remote_address,
            remote_port,
            user: identity.user,
            claims: identity.claims,
        });
        let events = EventTemplate::new(&peer.peer(), Some(&gw.response_channel));
        let control = Arc::new(Control::new(
            gw.settings.server.outbound_queue,
            gw.settings.server.outbound_queue_bytes,
        ));
        Self {
            shard: gw.publisher.pick_shard(),
            expires_at: identity.expires_in.map(|left| Instant::now() + left),
            bucket: route.rate_limit.map(TokenBucket::new),
            gw,
            route,
            peer,
            events,
            control,
            lanes: Vec::new(),
            _slot: slot,
        }
    }

    /// The whole life of the connection once it is open.
    // Not an `async fn`: its arguments would be moved into the future twice (once as
    // arguments, once as locals), and every open connection holds this future.
    #[allow(clippy::manual_async_fn)]
    fn run(mut self, mut ws: impl driver::Socket) -> impl Future<Output = ()> + Send {
        async move {
            let gw = self.gw.clone();
            let route = self.route.clone();
            let route_metrics = &route.metrics;
            let handle = Handle {
                route: self.route.clone(),
                control: self.control.clone(),
            };
            self.lanes = self
                .route
                .http
                .iter()
                .map(|svc| Lane::start(&gw, svc.clone(), self.peer.clone(), handle.clone()))
                .collect();
            gw.registry.insert(self.peer.id.clone(), handle);
            // A reload that removed the route just now found the registry without this session.
            if gw.routes().get(&route.path).is_none() {
                self.control.kill(CloseReason::RouteRemoved);
            }
            route_metrics.connections.inc();
            route_metrics.connections_total.inc();
            tracing::debug!(remote = %self.peer.remote_address, "connected");

            self.publish(EventKind::Connect, None).await;
            let control = self.control.clone();
            let timing = &gw.routes().timing;
            let reason = driver::drive(&mut ws, &control, &gw.shutdown, timing, &mut self).await;

            gw.registry.remove(self.peer.id.as_str());
            self.control.close();
            self.publish(EventKind::Disconnect, None).await;
            route_metrics.connections.dec();
            route_metrics.closed(reason);
            tracing::debug!(reason = reason.as_str(), "disconnected");
        }
    }

    /// Tells every service of the route: one encoding published to each distinct request
    /// channel, and the event queued on each HTTP service's lane.
    async fn publish(&self, kind: EventKind, data: Option<ClientData<'_>>) {
        for lane in &self.lanes {
            let owned = data.map(|d| match d {
                ClientData::Text(t) => LaneData::Text(t.to_owned()),
                ClientData::Binary(b) => LaneData::Binary(Bytes::copy_from_slice(b)),
            });
            lane.send(&self.gw, kind, owned);
        }
        let route = &self.route;
        if route.request_channels.is_empty() {
            return;
        }
        let payload = Bytes::from(self.events.encode(kind, data));
        for channel in &route.request_channels {
            let tag = Tag::Event {
                route: route.metrics.clone(),
                kind,
            };
            let p = Publish::new(channel.clone(), payload.clone(), tag);
            self.gw.publisher.publish(self.shard, p).await;
        }
    }
}

impl Handler for Session {
    async fn on_data(&mut self, data: Data<'_>) -> Option<Close> {
        let data = match data {
            Data::Text(t) => ClientData::Text(t),
            Data::Binary(b) => ClientData::Binary(b),
        };
        let metrics = &self.route.metrics;
        match self
            .bucket
            .as_mut()
            .map_or(Ok(()), |b| b.take(Instant::now()))
        {
            Ok(()) => self.publish(EventKind::Message, Some(data)).await,
            Err(RateLimitAction::Drop) => {
                metrics.rate_limited(RateLimited::Dropped);
                let per_event = self.route.request_channels.len().max(1) as u64;
                metrics.lost(Loss::RateLimited, per_event);
            }
            Err(RateLimitAction::Close) => {
                metrics.rate_limited(RateLimited::Closed);
                return Some(Close::RATE_LIMIT);
            }
        }
        None
    }

    fn deadline(&self) -> Option<Instant> {
        self.expires_at
    }

    async fn on_deadline(&mut self) -> Option<Close> {
        Some(Close::TOKEN_EXPIRED)
    }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

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

    /// Every open connection holds its session's future for as long as it is open: most of an
    /// idle connection's memory after the read buffer. This keeps it from growing unnoticed
    /// (measured over the in-memory pipe; a real socket adds its own size).
    #[tokio::test]
    async fn a_session_future_stays_small() {
        let toml = "[redis]\nurl = \"redis://127.0.0.1:1\"\n\
                    [routes.\"/q\".services.s]\ntype = \"redis\"\nrequest_channel = \"x\"\n";
        let settings = crate::Settings::from_toml(toml).unwrap();
        let workers = crate::worker::Workers::default();
        let (gw, _) = Gateway::new(settings, Default::default(), &workers).unwrap();
        let admitted = Admitted {
            route: gw.routes().get("/q").unwrap().clone(),
            remote_address: "192.0.2.1".into(),
            remote_port: 1,
            slot: ConnectionSlot::reserve(&gw.live, None).unwrap(),
            identity: Identity::default(),
        };
        let (ws, _client) = crate::ws::driver::pipe::new();
        let session = Session::new(gw.clone(), ConnectionId::random(), admitted).run(ws);
        let size = std::mem::size_of_val(&session);
        assert!(size <= 1400, "a session's future is {size} bytes");
    }
}
