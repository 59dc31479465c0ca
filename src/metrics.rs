//! Every metric the gateway keeps, registered here and rendered as Prometheus text.
//!
//! Counters are plain atomics indexed by small label enums, so the hot path pays one relaxed
//! add. Labels are configured route names or fixed reason codes, never user input.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Defines a label enum with its wire codes and the list of all values.
macro_rules! label_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $code:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name { $($variant),+ }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $code),+ }
            }
        }
    };
}

label_enum!(
    /// Why a message on the response channel did not reach a client.
    ReplyDrop {
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
);

impl From<crate::prism::ReplyError> for ReplyDrop {
    fn from(e: crate::prism::ReplyError) -> Self {
        use crate::prism::ReplyError as E;
        match e {
            E::TooLarge => Self::TooLarge,
            E::InvalidJson => Self::InvalidJson,
            E::WrongType => Self::WrongType,
            E::MissingField(_) => Self::MissingField,
            E::UnknownType => Self::UnknownType,
            E::InvalidBase64 => Self::InvalidBase64,
            E::InvalidCloseCode => Self::InvalidCloseCode,
        }
    }
}

label_enum!(
    /// Why an event reached no service: Redis was unreachable, the node was shutting down, the
    /// PUBLISH found no subscriber on the channel, or the client was over its rate limit.
    Loss {
        RedisUnavailable => "redis_unavailable",
        Shutdown => "shutdown",
        NoSubscriber => "no_subscriber",
        RateLimited => "rate_limited",
    }
);

label_enum!(
    /// How a client connection ended.
    CloseReason {
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
    }
);

label_enum!(
    /// Why a client was refused admission to a route (or, for `rate_limited`, cut off after).
    Denial {
        BadToken => "bad_token",
        Expired => "expired",
        Origin => "origin",
        IpDenied => "ip_denied",
        TooManyConnections => "too_many_connections",
        HookDenied => "hook_denied",
        HookError => "hook_error",
        RateLimited => "rate_limited",
    }
);

label_enum!(
    /// Why an HTTP request was refused.
    Rejection {
        NotFound => "not_found",
        UpgradeRequired => "upgrade_required",
        BadUpgrade => "bad_upgrade",
        NotReady => "not_ready",
        TooManyConnections => "too_many_connections",
    }
);

label_enum!(
    /// The outcome of one request to a legacy HTTP service.
    HttpResult {
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
);

/// Counters of one legacy HTTP service.
pub struct HttpMetrics {
    pub route: String,
    pub service: String,
    results: Box<[AtomicU64]>,
    pub polls: AtomicU64,
    /// URLs currently backing off; refreshed when metrics are collected.
    pub urls_down: AtomicI64,
}

impl HttpMetrics {
    pub fn count(&self, result: HttpResult) {
        self.results[result as usize].fetch_add(1, Relaxed);
    }

    pub fn get(&self, result: HttpResult) -> u64 {
        self.results[result as usize].load(Relaxed)
    }
}

fn counters(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

/// Per-route counters; the route's index in [`Metrics::routes`] is its id.
pub struct RouteMetrics {
    pub name: String,
    pub connections: AtomicI64,
    pub connections_total: AtomicU64,
    events_published: Box<[AtomicU64]>,
    events_lost: Box<[AtomicU64]>,
    pub replies_relayed: AtomicU64,
    closes: Box<[AtomicU64]>,
    denials: Box<[AtomicU64]>,
}

impl RouteMetrics {
    fn new(name: String) -> Self {
        Self {
            name,
            connections: AtomicI64::new(0),
            connections_total: AtomicU64::new(0),
            events_published: counters(crate::prism::EventKind::ALL.len()),
            events_lost: counters(Loss::ALL.len()),
            replies_relayed: AtomicU64::new(0),
            closes: counters(CloseReason::ALL.len()),
            denials: counters(Denial::ALL.len()),
        }
    }

    pub fn published(&self, kind: crate::prism::EventKind, n: u64) {
        self.events_published[kind as usize].fetch_add(n, Relaxed);
    }

    pub fn lost(&self, reason: Loss, n: u64) {
        self.events_lost[reason as usize].fetch_add(n, Relaxed);
    }

    pub fn denied(&self, reason: Denial) {
        self.denials[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn closed(&self, reason: CloseReason) {
        self.closes[reason as usize].fetch_add(1, Relaxed);
    }
}

label_enum!(
    /// The outcome of a `phx_join`.
    JoinResult {
        Ok => "ok",
        Unauthorized => "unauthorized",
        Forbidden => "forbidden",
        InvalidTopic => "invalid_topic",
        TooManyChannels => "too_many_channels",
        Unavailable => "unavailable",
    }
);

label_enum!(
    /// Why a Channels frame went nowhere.
    ChannelDrop {
        BadFrame => "bad_frame",
        UnmatchedTopic => "unmatched_topic",
        EmptyPayload => "empty_payload",
        SlowClient => "slow_client",
        NameTooLong => "name_too_long",
        ReservedEvent => "reserved_event",
    }
);

/// Counters of the Channels endpoint.
pub struct ChannelMetrics {
    pub sockets: AtomicI64,
    pub sockets_total: AtomicU64,
    pub joined: AtomicI64,
    joins: Box<[AtomicU64]>,
    /// Client pushes and the gateway's own publishes (presence, lifecycle, clock) taken by Redis.
    pub publishes: AtomicU64,
    pub publishes_lost: AtomicU64,
    /// Messages received from `to:*`, and frames fanned out from them to sockets.
    pub messages_in: AtomicU64,
    pub frames_out: AtomicU64,
    /// Presence entries of dead nodes removed by this node's sweeps.
    pub presence_swept: AtomicU64,
    drops: Box<[AtomicU64]>,
    closes: Box<[AtomicU64]>,
}

impl ChannelMetrics {
    fn new() -> Self {
        Self {
            sockets: AtomicI64::new(0),
            sockets_total: AtomicU64::new(0),
            joined: AtomicI64::new(0),
            joins: counters(JoinResult::ALL.len()),
            publishes: AtomicU64::new(0),
            publishes_lost: AtomicU64::new(0),
            messages_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            presence_swept: AtomicU64::new(0),
            drops: counters(ChannelDrop::ALL.len()),
            closes: counters(CloseReason::ALL.len()),
        }
    }

    pub fn join(&self, result: JoinResult) {
        self.joins[result as usize].fetch_add(1, Relaxed);
    }

    pub fn dropped(&self, reason: ChannelDrop) {
        self.drops[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn closed(&self, reason: CloseReason) {
        self.closes[reason as usize].fetch_add(1, Relaxed);
    }

    fn render(&self, out: &mut String) {
        header(
            out,
            "refract_channels_sockets",
            "gauge",
            "Open Channels sockets",
        );
        sample(
            out,
            "refract_channels_sockets",
            &[],
            self.sockets.load(Relaxed),
        );
        header(
            out,
            "refract_channels_joined",
            "gauge",
            "Topic memberships of open sockets",
        );
        sample(
            out,
            "refract_channels_joined",
            &[],
            self.joined.load(Relaxed),
        );
        header(
            out,
            "refract_channels_joins_total",
            "counter",
            "phx_join requests, by result",
        );
        for r in JoinResult::ALL {
            let v = self.joins[*r as usize].load(Relaxed);
            sample(
                out,
                "refract_channels_joins_total",
                &[("result", r.as_str())],
                v,
            );
        }
        header(
            out,
            "refract_channels_publishes_total",
            "counter",
            "Publishes to Redis from Channels",
        );
        sample(
            out,
            "refract_channels_publishes_total",
            &[],
            self.publishes.load(Relaxed),
        );
        header(
            out,
            "refract_channels_publishes_lost_total",
            "counter",
            "Channels publishes Redis did not take",
        );
        sample(
            out,
            "refract_channels_publishes_lost_total",
            &[],
            self.publishes_lost.load(Relaxed),
        );
        header(
            out,
            "refract_channels_messages_in_total",
            "counter",
            "Messages received on to:<topic>:<event>",
        );
        sample(
            out,
            "refract_channels_messages_in_total",
            &[],
            self.messages_in.load(Relaxed),
        );
        header(
            out,
            "refract_channels_frames_out_total",
            "counter",
            "Frames fanned out to sockets",
        );
        sample(
            out,
            "refract_channels_frames_out_total",
            &[],
            self.frames_out.load(Relaxed),
        );
        let swept = "refract_channels_presence_swept_total";
        header(
            out,
            swept,
            "counter",
            "Presence entries of dead nodes this node removed",
        );
        sample(out, swept, &[], self.presence_swept.load(Relaxed));
        header(
            out,
            "refract_channels_dropped_total",
            "counter",
            "Channels frames dropped, by reason",
        );
        for r in ChannelDrop::ALL {
            let v = self.drops[*r as usize].load(Relaxed);
            sample(
                out,
                "refract_channels_dropped_total",
                &[("reason", r.as_str())],
                v,
            );
        }
        header(
            out,
            "refract_channels_closed_total",
            "counter",
            "Channels sockets closed, by reason",
        );
        for r in CloseReason::ALL {
            let v = self.closes[*r as usize].load(Relaxed);
            sample(
                out,
                "refract_channels_closed_total",
                &[("reason", r.as_str())],
                v,
            );
        }
    }
}

pub struct Metrics {
    pub routes: Vec<RouteMetrics>,
    pub channels: ChannelMetrics,
    pub http: Vec<HttpMetrics>,
    replies_dropped: Box<[AtomicU64]>,
    rejections: Box<[AtomicU64]>,
    /// Publishes that are not about one route (`notconnected`) and were lost.
    pub other_lost: AtomicU64,
    pub notconnected_sent: AtomicU64,
    pub subscriber_connects: AtomicU64,
    pub canary_failures: AtomicU64,
    pub publish_batches: AtomicU64,
    pub ready: AtomicI64,
}

impl Metrics {
    /// `http_services` are (route, service) names, in the order of their metrics index.
    pub fn new(
        route_names: impl IntoIterator<Item = String>,
        http_services: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        Self {
            routes: route_names.into_iter().map(RouteMetrics::new).collect(),
            channels: ChannelMetrics::new(),
            http: http_services
                .into_iter()
                .map(|(route, service)| HttpMetrics {
                    route,
                    service,
                    results: counters(HttpResult::ALL.len()),
                    polls: AtomicU64::new(0),
                    urls_down: AtomicI64::new(0),
                })
                .collect(),
            replies_dropped: counters(ReplyDrop::ALL.len()),
            rejections: counters(Rejection::ALL.len()),
            other_lost: AtomicU64::new(0),
            notconnected_sent: AtomicU64::new(0),
            subscriber_connects: AtomicU64::new(0),
            canary_failures: AtomicU64::new(0),
            publish_batches: AtomicU64::new(0),
            ready: AtomicI64::new(0),
        }
    }

    pub fn reply_dropped(&self, reason: ReplyDrop) {
        self.replies_dropped[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn rejected(&self, reason: Rejection) {
        self.rejections[reason as usize].fetch_add(1, Relaxed);
    }

    /// Prometheus text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        self.channels.render(&mut out);
        header(
            &mut out,
            "refract_ready",
            "gauge",
            "1 while the node's data plane works",
        );
        sample(&mut out, "refract_ready", &[], self.ready.load(Relaxed));

        header(
            &mut out,
            "refract_connections",
            "gauge",
            "Open client connections",
        );
        for r in &self.routes {
            sample(
                &mut out,
                "refract_connections",
                &[("route", &r.name)],
                r.connections.load(Relaxed),
            );
        }
        header(
            &mut out,
            "refract_connections_accepted_total",
            "counter",
            "Client connections accepted",
        );
        for r in &self.routes {
            sample(
                &mut out,
                "refract_connections_accepted_total",
                &[("route", &r.name)],
                r.connections_total.load(Relaxed),
            );
        }
        header(
            &mut out,
            "refract_connections_closed_total",
            "counter",
            "Client connections closed, by reason",
        );
        for r in &self.routes {
            for reason in CloseReason::ALL {
                sample(
                    &mut out,
                    "refract_connections_closed_total",
                    &[("route", &r.name), ("reason", reason.as_str())],
                    r.closes[*reason as usize].load(Relaxed),
                );
            }
        }
        header(
            &mut out,
            "refract_events_published_total",
            "counter",
            "Events published to service channels (one per channel)",
        );
        for r in &self.routes {
            for kind in crate::prism::EventKind::ALL {
                sample(
                    &mut out,
                    "refract_events_published_total",
                    &[("route", &r.name), ("type", kind.as_str())],
                    r.events_published[kind as usize].load(Relaxed),
                );
            }
        }
        header(
            &mut out,
            "refract_events_lost_total",
            "counter",
            "Events that could not be published, by reason",
        );
        for r in &self.routes {
            for reason in Loss::ALL {
                sample(
                    &mut out,
                    "refract_events_lost_total",
                    &[("route", &r.name), ("reason", reason.as_str())],
                    r.events_lost[*reason as usize].load(Relaxed),
                );
            }
        }
        header(
            &mut out,
            "refract_replies_relayed_total",
            "counter",
            "Service replies delivered to a client's queue",
        );
        for r in &self.routes {
            sample(
                &mut out,
                "refract_replies_relayed_total",
                &[("route", &r.name)],
                r.replies_relayed.load(Relaxed),
            );
        }
        header(
            &mut out,
            "refract_replies_dropped_total",
            "counter",
            "Messages on the response channel that reached no client, by reason",
        );
        for reason in ReplyDrop::ALL {
            sample(
                &mut out,
                "refract_replies_dropped_total",
                &[("reason", reason.as_str())],
                self.replies_dropped[*reason as usize].load(Relaxed),
            );
        }
        header(
            &mut out,
            "refract_notconnected_sent_total",
            "counter",
            "notconnected answers published to services",
        );
        sample(
            &mut out,
            "refract_notconnected_sent_total",
            &[],
            self.notconnected_sent.load(Relaxed),
        );
        header(
            &mut out,
            "refract_notconnected_lost_total",
            "counter",
            "notconnected answers that could not be published",
        );
        sample(
            &mut out,
            "refract_notconnected_lost_total",
            &[],
            self.other_lost.load(Relaxed),
        );
        header(
            &mut out,
            "refract_http_rejections_total",
            "counter",
            "HTTP requests refused, by reason",
        );
        for reason in Rejection::ALL {
            sample(
                &mut out,
                "refract_http_rejections_total",
                &[("reason", reason.as_str())],
                self.rejections[*reason as usize].load(Relaxed),
            );
        }
        header(
            &mut out,
            "refract_admission_rejections_total",
            "counter",
            "Clients refused by a route's admission rules, by reason",
        );
        for r in &self.routes {
            for reason in Denial::ALL {
                let labels = [("route", r.name.as_str()), ("reason", reason.as_str())];
                let value = r.denials[*reason as usize].load(Relaxed);
                sample(
                    &mut out,
                    "refract_admission_rejections_total",
                    &labels,
                    value,
                );
            }
        }
        header(
            &mut out,
            "refract_http_requests_total",
            "counter",
            "Requests to legacy HTTP services, by result",
        );
        for h in &self.http {
            for result in HttpResult::ALL {
                let labels = [
                    ("route", &*h.route),
                    ("service", &*h.service),
                    ("result", result.as_str()),
                ];
                sample(
                    &mut out,
                    "refract_http_requests_total",
                    &labels,
                    h.get(*result),
                );
            }
        }
        header(
            &mut out,
            "refract_http_polls_total",
            "counter",
            "Polls sent to legacy HTTP services",
        );
        for h in &self.http {
            let labels = [("route", &*h.route), ("service", &*h.service)];
            sample(
                &mut out,
                "refract_http_polls_total",
                &labels,
                h.polls.load(Relaxed),
            );
        }
        header(
            &mut out,
            "refract_http_service_urls_backing_off",
            "gauge",
            "URLs of a legacy HTTP service backed off after repeated failures",
        );
        for h in &self.http {
            let labels = [("route", &*h.route), ("service", &*h.service)];
            sample(
                &mut out,
                "refract_http_service_urls_backing_off",
                &labels,
                h.urls_down.load(Relaxed),
            );
        }
        header(
            &mut out,
            "refract_redis_subscriber_connects_total",
            "counter",
            "Times the response-channel subscription was (re)established",
        );
        sample(
            &mut out,
            "refract_redis_subscriber_connects_total",
            &[],
            self.subscriber_connects.load(Relaxed),
        );
        header(
            &mut out,
            "refract_canary_failures_total",
            "counter",
            "Canaries that did not come back in time",
        );
        sample(
            &mut out,
            "refract_canary_failures_total",
            &[],
            self.canary_failures.load(Relaxed),
        );
        header(
            &mut out,
            "refract_publish_batches_total",
            "counter",
            "Pipelined publish batches sent to Redis",
        );
        sample(
            &mut out,
            "refract_publish_batches_total",
            &[],
            self.publish_batches.load(Relaxed),
        );
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"");
            for c in v.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labelled_counters() {
        let m = Metrics::new(["/quotes".to_string()], []);
        m.routes[0].published(crate::prism::EventKind::Message, 3);
        m.reply_dropped(ReplyDrop::InvalidJson);
        m.routes[0].closed(CloseReason::SlowClient);
        let text = m.render();
        assert!(
            text.contains("refract_events_published_total{route=\"/quotes\",type=\"message\"} 3\n")
        );
        assert!(text.contains("refract_replies_dropped_total{reason=\"invalid_json\"} 1\n"));
        assert!(text.contains(
            "refract_connections_closed_total{route=\"/quotes\",reason=\"slow_client\"} 1\n"
        ));
        assert!(text.contains("# TYPE refract_connections gauge\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        sample(&mut out, "m", &[("route", "/a\"b\\")], 1);
        assert_eq!(out, "m{route=\"/a\\\"b\\\\\"} 1\n");
    }
}
