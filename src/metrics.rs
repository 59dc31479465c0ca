//! Every metric the gateway keeps, in the gateway's own prometheus-client [`Registry`].
//!
//! Each series' handle (an `Arc`'d atomic) is made once and kept where the code uses it (a
//! route's handles in its [`RouteMetrics`], a slot per label value): counting is one relaxed add,
//! no lookup, and every series shows from the start at 0. A route's handles are made when its
//! route is built, so a route added by a config reload has its series from then on, and a route
//! that stays keeps counting in the same series. Labels are configured route names or fixed codes, never
//! user input; the encoder escapes `\`, `"` and newlines in label values.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{self as enc, EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
use prometheus_client::registry::Registry;

use crate::prism::{EventKind, ReplyError};

/// The `Content-Type` of [`Metrics::render`]: Prometheus text, version 0.0.4.
pub const CONTENT_TYPE: &str = enc::prometheus_text::CONTENT_TYPE;

/// Defines label enums with their wire codes and the list of all values. A value encodes as its
/// code (the `EncodeLabelValue` derive would write the variant's name), and alone as the label set
/// `key="code"`, so sets compose as tuples: `(RouteLabels, CloseReason)`.
macro_rules! label_enums {
    (encode $name:ident as $key:literal) => {
        impl EncodeLabelValue for $name {
            fn encode(&self, e: &mut enc::LabelValueEncoder) -> std::fmt::Result {
                std::fmt::Write::write_str(e, self.as_str())
            }
        }
        impl EncodeLabelSet for $name {
            fn encode(&self, e: &mut enc::LabelSetEncoder) -> std::fmt::Result {
                [($key, *self)].encode(e)
            }
        }
    };
    ($($(#[$m:meta])* $name:ident as $key:literal {
        $($variant:ident => $code:literal),+ $(,)?
    })+) => {$(
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $code),+ }
            }
        }
        label_enums!(encode $name as $key);
    )+};
}

label_enums!(encode EventKind as "type");

label_enums! {
    /// Why a message on the response channel did not reach a client.
    ReplyDrop as "reason" {
        TooLarge => "too_large",
        InvalidJson => "invalid_json",
        WrongType => "wrong_type",
        MissingField => "missing_field",
        UnknownType => "unknown_type",
        InvalidBase64 => "invalid_base64",
        InvalidCloseCode => "invalid_close_code",
        UnknownConnection => "unknown_connection",
        UnknownService => "unknown_service",
        SlowClient => "slow_client",
    }
    /// Why an event reached no service: Redis was unreachable, the node was shutting down, the
    /// PUBLISH found no subscriber on the channel, or the client was over its rate limit.
    Loss as "reason" {
        RedisUnavailable => "redis_unavailable",
        Shutdown => "shutdown",
        NoSubscriber => "no_subscriber",
        RateLimited => "rate_limited",
    }
    /// How a client connection ended.
    CloseReason as "reason" {
        ClientClosed => "client_closed",
        ConnectionLost => "connection_lost",
        DroppedByService => "dropped_by_service",
        SlowClient => "slow_client",
        WriteTimeout => "write_timeout",
        MessageTooLarge => "message_too_large",
        InvalidUtf8 => "invalid_utf8",
        ProtocolError => "protocol_error",
        Shutdown => "shutdown",
        IdleTimeout => "idle_timeout",
        RateLimited => "rate_limited",
        TokenExpired => "token_expired",
        RouteRemoved => "route_removed",
    }
    /// Why a client was refused admission to a route (or, for `rate_limited`, cut off after).
    Denial as "reason" {
        BadToken => "bad_token",
        Expired => "expired",
        Origin => "origin",
        IpDenied => "ip_denied",
        TooManyConnections => "too_many_connections",
        HookDenied => "hook_denied",
        HookError => "hook_error",
        RateLimited => "rate_limited",
    }
    /// Why an HTTP request was refused.
    Rejection as "reason" {
        NotFound => "not_found",
        UpgradeRequired => "upgrade_required",
        BadUpgrade => "bad_upgrade",
        NotReady => "not_ready",
        TooManyConnections => "too_many_connections",
        UnsupportedSerializer => "unsupported_serializer",
        BadSocketToken => "bad_socket_token",
        Unauthorized => "unauthorized",
    }
    /// The outcome of one request to a legacy HTTP service.
    HttpResult as "result" {
        Ok => "ok",
        ServerError => "server_error",
        ClientError => "client_error",
        InvalidBody => "invalid_body",
        TooLarge => "too_large",
        Timeout => "timeout",
        ConnectError => "connect_error",
        BackingOff => "backing_off",
        QueueFull => "queue_full",
    }
    /// The outcome of a `phx_join`.
    JoinResult as "result" {
        Ok => "ok",
        Unauthorized => "unauthorized",
        Forbidden => "forbidden",
        InvalidTopic => "invalid_topic",
        TooManyChannels => "too_many_channels",
        Unavailable => "unavailable",
    }
    /// Why a subscription to Redis was made again.
    Resubscribe as "reason" {
        ConnectionLost => "connection_lost",
        CanaryMissing => "canary_missing",
        SlotMoved => "slot_moved",
        MasterChanged => "master_changed",
    }
    /// Why a connection was closed before its upgrade.
    HandshakeRefusal as "reason" {
        Timeout => "timeout",
        HeadersTooLarge => "headers_too_large",
        TooManyPending => "too_many_pending",
        RateLimited => "rate_limited",
    }
    /// How a reload (of the listener's TLS certificate, or of the config) went.
    Reload as "result" {
        Ok => "ok",
        Failed => "error",
    }
    /// What `rate_limit` did with a message over the limit.
    RateLimited as "action" {
        Dropped => "drop",
        Closed => "close",
    }
    /// Why a Channels frame went nowhere.
    ChannelDrop as "reason" {
        BadFrame => "bad_frame",
        UnmatchedTopic => "unmatched_topic",
        EmptyPayload => "empty_payload",
        SlowClient => "slow_client",
        NameTooLong => "name_too_long",
        ReservedEvent => "reserved_event",
    }
}

impl From<ReplyError> for ReplyDrop {
    fn from(e: ReplyError) -> Self {
        match e {
            ReplyError::TooLarge => Self::TooLarge,
            ReplyError::InvalidJson => Self::InvalidJson,
            ReplyError::WrongType => Self::WrongType,
            ReplyError::MissingField(_) => Self::MissingField,
            ReplyError::UnknownType => Self::UnknownType,
            ReplyError::InvalidBase64 => Self::InvalidBase64,
            ReplyError::InvalidCloseCode => Self::InvalidCloseCode,
        }
    }
}

/// The labels of a route's series (its configured path), and of a legacy HTTP service's.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AddressLabels {
    address: String,
}
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ServiceLabels {
    route: String,
    service: String,
}

/// Registers a metric of `$var`'s type per line, in the order of the rendering, and binds a handle
/// to it to `$var`. A counter's name has no `_total`: the encoder adds it.
macro_rules! register {
    ($r:ident: $($var:ident = $name:literal, $help:literal;)+) => {$(
        let $var = Default::default();
        $r.register($name, $help, Clone::clone(&$var));
    )+};
}

/// One handle per value of `all`, so that `handles[value as usize]` is `labels(value)`'s series.
fn each<E: Copy, S, M>(family: &Family<S, M>, all: &[E], labels: impl Fn(E) -> S) -> Box<[M]>
where
    S: Clone + Eq + std::hash::Hash,
    M: Clone + Default,
{
    all.iter()
        .map(|&e| family.get_or_create_owned(&labels(e)))
        .collect()
}

/// Counters of one legacy HTTP service.
#[derive(Debug)]
pub struct HttpMetrics {
    results: Box<[Counter]>,
    pub polls: Counter,
    /// URLs currently backing off; refreshed when metrics are collected.
    pub urls_down: Gauge,
}

impl HttpMetrics {
    pub fn count(&self, result: HttpResult) {
        self.results[result as usize].inc();
    }
}

/// Per-route counters, made by [`Metrics::route`] and held by the route.
#[derive(Debug)]
pub struct RouteMetrics {
    pub connections: Gauge,
    pub connections_total: Counter,
    events_published: Box<[Counter]>,
    events_lost: Box<[Counter]>,
    pub replies_relayed: Counter,
    closes: Box<[Counter]>,
    denials: Box<[Counter]>,
    rate_limited: Box<[Counter]>,
}

impl RouteMetrics {
    /// A client message over the route's `rate_limit`. Also counted, for dashboards made
    /// before this counter, as `refract_admission_rejections_total{reason="rate_limited"}`
    /// (deprecated: that family is about refused connections).
    pub fn rate_limited(&self, action: RateLimited) {
        self.rate_limited[action as usize].inc();
        self.denied(Denial::RateLimited);
    }

    pub fn published(&self, kind: EventKind, n: u64) {
        self.events_published[kind as usize].inc_by(n);
    }

    pub fn lost(&self, reason: Loss, n: u64) {
        self.events_lost[reason as usize].inc_by(n);
    }

    pub fn denied(&self, reason: Denial) {
        self.denials[reason as usize].inc();
    }

    pub fn closed(&self, reason: CloseReason) {
        self.closes[reason as usize].inc();
    }
}

/// Counters of the Channels endpoint.
pub struct ChannelMetrics {
    pub sockets: Gauge,
    /// Sockets opened; counted, but not registered (it never was rendered).
    pub sockets_total: Counter,
    pub joined: Gauge,
    joins: Box<[Counter]>,
    /// Client pushes and the gateway's own publishes (presence, lifecycle, clock) taken by Redis.
    pub publishes: Counter,
    pub publishes_lost: Counter,
    /// Messages received from `to:*`, and frames fanned out from them to sockets.
    pub messages_in: Counter,
    pub frames_out: Counter,
    /// Presence entries of dead nodes removed by this node's sweeps.
    pub presence_swept: Counter,
    drops: Box<[Counter]>,
    closes: Box<[Counter]>,
}

impl ChannelMetrics {
    fn new(r: &mut Registry) -> Self {
        register! { r:
            sockets = "refract_channels_sockets", "Open Channels sockets";
            sockets_total = "refract_channels_sockets_accepted", "Channels sockets accepted";
            joined = "refract_channels_joined", "Topic memberships of open sockets";
            joins = "refract_channels_joins", "phx_join requests, by result";
            publishes = "refract_channels_publishes", "Publishes to Redis from Channels";
            publishes_lost = "refract_channels_publishes_lost",
                "Channels publishes Redis did not take";
            messages_in = "refract_channels_messages_in", "Messages received on to:<topic>:<event>";
            frames_out = "refract_channels_frames_out", "Frames fanned out to sockets";
            presence_swept = "refract_channels_presence_swept",
                "Presence entries of dead nodes this node removed";
            drops = "refract_channels_dropped", "Channels frames dropped, by reason";
            closes = "refract_channels_closed", "Channels sockets closed, by reason";
        }
        Self {
            sockets,
            sockets_total,
            joined,
            joins: each(&joins, JoinResult::ALL, |e| e),
            publishes,
            publishes_lost,
            messages_in,
            frames_out,
            presence_swept,
            drops: each(&drops, ChannelDrop::ALL, |e| e),
            closes: each(&closes, CloseReason::ALL, |e| e),
        }
    }

    pub fn join(&self, result: JoinResult) {
        self.joins[result as usize].inc();
    }

    pub fn dropped(&self, reason: ChannelDrop) {
        self.drops[reason as usize].inc();
    }

    pub fn closed(&self, reason: CloseReason) {
        self.closes[reason as usize].inc();
    }
}

/// The families with a series per route or per legacy HTTP service.
struct RouteFamilies {
    open: Family<RouteLabels, Gauge>,
    accepted: Family<RouteLabels, Counter>,
    published: Family<(RouteLabels, EventKind), Counter>,
    lost: Family<(RouteLabels, Loss), Counter>,
    relayed: Family<RouteLabels, Counter>,
    closed: Family<(RouteLabels, CloseReason), Counter>,
    denials: Family<(RouteLabels, Denial), Counter>,
    rate_limited: Family<(RouteLabels, RateLimited), Counter>,
    requests: Family<(ServiceLabels, HttpResult), Counter>,
    polls: Family<ServiceLabels, Counter>,
    urls_down: Family<ServiceLabels, Gauge>,
}

pub struct Metrics {
    /// This gateway's own, so that gateways in one process (the tests) keep their own counts.
    registry: Registry,
    families: RouteFamilies,
    pub channels: ChannelMetrics,
    replies_dropped: Box<[Counter]>,
    rejections: Box<[Counter]>,
    /// Publishes that are not about one route (`notconnected`) and were lost.
    pub other_lost: Counter,
    pub notconnected_sent: Counter,
    pub subscriber_connects: Counter,
    pub canary_failures: Counter,
    pub publish_batches: Counter,
    /// Events waiting in the publish queues; refreshed when metrics are collected.
    pub publish_queued: Gauge,
    /// The last canary's round trip through the response channel, in seconds.
    pub canary_round_trip: Gauge<f64, AtomicU64>,
    pub ready: Gauge,
    /// TLS handshakes on the listener that failed or timed out.
    pub tls_handshake_failures: Counter,
    handshakes_refused: Box<[Counter]>,
    tls_reloads: Box<[Counter]>,
    resubscriptions: Box<[Counter]>,
    pub master_changes: Counter,
    master: Family<AddressLabels, Gauge>,
    config_reloads: Box<[Counter]>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every family, registered; the per-route ones have no series until [`Metrics::route`].
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let r = &mut registry;
        let channels = ChannelMetrics::new(r);
        register! { r:
            ready = "refract_ready", "1 while the node's data plane works";
            open = "refract_connections", "Open client connections";
            accepted = "refract_connections_accepted", "Client connections accepted";
            closed = "refract_connections_closed", "Client connections closed, by reason";
            published = "refract_events_published",
                "Events published to service channels (one per channel)";
            lost = "refract_events_lost", "Events that could not be published, by reason";
            relayed = "refract_replies_relayed", "Service replies delivered to a client's queue";
            dropped = "refract_replies_dropped",
                "Messages on the response channel that reached no client, by reason";
            notconnected_sent = "refract_notconnected_sent",
                "notconnected answers published to services";
            other_lost = "refract_notconnected_lost",
                "notconnected answers that could not be published";
            rejections = "refract_http_rejections", "HTTP requests refused, by reason";
            denials = "refract_admission_rejections",
                "Clients refused by a route's admission rules, by reason";
            rate_limited = "refract_messages_rate_limited",
                "Client messages over the route's rate limit, by what was done";
            requests = "refract_http_requests", "Requests to legacy HTTP services, by result";
            polls = "refract_http_polls", "Polls sent to legacy HTTP services";
            urls_down = "refract_http_service_urls_backing_off",
                "URLs of a legacy HTTP service backed off after repeated failures";
            subscriber_connects = "refract_redis_subscriber_connects",
                "Times the response-channel subscription was (re)established";
            canary_failures = "refract_canary_failures", "Canaries that did not come back in time";
            publish_batches = "refract_publish_batches", "Pipelined publish batches sent to Redis";
            publish_queued = "refract_publish_queue_depth",
                "Events waiting in the publish queues (all shards)";
            canary_round_trip = "refract_canary_round_trip_seconds",
                "The last canary's round trip through the response channel";
            handshakes_refused = "refract_handshakes_refused",
                "Connections closed before their upgrade, by reason";
            tls_handshake_failures = "refract_tls_handshake_failures",
                "TLS handshakes on the listener that failed or timed out";
            tls_reloads = "refract_tls_reloads",
                "Reloads of the listener's TLS certificate, by result";
            resubscriptions = "refract_redis_resubscriptions",
                "Subscriptions to Redis made again, by reason";
            master_changes = "refract_redis_master_changes",
                "Times the sentinels named a new master and the node followed";
            master = "refract_redis_master",
                "1 for the master this node uses (sentinel mode), by address";
            config_reloads = "refract_config_reloads",
                "Config reloads on SIGHUP, by result (a refused config leaves the old in force)";
        }
        let families = RouteFamilies {
            open,
            accepted,
            published,
            lost,
            relayed,
            closed,
            denials,
            rate_limited,
            requests,
            polls,
            urls_down,
        };
        Self {
            families,
            registry,
            channels,
            replies_dropped: each(&dropped, ReplyDrop::ALL, |e| e),
            rejections: each(&rejections, Rejection::ALL, |e| e),
            other_lost,
            notconnected_sent,
            subscriber_connects,
            canary_failures,
            publish_batches,
            publish_queued,
            canary_round_trip,
            ready,
            tls_handshake_failures,
            handshakes_refused: each(&handshakes_refused, HandshakeRefusal::ALL, |e| e),
            tls_reloads: each(&tls_reloads, Reload::ALL, |e| e),
            resubscriptions: each(&resubscriptions, Resubscribe::ALL, |e| e),
            master_changes,
            master,
            config_reloads: each(&config_reloads, Reload::ALL, |e| e),
        }
    }

    /// The handles of the route at `path`: the same series each time for the same path.
    pub fn route(&self, path: &str) -> RouteMetrics {
        let f = &self.families;
        let route = RouteLabels {
            route: path.to_string(),
        };
        RouteMetrics {
            connections: f.open.get_or_create_owned(&route),
            connections_total: f.accepted.get_or_create_owned(&route),
            events_published: each(&f.published, &EventKind::ALL, |e| (route.clone(), e)),
            events_lost: each(&f.lost, Loss::ALL, |e| (route.clone(), e)),
            replies_relayed: f.relayed.get_or_create_owned(&route),
            closes: each(&f.closed, CloseReason::ALL, |e| (route.clone(), e)),
            denials: each(&f.denials, Denial::ALL, |e| (route.clone(), e)),
            rate_limited: each(&f.rate_limited, RateLimited::ALL, |e| (route.clone(), e)),
        }
    }

    /// The handles of the legacy HTTP service `service` of the route at `route`.
    pub fn http_service(&self, route: &str, service: &str) -> HttpMetrics {
        let f = &self.families;
        let service = ServiceLabels {
            route: route.to_string(),
            service: service.to_string(),
        };
        HttpMetrics {
            results: each(&f.requests, HttpResult::ALL, |e| (service.clone(), e)),
            polls: f.polls.get_or_create_owned(&service),
            urls_down: f.urls_down.get_or_create_owned(&service),
        }
    }

    pub fn config_reloaded(&self, result: Reload) {
        self.config_reloads[result as usize].inc();
    }

    pub fn handshake_refused(&self, reason: HandshakeRefusal) {
        self.handshakes_refused[reason as usize].inc();
    }

    pub fn tls_reloaded(&self, result: Reload) {
        self.tls_reloads[result as usize].inc();
    }

    pub fn resubscribed(&self, reason: Resubscribe) {
        self.resubscriptions[reason as usize].inc();
    }

    /// Shows `address` as the master in use, and no other.
    pub fn set_master(&self, address: &str) {
        self.master.clear();
        let labels = AddressLabels {
            address: address.to_string(),
        };
        self.master.get_or_create(&labels).set(1);
    }

    pub fn reply_dropped(&self, reason: ReplyDrop) {
        self.replies_dropped[reason as usize].inc();
    }

    pub fn rejected(&self, reason: Rejection) {
        self.rejections[reason as usize].inc();
    }

    /// Prometheus text exposition format, version 0.0.4 ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        enc::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
