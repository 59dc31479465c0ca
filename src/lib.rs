//! refract: a WebSocket gateway onto Redis.
//!
//! A URL path (a route) maps to a set of services. Every client connect, message and close is
//! published as JSON to the services' Redis channels, and any service can answer that one client
//! through this node's response channel.
//!
//! # Layout
//!
//! - [`config`]: the TOML file as typed data, validated before anything binds.
//! - [`prism`]: the Prism wire protocol, pure: events out, replies in.
//! - [`server`]: the accept loop; one hyper connection per TCP connection, drained on shutdown.
//! - [`http`]: the HTTP surface: route upgrades, `/healthz`, `/readyz`, `/metrics`, 404/426.
//! - [`session`]: one WebSocket client: reads frames into events, writes its outbound queue.
//! - [`registry`]: live connections by id, each with a bounded outbound queue.
//! - [`publisher`]: sharded, pipelined PUBLISH to Redis, in order per connection.
//! - [`subscriber`]: the node's response-channel subscription, its canary and reconnects.
//! - [`relay`]: where a decoded service reply becomes frames on a client's queue.
//! - [`legacy`]: HTTP services: events POSTed in order per connection, polling, backoff.
//! - [`routes`], [`net`], [`ids`]: the route table, client addresses, identifiers.
//! - [`metrics`]: every counter, in a prometheus-client registry per gateway, as Prometheus text.
//! - [`log`]: the rate limit on log lines about bad input.
//! - [`error`]: typed errors and their mapping to HTTP statuses and close codes.
//! - [`backoff`]: capped exponential backoff with jitter, for every reconnecting worker.
//!
//! # Shutdown
//!
//! One [`CancellationToken`] goes down to every task; [`TaskTracker`]s wait for them, within
//! `server.shutdown_grace`.

pub mod auth;

pub mod admission;
pub mod backoff;
pub mod channels;
pub mod config;
pub mod error;
pub mod http;
pub mod ids;
pub mod legacy;
pub mod log;
pub mod metrics;
pub mod net;
pub mod phoenix;
pub mod prism;
pub mod publisher;
pub mod registry;
pub mod relay;
pub mod routes;
pub mod server;
pub mod session;
pub mod subscriber;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Settings;
pub use error::Error;

use crate::ids::NodeId;
use crate::metrics::Metrics;
use crate::publisher::Publisher;
use crate::registry::Registry;
use crate::routes::{Route, RouteTable};

/// Everything the node's tasks share.
pub struct Gateway {
    pub node: NodeId,
    /// `<redis.response_channel>.<node_id>`: where services answer this node's clients.
    pub response_channel: Arc<str>,
    pub settings: Settings,
    pub routes: RouteTable,
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    pub publisher: Publisher,
    /// Shared keep-alive client for legacy HTTP services.
    pub http_client: reqwest::Client,
    /// The Channels endpoint, when configured.
    pub channels: Option<Arc<channels::Channels>>,
    ready: AtomicBool,
    /// Connection slots in use, for `server.max_connections`.
    live: AtomicUsize,
    /// Connections per client address, for `max_connections_per_ip`.
    per_ip: dashmap::DashMap<IpAddr, usize>,
    pub shutdown: CancellationToken,
    /// HTTP connections and WebSocket sessions; waited for on shutdown.
    pub tasks: TaskTracker,
}

impl Gateway {
    /// Ready: the data plane through Redis works (the canary came back), and with Channels, a
    /// previous process's presence entries under this node id are cleared.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && self
                .channels
                .as_ref()
                .is_none_or(|c| c.presence_ready.load(Ordering::Acquire))
    }

    pub fn set_ready(&self, ready: bool) {
        if self.ready.swap(ready, Ordering::AcqRel) != ready {
            self.metrics.ready.set(i64::from(ready));
            if ready {
                self.publisher.redis_recovered();
                tracing::info!("ready: response channel subscribed and canary received");
            } else {
                tracing::warn!("not ready: data plane through Redis is not working");
            }
        }
    }

    /// Takes a connection slot on the node, on `route`, and for the client's address, or says
    /// which limit was hit. The slot is freed when dropped.
    pub fn try_reserve_slot(
        self: &Arc<Self>,
        route: &Arc<Route>,
        ip: IpAddr,
    ) -> Result<ConnectionSlot, SlotLimit> {
        if !take(&self.live, self.settings.server.max_connections) {
            return Err(SlotLimit::Node);
        }
        if !take(&route.live, route.max_connections.unwrap_or(usize::MAX)) {
            self.live.fetch_sub(1, Ordering::AcqRel);
            return Err(SlotLimit::Route);
        }
        // From here on, dropping `slot` gives back what was taken.
        let mut slot = ConnectionSlot {
            gw: self.clone(),
            route: Some(route.clone()),
            ip: None,
        };
        if let Some(max) = route.gate.rules.max_connections_per_ip {
            let mut n = self.per_ip.entry(ip).or_insert(0);
            if *n >= max {
                return Err(SlotLimit::PerIp);
            }
            *n += 1;
            slot.ip = Some(ip);
        }
        Ok(slot)
    }
}

impl Gateway {
    /// A slot for a Channels socket: only the node's limit applies.
    pub fn try_reserve_socket_slot(self: &Arc<Self>) -> Option<ConnectionSlot> {
        take(&self.live, self.settings.server.max_connections).then(|| ConnectionSlot {
            gw: self.clone(),
            route: None,
            ip: None,
        })
    }
}

/// Which connection limit refused a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotLimit {
    Node,
    Route,
    PerIp,
}

/// Increments `counter` unless it is at `max`.
fn take(counter: &AtomicUsize, max: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

/// A reserved place under the node's, the route's and the client address's connection limits.
pub struct ConnectionSlot {
    gw: Arc<Gateway>,
    /// The route whose limit the slot counts against (none for Channels sockets).
    route: Option<Arc<Route>>,
    /// Set when the slot counts against a per-address limit.
    ip: Option<IpAddr>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.gw.live.fetch_sub(1, Ordering::AcqRel);
        if let Some(route) = &self.route {
            route.live.fetch_sub(1, Ordering::AcqRel);
        }
        if let Some(ip) = self.ip {
            if let Some(mut n) = self.gw.per_ip.get_mut(&ip) {
                *n -= 1;
            }
            self.gw.per_ip.remove_if(&ip, |_, n| *n == 0);
        }
    }
}

/// Runs the gateway on `listener` until `shutdown` is cancelled, then drains: clients are closed
/// with 1001, their `disconnect` events published, and queued publishes flushed, all within
/// `server.shutdown_grace`.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let node = settings
        .node_id
        .clone()
        .map(NodeId::new)
        .unwrap_or_else(NodeId::generate);
    let response_channel: Arc<str> = format!("{}.{}", settings.redis.response_channel, node).into();
    let routes = RouteTable::new(&settings);
    let metrics = Arc::new(Metrics::new(
        routes.iter().map(|r| r.path.clone()),
        routes
            .http_services()
            .map(|(r, s)| (r.path.clone(), s.name.clone())),
    ));
    let http_client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| Error::Http(e.to_string()))?;
    let workers = TaskTracker::new();
    let drain = CancellationToken::new();
    let publisher = Publisher::start(&settings.redis, metrics.clone(), drain.clone(), &workers)?;
    let grace = settings.server.shutdown_grace;
    let channels = settings
        .channels
        .clone()
        .map(|c| channels::Channels::new(c, metrics.clone(), settings.redis.command_timeout));
    let gateway = Arc::new(Gateway {
        node,
        response_channel,
        settings,
        routes,
        registry: Registry::default(),
        metrics,
        publisher,
        http_client,
        channels: channels.as_ref().map(|(ch, _)| ch.clone()),
        ready: AtomicBool::new(false),
        live: AtomicUsize::new(0),
        per_ip: dashmap::DashMap::new(),
        shutdown: shutdown.clone(),
        tasks: TaskTracker::new(),
    });
    tracing::info!(
        node = %gateway.node,
        response_channel = %gateway.response_channel,
        listen = %listener.local_addr()?,
        "refract starting"
    );
    workers.spawn(subscriber::run(gateway.clone()));
    if let Some((ch, cmds)) = channels {
        workers.spawn(channels::bridge::run(gateway.clone(), ch.clone(), cmds));
        if ch.settings.presence.enabled {
            workers.spawn(channels::presence::run(gateway.clone(), ch.clone()));
        } else {
            ch.presence_ready
                .store(true, std::sync::atomic::Ordering::Release);
        }
        if let Some(system) = &ch.settings.system {
            workers.spawn(channels::clock(gateway.clone(), system.datetime_interval));
        }
    }

    server::serve(listener, gateway.clone()).await;

    // Stop accepting (done), let sessions close and publish their disconnects, then flush.
    let deadline = tokio::time::Instant::now() + grace;
    gateway.tasks.close();
    if tokio::time::timeout_at(deadline, gateway.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace expired with connections still open");
    }
    drain.cancel();
    workers.close();
    if tokio::time::timeout_at(deadline, workers.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace expired with publishes still queued");
    }
    tracing::info!("refract stopped");
    Ok(())
}
