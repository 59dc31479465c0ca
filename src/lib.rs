//! refract: a WebSocket gateway onto Redis, with two front doors on one port.
//!
//! **Routes** (Prism-style): a URL path maps to services; every client connect, message and
//! close is published as JSON to the services' Redis channels, and any service can answer that
//! one client through this node's response channel. **Channels**: a Phoenix Channels endpoint;
//! clients join topics, the gateway bridges `to:`/`from:` channels and keeps presence.
//!
//! # Layout
//!
//! - [`config`]: the TOML file as typed data, validated before anything binds.
//! - [`prism`], [`phoenix`]: the two wire protocols, pure: nothing there touches a socket.
//! - [`http`]: the one port: accept loop, health, readiness, metrics, admission, connection
//!   limits, and both doors' upgrades; every refusal is answered there.
//! - [`ws`]: what both doors share once a connection is a WebSocket: the outbound queue and
//!   the one driver loop, which hands each data frame to the door's handler.
//! - [`routes`]: the routes door: the route table, the session handler, the registry of live
//!   connections, the relay of replies, legacy HTTP services.
//! - [`channels`]: the Channels door: the upgrade, the socket handler, the hub, the bridge,
//!   presence, the clock, the token endpoint.
//! - [`redis`]: the one place that knows Redis: the client, the publisher, the response-channel
//!   subscriber, the keys and scripts.
//! - [`reload`]: config reload on SIGHUP: routes change for new connections, none dropped.
//! - [`admin`]: the admin page and its JSON, for operators (off unless `[admin]`).
//! - [`client`]: `refract client`, a small interactive WebSocket client for trying it out.
//! - [`worker`]: the contract of long-lived workers, and the node's readiness.
//! - [`metrics`]: every metric, registered in one place (prometheus-client), typed labels.
//! - [`log`]: rate-limited logging, so a flood of bad input cannot flood the log.
//! - [`error`]: typed errors, and where each becomes a status, a close code or a `phx_reply`.
//! - [`auth`]: JWT verification and minting; [`ids`]: connection and node ids;
//!   [`net`]: client addresses; [`backoff`]: capped exponential backoff with jitter.
//!
//! Where does a Redis reply become a client frame? [`redis::subscriber`] reads it,
//! [`routes::relay`] queues its frames on the client's [`ws::queue`], and the client's
//! [`ws::driver`] writes them. A Channels message: [`channels::bridge`] reads it, and
//! [`channels::hub`] queues one shared frame on every member's queue.
//!
//! # Shutdown
//!
//! One [`CancellationToken`] goes down to every connection and worker; [`TaskTracker`]s wait
//! for them, within `server.shutdown_grace`.

pub mod admin;
pub mod auth;
pub mod backoff;
pub mod channels;
pub mod client;
pub mod config;
pub mod error;
pub mod http;
pub mod ids;
pub mod log;
pub mod metrics;
pub mod net;
pub mod phoenix;
pub mod prism;
pub mod redis;
pub mod reload;
pub mod routes;
pub mod worker;
pub mod ws;

use std::sync::{Arc, RwLock};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Settings;
pub use error::Error;

use crate::channels::endpoint::Channels;
use crate::http::limits::{Limit, PerIp};
use crate::ids::NodeId;
use crate::metrics::Metrics;
use crate::redis::client::Redis;
use crate::redis::publisher::Publisher;
use crate::routes::registry::Registry;
use crate::routes::table::RouteTable;
use crate::worker::{Part, Readiness, Workers};

/// Everything the node's tasks share.
pub struct Gateway {
    pub node: NodeId,
    /// `<redis.response_channel>.<node_id>`: where services answer this node's clients.
    pub response_channel: Arc<str>,
    /// The settings the node started with, but for `routes`: those are in [`Gateway::routes`],
    /// which a config reload replaces.
    pub settings: Settings,
    routes: RwLock<Arc<RouteTable>>,
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    pub redis: Arc<Redis>,
    pub publisher: Publisher,
    /// Shared keep-alive client for legacy HTTP services and connect hooks.
    pub http_client: reqwest::Client,
    /// The Channels endpoint, when configured.
    pub channels: Option<Arc<Channels>>,
    readiness: Readiness,
    /// `server.max_connections`: every WebSocket on the node, both doors.
    pub live: Arc<Limit>,
    /// Connections per client address, for routes' `max_connections_per_ip`.
    pub per_ip: Arc<PerIp>,
    pub shutdown: CancellationToken,
    /// HTTP connections and WebSocket sessions; waited for on shutdown.
    pub tasks: TaskTracker,
    pub started: std::time::Instant,
    /// TLS on the listener, when `[server.tls]` is set.
    pub tls: Option<Arc<http::tls::ServerTls>>,
    /// Places for connections not yet upgraded, and the per-address handshake rate.
    pub handshakes: http::handshake::HandshakeGuard,
}

impl Gateway {
    /// Ready: the data plane through Redis works (the canary came back), and with Channels, a
    /// previous process's presence entries under this node id are cleared.
    pub fn is_ready(&self) -> bool {
        self.readiness.is_ready()
    }

    /// The route table in force: what a new connection is matched against.
    pub fn routes(&self) -> Arc<RouteTable> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts `table` in force for new connections; returns the one it replaces.
    pub fn replace_routes(&self, table: RouteTable) -> Arc<RouteTable> {
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *routes, Arc::new(table))
    }

    /// How every worker reports readiness.
    pub fn set_ready(&self, part: Part, ready: bool) {
        if !self.readiness.set(part, ready) || part != Part::ResponseChannel {
            return;
        }
        self.metrics.ready.set(i64::from(ready));
        if ready {
            self.publisher.redis_recovered();
            tracing::info!("ready: response channel subscribed and canary received");
        } else {
            tracing::warn!("not ready: data plane through Redis is not working");
        }
    }

    /// What this node tells the others about itself (the value of its liveness key): its id,
    /// connection counts, and when it said so (Unix ms).
    pub fn stats(&self) -> String {
        let routes = self.registry.len() as i64;
        let sockets = self.metrics.channels.sockets.get();
        serde_json::json!({"node": self.node.as_str(), "connections": routes + sockets,
                           "route_connections": routes, "sockets": sockets,
                           "at": unix_ms()})
        .to_string()
    }

    /// The node's shared state, from validated settings. Nothing connects yet; the publisher's
    /// shards start on `workers`. With Channels, the receiver is the bridge's command queue.
    pub fn new(
        mut settings: Settings,
        shutdown: CancellationToken,
        workers: &Workers,
    ) -> Result<(Arc<Self>, Option<BridgeCommands>), Error> {
        let node = settings
            .node_id
            .clone()
            .map(NodeId::new)
            .unwrap_or_else(NodeId::generate);
        let response_channel = format!("{}.{}", settings.redis.response_channel, node).into();
        let live = Limit::new(settings.server.max_connections);
        // Before any client is built: https:// services and hooks use it.
        config::pem::install_crypto_provider();
        let metrics = Arc::new(Metrics::new());
        let routes = RouteTable::new(&settings.server, &settings.routes, &live, &metrics, None)?;
        settings.routes.clear();
        let http_client = routes::http_service::client_builder().build()?;
        let tls = match &settings.server.tls {
            Some(t) => Some(Arc::new(http::tls::ServerTls::load(t)?)),
            None => None,
        };
        let redis = Arc::new(Redis::open(&settings.redis)?);
        let publisher = Publisher::start(&settings.redis, redis.clone(), metrics.clone(), workers);
        let (channels, commands) = match settings.channels.clone() {
            Some(c) => {
                let timeouts = (
                    settings.redis.command_timeout,
                    settings.server.write_timeout,
                );
                let (ch, cmds) = Channels::new(c, metrics.clone(), timeouts.0, timeouts.1);
                (Some(ch), Some(cmds))
            }
            None => (None, None),
        };
        let presence = channels
            .as_ref()
            .is_some_and(|ch| ch.settings.presence.enabled);
        let handshakes = http::handshake::HandshakeGuard::new(&settings.server);
        let gateway = Gateway {
            node,
            response_channel,
            live,
            settings,
            routes: RwLock::new(Arc::new(routes)),
            registry: Registry::default(),
            metrics,
            redis,
            publisher,
            http_client,
            channels,
            readiness: Readiness::new(presence),
            per_ip: Arc::default(),
            shutdown,
            tasks: TaskTracker::new(),
            started: std::time::Instant::now(),
            tls,
            handshakes,
        };
        Ok((Arc::new(gateway), commands))
    }
}

/// Now, in milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as u64)
}

/// What the Channels endpoint asks of its Redis bridge.
pub type BridgeCommands = tokio::sync::mpsc::UnboundedReceiver<channels::bridge::Cmd>;

/// Runs the gateway on `listener` until `shutdown` is cancelled, then drains: clients are closed
/// with 1001, their `disconnect` events published, and queued publishes flushed, all within
/// `server.shutdown_grace`.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let grace = settings.server.shutdown_grace;
    let workers = Workers::new(shutdown.clone());
    let (gateway, bridge_commands) = Gateway::new(settings, shutdown, &workers)?;
    tracing::info!(
        node = %gateway.node,
        response_channel = %gateway.response_channel,
        listen = %listener.local_addr()?,
        "refract starting"
    );
    if gateway.settings.redis.mode == config::RedisMode::Sentinel {
        workers.spawn("sentinel", redis::sentinel::run(gateway.clone()));
    }
    workers.spawn("subscriber", redis::subscriber::run(gateway.clone()));
    if let (Some(ch), Some(cmds)) = (&gateway.channels, bridge_commands) {
        let bridge = channels::bridge::run(gateway.clone(), ch.hub.clone(), cmds);
        workers.spawn("channels bridge", bridge);
        if ch.settings.presence.enabled {
            workers.spawn(
                "presence",
                channels::presence::run(gateway.clone(), ch.clone()),
            );
        }
        if let Some(system) = &ch.settings.system {
            let clock = channels::clock::run(gateway.clone(), system.datetime_interval);
            workers.spawn("clock", clock);
        }
    }

    let presence = gateway
        .channels
        .as_ref()
        .is_some_and(|ch| ch.settings.presence.enabled);
    if let (Some(tls), Some(settings)) = (&gateway.tls, &gateway.settings.server.tls) {
        let watch = http::tls::watch(gateway.clone(), tls.clone(), settings.clone());
        workers.spawn("tls reload", watch);
    }
    let source = gateway.settings.source.clone();
    if let Some(watch) = source.and_then(|path| reload::watch(gateway.clone(), path)) {
        workers.spawn("config reload", watch);
    }
    if gateway.settings.admin.is_some() && !presence {
        workers.spawn("heartbeat", admin::heartbeat(gateway.clone()));
    }

    http::serve::serve(listener, gateway.clone()).await;

    // Stop accepting (done), let sessions close and publish their disconnects, then flush.
    let deadline = tokio::time::Instant::now() + grace;
    gateway.tasks.close();
    if tokio::time::timeout_at(deadline, gateway.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace expired with connections still open");
    }
    if tokio::time::timeout_at(deadline, workers.stop())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace expired with publishes still queued");
    }
    tracing::info!("refract stopped");
    Ok(())
}
