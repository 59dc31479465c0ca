//! Configuration: the TOML file (plus `REFRACT__*` environment overrides) as typed data.
//!
//! Loading is in two steps so that every error names its key: serde turns the merged sources into
//! [`Settings`] (rejecting unknown keys and wrong types), then [`Settings::validate`] checks the
//! values. Both happen before anything binds.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// Paths the gateway serves itself; a route may not shadow them.
pub const RESERVED_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// A configuration problem, always tied to the file and the key it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: String::new(),
            key: key.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// This node's id: names its response channel, so it must be unique among nodes sharing a
    /// Redis. Absent: generated at start.
    #[serde(default)]
    pub node_id: Option<String>,
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub redis: RedisSettings,
    #[serde(default)]
    pub routes: BTreeMap<String, RouteSettings>,
    /// The Phoenix Channels endpoint; absent = Channels off.
    pub channels: Option<ChannelsSettings>,
}

/// `[channels]`: a Phoenix Channels endpoint bridged to Redis (docs/channels.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelsSettings {
    /// phoenix.js connects to `<endpoint>/websocket`.
    pub endpoint: String,
    /// HS256 secret for join tokens; prefer `jwt_secret_env`.
    pub jwt_secret: Option<String>,
    pub jwt_secret_env: Option<String>,
    /// Or verify with a public key (then the token endpoint cannot sign).
    pub jwt_public_key_file: Option<PathBuf>,
    pub jwt_algorithm: Option<String>,
    pub jwt_issuer: Option<crate::auth::OneOrMany>,
    pub jwt_audience: Option<crate::auth::OneOrMany>,
    /// Lifetime of tokens minted by the token endpoint.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    pub max_topics_per_socket: usize,
    /// A socket that sends nothing (not even a heartbeat) for this long is closed with 1001.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Reply ok to each client push once published (or error `unavailable`); Phoenix's default
    /// is no reply.
    pub ack_pushes: bool,
    /// Frames queued for one socket; a socket that lets it fill is closed with 1013.
    pub outbound_queue: usize,
    /// Largest client frame.
    pub max_frame_size: usize,
    /// Where join/leave notes go for backends that want them; empty = none.
    pub lifecycle_channel: String,
    pub token_endpoint: Option<TokenEndpointSettings>,
    pub system: Option<SystemTopicSettings>,
    pub presence: PresenceSettings,
}

/// `[channels.presence]`: presence across nodes (docs/channels.md, "Presence").
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceSettings {
    /// Track presence at all. Off: no presence entries, diffs or sweeps, and `presence_state`
    /// is `{}`; for broadcast topics with many members, where every join would otherwise be
    /// announced to every member.
    pub enabled: bool,
    /// A node's liveness key lives this long unless refreshed; after it, the node's members
    /// are removed by the others.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How often a node refreshes its liveness key and sweeps dead nodes' entries.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// Most metas listed in one `presence_state`.
    pub max_listed: usize,
    /// Largest `meta` object a join may add to its presence meta (bytes of JSON).
    pub max_meta_size: usize,
    /// How often the `admin` topic gets the gateway's stats.
    #[serde(with = "humantime_serde")]
    pub admin_interval: Duration,
}

impl Default for PresenceSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl: Duration::from_secs(15),
            refresh_interval: Duration::from_secs(5),
            max_listed: 1000,
            max_meta_size: 1024,
            admin_interval: Duration::from_secs(5),
        }
    }
}

impl Default for ChannelsSettings {
    fn default() -> Self {
        Self {
            endpoint: "/socket".into(),
            jwt_secret: None,
            jwt_secret_env: None,
            jwt_public_key_file: None,
            jwt_algorithm: None,
            jwt_issuer: None,
            jwt_audience: None,
            token_ttl: Duration::from_secs(3600),
            max_topics_per_socket: 100,
            idle_timeout: Duration::from_secs(60),
            ack_pushes: false,
            outbound_queue: 1024,
            max_frame_size: 1024 * 1024,
            lifecycle_channel: "refract:channels:lifecycle".into(),
            token_endpoint: None,
            system: None,
            presence: PresenceSettings::default(),
        }
    }
}

impl ChannelsSettings {
    /// The token settings in the shape the shared JWT code takes.
    pub fn jwt(&self) -> crate::auth::JwtSettings {
        crate::auth::JwtSettings {
            secret: self.jwt_secret.clone(),
            secret_env: self.jwt_secret_env.clone(),
            public_key_file: self.jwt_public_key_file.clone(),
            algorithm: self.jwt_algorithm.clone(),
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            leeway: None,
        }
    }

    /// `<endpoint>/websocket`.
    pub fn websocket_path(&self) -> String {
        format!("{}/websocket", self.endpoint.trim_end_matches('/'))
    }
}

/// `[channels.token_endpoint]`: Tangram's `POST /token`, authenticated.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenEndpointSettings {
    pub path: String,
    /// Environment variable with the API key callers must send as `Authorization: Bearer`.
    pub api_key_env: Option<String>,
    /// No API key at all: development only, logged loudly at start.
    pub open: bool,
    /// Origins allowed to call it from a browser (CORS); never `*`.
    pub cors_origins: Vec<String>,
}

impl Default for TokenEndpointSettings {
    fn default() -> Self {
        Self {
            path: "/token".into(),
            api_key_env: None,
            open: false,
            cors_origins: Vec::new(),
        }
    }
}

/// `[channels.system]`: the `system` topic's clock.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemTopicSettings {
    /// Publish `datetime` on `to:system:datetime` this often (one node at a time).
    #[serde(with = "humantime_serde")]
    pub datetime_interval: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address of the one port that serves routes, health and metrics.
    pub listen: SocketAddr,
    /// Peers whose `X-Forwarded-For` is believed. Empty: the TCP peer is always the client.
    pub trusted_proxies: Vec<IpNet>,
    /// Admission defaults for every route; a route may set its own.
    #[serde(flatten)]
    pub admission: AdmissionSettings,
    /// Live WebSocket connections on this node; upgrades past it get 503.
    pub max_connections: usize,
    /// Largest client message (after reassembly of fragments); larger closes with 1009.
    pub max_message_size: usize,
    /// Frames waiting to be written to one client; a client that lets it fill is closed with 1013.
    pub outbound_queue: usize,
    /// Bytes queued for one client; a client that lets it fill is closed with 1013.
    pub outbound_queue_bytes: usize,
    /// Bytes of each connection's read buffer, held for as long as it is open: most of an idle
    /// connection's memory. Larger frames are read in pieces of this size.
    pub read_buffer: usize,
    /// How often an idle client is pinged.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A client that sends nothing (not even a pong) for this long is closed with 1001, and
    /// services get its `disconnect`: this is how a vanished peer is detected.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How long a write to one client may take before the client is considered stuck.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// How long shutdown waits for clients to close and events to drain.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            trusted_proxies: Vec::new(),
            admission: AdmissionSettings::default(),
            max_connections: 20_000,
            max_message_size: 64 * 1024,
            outbound_queue: 1024,
            outbound_queue_bytes: 1024 * 1024,
            read_buffer: 512,
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    pub url: String,
    /// Prefix of the per-node response channel `<response_channel>.<node_id>`.
    pub response_channel: String,
    /// Parallel publishing connections; each carries pipelined batches, and one connection's
    /// events always use the same one, which keeps them in order.
    pub publishers: usize,
    /// Events waiting to be published per publishing connection before clients feel backpressure.
    pub publish_queue: usize,
    /// How often the node sends itself a canary through its response channel.
    #[serde(with = "humantime_serde")]
    pub canary_interval: Duration,
    /// How long a canary may take to come back before the node turns not-ready and re-subscribes.
    #[serde(with = "humantime_serde")]
    pub canary_timeout: Duration,
    /// Timeout for connecting to Redis and for one publish batch.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Largest service reply accepted on the response channel.
    pub max_reply_size: usize,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            response_channel: "refract.responses".into(),
            publishers: 2,
            publish_queue: 4096,
            canary_interval: Duration::from_secs(2),
            canary_timeout: Duration::from_secs(3),
            command_timeout: Duration::from_secs(3),
            max_reply_size: 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSettings {
    #[serde(default)]
    pub services: BTreeMap<String, ServiceSettings>,
    /// Live connections on this route (on this node); past it, upgrades get 503.
    pub max_connections: Option<usize>,
    /// Largest client message on this route; default `server.max_message_size`.
    pub max_message_size: Option<usize>,
    /// Messages per second per connection; absent = unlimited.
    pub rate_limit: Option<RateLimit>,
    /// Overrides of the `[server]` admission defaults, key by key.
    #[serde(flatten)]
    pub admission: AdmissionSettings,
    /// Who may connect: a JWT, an HTTP hook, or both.
    pub auth: Option<AuthSettings>,
}

/// Checks made before the upgrade, from the request alone. In `[server]` they are defaults; in
/// a route they override the default they name.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AdmissionSettings {
    /// `Origin` values allowed: exact (`https://app.example.com`) or a host suffix pattern
    /// (`*.example.com`, any scheme; `https://*.example.com`). Absent = any. A request without
    /// `Origin` (not a browser) is not checked.
    pub allowed_origins: Option<Vec<String>>,
    /// If set, only these client addresses may connect.
    pub allow_ips: Option<Vec<IpNet>>,
    /// These client addresses may not connect (checked before `allow_ips`).
    pub deny_ips: Option<Vec<IpNet>>,
    /// Connections from one client address on this node; past it, 429.
    pub max_connections_per_ip: Option<usize>,
}

impl AdmissionSettings {
    /// `self` where set, else `defaults`.
    pub fn or(&self, defaults: &AdmissionSettings) -> AdmissionSettings {
        AdmissionSettings {
            allowed_origins: self
                .allowed_origins
                .clone()
                .or_else(|| defaults.allowed_origins.clone()),
            allow_ips: self
                .allow_ips
                .clone()
                .or_else(|| defaults.allow_ips.clone()),
            deny_ips: self.deny_ips.clone().or_else(|| defaults.deny_ips.clone()),
            max_connections_per_ip: self
                .max_connections_per_ip
                .or(defaults.max_connections_per_ip),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub jwt: Option<crate::auth::JwtSettings>,
    /// Query parameter that may carry the token (default `token`).
    pub token_query_param: Option<String>,
    pub connect_hook: Option<HookSettings>,
}

impl AuthSettings {
    pub fn token_query_param(&self) -> &str {
        self.token_query_param.as_deref().unwrap_or("token")
    }
}

/// An HTTP endpoint asked, before the upgrade, whether a client may connect.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookSettings {
    pub url: String,
    #[serde(default = "HookSettings::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "HookSettings::default_max_in_flight")]
    pub max_in_flight: usize,
    /// Request headers passed on to the hook (lower case).
    #[serde(default = "HookSettings::default_headers")]
    pub forward_headers: Vec<String>,
}

impl HookSettings {
    fn default_timeout() -> Duration {
        Duration::from_secs(2)
    }
    fn default_max_in_flight() -> usize {
        64
    }
    fn default_headers() -> Vec<String> {
        ["authorization", "cookie", "origin", "user-agent"]
            .map(String::from)
            .to_vec()
    }
}

/// A token bucket per connection: `per_second` tokens refill each second, up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    /// Default: one second's worth, at least 1.
    pub burst: Option<f64>,
    /// What to do with a message over the limit.
    #[serde(default)]
    pub action: RateLimitAction,
}

impl RateLimit {
    pub fn burst(&self) -> f64 {
        self.burst.unwrap_or(self.per_second.max(1.0))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitAction {
    /// Close the connection with 1008 `rate limit`.
    #[default]
    Close,
    /// Drop the message (counted) and keep the connection.
    Drop,
}

/// One backend service of a route. Fields are optional here so that [`Settings::validate`] can
/// say which one is missing, for which service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSettings {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `type = "redis"`: the channel the service listens on.
    pub request_channel: Option<String>,
    /// `type = "http"`: one URL, or a list used round robin.
    pub url: Option<OneOrMany>,
    /// `type = "http"`: extra request headers (for example an API key).
    pub headers: Option<BTreeMap<String, String>>,
    /// `type = "http"`: per-request timeout (default 5s).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// `type = "http"`: requests in flight to this service at once (default 64).
    pub max_in_flight: Option<usize>,
    /// `type = "http"`: poll every live connection this often; absent = no polling.
    #[serde(default, with = "humantime_serde")]
    pub polling_interval: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// A service as the gateway uses it, after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Service {
    Redis { request_channel: String },
    Http(HttpService),
}

/// A legacy HTTP service, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpService {
    pub urls: Vec<reqwest::Url>,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub max_in_flight: usize,
    pub polling_interval: Option<Duration>,
}

pub const HTTP_DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub const HTTP_DEFAULT_MAX_IN_FLIGHT: usize = 64;

impl Settings {
    /// Reads `path` (TOML) and applies `REFRACT__SECTION__KEY` environment overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let with_file = |mut e: ConfigError| {
            e.file.clone_from(&file);
            e
        };
        if !path.is_file() {
            return Err(with_file(ConfigError::new(
                "(file)",
                "cannot read the file",
            )));
        }
        let built = config::Config::builder()
            .add_source(config::File::from(PathBuf::from(path)).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("REFRACT")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .map_err(|e| with_file(from_config_error(e)))?;
        let settings: Settings = built
            .try_deserialize()
            .map_err(|e| with_file(from_config_error(e)))?;
        settings.validate().map_err(with_file)?;
        Ok(settings)
    }

    /// Parses TOML text without the environment; for tests and `refract check` of inline text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let built = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(from_config_error)?;
        let settings: Settings = built.try_deserialize().map_err(from_config_error)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every value; the first problem found is returned with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(id) = &self.node_id {
            check_token("node_id", id, 64)?;
        }
        let s = &self.server;
        positive("server.max_connections", s.max_connections)?;
        positive("server.max_message_size", s.max_message_size)?;
        positive("server.outbound_queue", s.outbound_queue)?;
        positive("server.outbound_queue_bytes", s.outbound_queue_bytes)?;
        if !(READ_BUFFER_MIN..=READ_BUFFER_MAX).contains(&s.read_buffer) {
            return Err(ConfigError::new(
                "server.read_buffer",
                format!("must be between {READ_BUFFER_MIN} and {READ_BUFFER_MAX} bytes"),
            ));
        }
        nonzero("server.ping_interval", s.ping_interval)?;
        nonzero("server.idle_timeout", s.idle_timeout)?;
        if s.idle_timeout <= s.ping_interval {
            return Err(ConfigError::new(
                "server.idle_timeout",
                "must be longer than server.ping_interval, or live clients time out",
            ));
        }
        nonzero("server.write_timeout", s.write_timeout)?;
        if let Some(n) = s.admission.max_connections_per_ip {
            positive("server.max_connections_per_ip", n)?;
        }
        let r = &self.redis;
        if !r.url.starts_with("redis://") && !r.url.starts_with("unix://") {
            return Err(ConfigError::new(
                "redis.url",
                "must start with redis:// or unix://",
            ));
        }
        redis::Client::open(r.url.as_str()).map_err(|e| {
            ConfigError::new("redis.url", format!("is not a valid Redis URL ({e})"))
        })?;
        check_token("redis.response_channel", &r.response_channel, 200)?;
        positive("redis.publishers", r.publishers)?;
        positive("redis.publish_queue", r.publish_queue)?;
        positive("redis.max_reply_size", r.max_reply_size)?;
        nonzero("redis.canary_interval", r.canary_interval)?;
        nonzero("redis.canary_timeout", r.canary_timeout)?;
        nonzero("redis.command_timeout", r.command_timeout)?;

        if let Some(ch) = &self.channels {
            self.validate_channels(ch)?;
        }
        for (path, route) in &self.routes {
            let key = format!("routes.\"{path}\"");
            if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
                return Err(ConfigError::new(
                    key,
                    "a route is a URL path: it starts with '/' and has no '?', '#' or spaces",
                ));
            }
            if RESERVED_PATHS.contains(&path.as_str()) {
                return Err(ConfigError::new(
                    key,
                    "this path is reserved for the gateway itself",
                ));
            }
            if let Some(n) = route.max_connections {
                positive(&format!("{key}.max_connections"), n)?;
            }
            if let Some(n) = route.max_message_size {
                positive(&format!("{key}.max_message_size"), n)?;
            }
            if let Some(r) = route.rate_limit {
                let ok = r.per_second.is_finite()
                    && r.per_second > 0.0
                    && r.burst.is_none_or(|b| b.is_finite() && b >= 1.0);
                if !ok {
                    return Err(ConfigError::new(
                        format!("{key}.rate_limit"),
                        "per_second must be > 0 and burst >= 1",
                    ));
                }
            }
            if let Some(n) = route.admission.max_connections_per_ip {
                positive(&format!("{key}.max_connections_per_ip"), n)?;
            }
            if let Some(auth) = &route.auth {
                let akey = format!("{key}.auth");
                if auth.jwt.is_none() && auth.connect_hook.is_none() {
                    return Err(ConfigError::new(akey, "needs jwt, connect_hook, or both"));
                }
                if let Some(jwt) = &auth.jwt {
                    jwt.verifier()
                        .map_err(|e| ConfigError::new(format!("{akey}.jwt"), e.0))?;
                }
                if let Some(hook) = &auth.connect_hook {
                    let hkey = format!("{akey}.connect_hook");
                    match reqwest::Url::parse(&hook.url) {
                        Ok(u) if u.scheme() == "http" => {}
                        _ => {
                            return Err(ConfigError::new(hkey, "url must be an http:// URL"));
                        }
                    }
                    nonzero(&format!("{hkey}.timeout"), hook.timeout)?;
                    positive(&format!("{hkey}.max_in_flight"), hook.max_in_flight)?;
                }
            }
            if route.services.is_empty() {
                return Err(ConfigError::new(
                    format!("{key}.services"),
                    "a route needs at least one service",
                ));
            }
            for (name, service) in &route.services {
                let key = format!("{key}.services.{name}");
                check_token(&key, name, 100)?;
                service.resolve(&key)?;
            }
        }
        Ok(())
    }
}

impl Settings {
    fn validate_channels(&self, ch: &ChannelsSettings) -> Result<(), ConfigError> {
        let endpoint = &ch.endpoint;
        if !endpoint.starts_with('/') || endpoint.contains(['?', '#', ' ']) {
            return Err(ConfigError::new(
                "channels.endpoint",
                "must be a URL path starting with '/'",
            ));
        }
        let ws = ch.websocket_path();
        if self.routes.contains_key(&ws) || RESERVED_PATHS.contains(&ws.as_str()) {
            return Err(ConfigError::new(
                "channels.endpoint",
                format!("{ws} is already a route"),
            ));
        }
        let verifier = ch.jwt().verifier();
        verifier.map_err(|e| ConfigError::new("channels.jwt_secret", e.0))?;
        positive("channels.max_topics_per_socket", ch.max_topics_per_socket)?;
        positive("channels.outbound_queue", ch.outbound_queue)?;
        positive("channels.max_frame_size", ch.max_frame_size)?;
        nonzero("channels.idle_timeout", ch.idle_timeout)?;
        nonzero("channels.token_ttl", ch.token_ttl)?;
        if let Some(t) = &ch.token_endpoint {
            if !t.path.starts_with('/') || self.routes.contains_key(&t.path) || t.path == ws {
                return Err(ConfigError::new(
                    "channels.token_endpoint.path",
                    "must be a free URL path starting with '/'",
                ));
            }
            if ch.jwt_public_key_file.is_some() {
                return Err(ConfigError::new(
                    "channels.token_endpoint",
                    "needs jwt_secret or jwt_secret_env: a public key cannot sign tokens",
                ));
            }
            match (&t.api_key_env, t.open) {
                (None, false) => {
                    return Err(ConfigError::new(
                        "channels.token_endpoint.api_key_env",
                        "is required unless open = true",
                    ));
                }
                (Some(var), _) if std::env::var(var).map_or(true, |k| k.len() < 16) => {
                    return Err(ConfigError::new(
                        "channels.token_endpoint.api_key_env",
                        format!("environment variable {var} must hold a key of at least 16 bytes"),
                    ));
                }
                _ => {}
            }
            if t.cors_origins.iter().any(|o| o == "*") {
                return Err(ConfigError::new(
                    "channels.token_endpoint.cors_origins",
                    "\"*\" is not allowed: list the origins",
                ));
            }
        }
        let p = &ch.presence;
        nonzero("channels.presence.refresh_interval", p.refresh_interval)?;
        nonzero("channels.presence.admin_interval", p.admin_interval)?;
        positive("channels.presence.max_listed", p.max_listed)?;
        if p.ttl <= p.refresh_interval {
            return Err(ConfigError::new(
                "channels.presence.ttl",
                "must be longer than refresh_interval, or live nodes look dead",
            ));
        }
        if let Some(s) = &ch.system {
            nonzero("channels.system.datetime_interval", s.datetime_interval)?;
        }
        Ok(())
    }
}

impl ServiceSettings {
    /// The validated form of this service; `key` names it in errors.
    pub fn resolve(&self, key: &str) -> Result<Service, ConfigError> {
        let err = |m: String| ConfigError::new(key, m);
        match self.kind.as_deref() {
            None => Err(err("type is required (\"redis\" or \"http\")".into())),
            Some("redis") => {
                let http_only = [
                    ("url", self.url.is_some()),
                    ("headers", self.headers.is_some()),
                    ("timeout", self.timeout.is_some()),
                    ("max_in_flight", self.max_in_flight.is_some()),
                    ("polling_interval", self.polling_interval.is_some()),
                ];
                if let Some((name, _)) = http_only.iter().find(|(_, set)| *set) {
                    return Err(err(format!("{name} applies to type = \"http\" only")));
                }
                match self.request_channel.as_deref() {
                    None | Some("") => Err(err("request_channel is required".into())),
                    Some(channel) => Ok(Service::Redis {
                        request_channel: channel.to_owned(),
                    }),
                }
            }
            Some("http") => self.resolve_http(key).map(Service::Http),
            Some(other) => Err(err(format!(
                "type \"{other}\" is unknown (expected \"redis\" or \"http\")"
            ))),
        }
    }

    fn resolve_http(&self, key: &str) -> Result<HttpService, ConfigError> {
        let err = |m: String| ConfigError::new(key, m);
        if self.request_channel.is_some() {
            return Err(err(
                "request_channel applies to type = \"redis\" only".into()
            ));
        }
        let raw_urls = match &self.url {
            None => return Err(err("url is required".into())),
            Some(OneOrMany::One(u)) => vec![u.clone()],
            Some(OneOrMany::Many(list)) if list.is_empty() => {
                return Err(err("url must list at least one URL".into()));
            }
            Some(OneOrMany::Many(list)) => list.clone(),
        };
        let mut urls = Vec::with_capacity(raw_urls.len());
        for raw in raw_urls {
            let url = reqwest::Url::parse(&raw)
                .map_err(|e| err(format!("url \"{raw}\" is not a valid URL ({e})")))?;
            match url.scheme() {
                "http" => urls.push(url),
                "https" => {
                    return Err(err(format!(
                        "url \"{raw}\": https is not supported for legacy services; \
                         use http:// on a trusted network or terminate TLS in a local proxy"
                    )));
                }
                other => return Err(err(format!("url \"{raw}\": scheme {other} is not http"))),
            }
        }
        let mut headers = Vec::new();
        for (name, value) in self.headers.iter().flatten() {
            let ok = hyper::header::HeaderName::from_bytes(name.as_bytes()).is_ok()
                && hyper::header::HeaderValue::from_str(value).is_ok();
            if !ok {
                return Err(err(format!("headers: \"{name}\" is not a valid header")));
            }
            headers.push((name.clone(), value.clone()));
        }
        let timeout = self.timeout.unwrap_or(HTTP_DEFAULT_TIMEOUT);
        nonzero(&format!("{key}.timeout"), timeout)?;
        let max_in_flight = self.max_in_flight.unwrap_or(HTTP_DEFAULT_MAX_IN_FLIGHT);
        positive(&format!("{key}.max_in_flight"), max_in_flight)?;
        if let Some(p) = self.polling_interval {
            nonzero(&format!("{key}.polling_interval"), p)?;
        }
        Ok(HttpService {
            urls,
            headers,
            timeout,
            max_in_flight,
            polling_interval: self.polling_interval,
        })
    }
}

/// Bounds of `server.read_buffer`: below the minimum every frame header takes several reads;
/// above the maximum, idle connections would hold megabytes each.
const READ_BUFFER_MIN: usize = 64;
const READ_BUFFER_MAX: usize = 1 << 20;

fn positive(key: &str, value: usize) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(key, "must be greater than 0"));
    }
    Ok(())
}

fn nonzero(key: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::new(key, "must be longer than 0s"));
    }
    Ok(())
}

/// Names that end up inside Redis channel names: printable, no spaces or glob characters.
fn check_token(key: &str, value: &str, max: usize) -> Result<(), ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if !ok {
        return Err(ConfigError::new(
            key,
            format!("must be 1 to {max} characters of A-Z a-z 0-9 - _ . :"),
        ));
    }
    Ok(())
}

/// The `config` crate reports serde errors as text with the key inside; pull the key out so our
/// one-line format holds for them too.
fn from_config_error(e: config::ConfigError) -> ConfigError {
    let text = e.to_string();
    if text.contains("TOML parse error") {
        return toml_syntax_error(&text);
    }
    if let Some(idx) = text.find(" for key `") {
        let rest = &text[idx + " for key `".len()..];
        if let Some(end) = rest.find('`') {
            return ConfigError::new(quote_route_key(&rest[..end]), text[..idx].to_string());
        }
    }
    ConfigError::new("(file)", text)
}

/// The TOML parser's report spans several lines (location, source excerpt, caret, message); fold
/// it into one, with the offending source line standing in for the key.
fn toml_syntax_error(text: &str) -> ConfigError {
    let lines: Vec<&str> = text.lines().collect();
    let location = lines
        .first()
        .and_then(|l| l.split_once(" at "))
        .map_or("", |(_, at)| at);
    let source = lines
        .iter()
        .find_map(|l| {
            let (n, rest) = l.split_once(" | ")?;
            n.trim().parse::<u32>().ok().map(|_| rest.trim())
        })
        .unwrap_or("(file)");
    let message = lines
        .iter()
        .rev()
        .map(|l| l.trim())
        // The config crate appends " in <file>"; the file is named by the caller already.
        .find(|l| {
            !l.is_empty() && !l.starts_with('|') && !l.contains(" | ") && !l.starts_with("in ")
        })
        .unwrap_or("invalid TOML");
    let location = location.split(" in ").next().unwrap_or(location);
    ConfigError::new(source, format!("{message} ({location})"))
}

/// `routes./quotes.services.x` (the config crate's spelling) becomes `routes."/quotes".services.x`.
fn quote_route_key(key: &str) -> String {
    match key.strip_prefix("routes.") {
        Some(rest) if rest.starts_with('/') => match rest.find(".services") {
            Some(i) => format!("routes.\"{}\"{}", &rest[..i], &rest[i..]),
            None => format!("routes.\"{rest}\""),
        },
        _ => key.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Settings::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn minimal_file_gets_documented_defaults() {
        let s = Settings::from_toml(
            "[routes.\"/quotes\".services.q]\ntype = \"redis\"\nrequest_channel = \"input\"\n",
        )
        .unwrap();
        assert_eq!(s.server.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(s.redis.response_channel, "refract.responses");
        assert_eq!(
            s.routes["/quotes"].services["q"].resolve("k").unwrap(),
            Service::Redis {
                request_channel: "input".into()
            }
        );
    }

    #[test]
    fn route_and_service_names_keep_their_case() {
        let s = Settings::from_toml(
            "[routes.\"/Quotes\".services.QuoteService]\ntype = \"redis\"\nrequest_channel = \"In\"\n",
        )
        .unwrap();
        assert!(s.routes["/Quotes"].services.contains_key("QuoteService"));
    }

    #[test]
    fn missing_request_channel_names_the_service() {
        let e = err("[routes.\"/quotes\".services.quoteservice]\ntype = \"redis\"\n");
        assert!(
            e.ends_with("routes.\"/quotes\".services.quoteservice: request_channel is required"),
            "{e}"
        );
    }

    #[test]
    fn unknown_service_type_is_named() {
        let e = err("[routes.\"/q\".services.s]\ntype = \"kafka\"\nrequest_channel = \"x\"\n");
        assert!(
            e.contains("routes.\"/q\".services.s: type \"kafka\" is unknown"),
            "{e}"
        );
    }

    #[test]
    fn http_services_take_one_url_or_a_list() {
        let s = Settings::from_toml(
            r#"
            [routes."/news".services.legacy]
            type = "http"
            url = ["http://127.0.0.1:9000/a", "http://127.0.0.1:9001/b"]
            headers = { "x-api-key" = "k" }
            polling_interval = "2s"
            "#,
        )
        .unwrap();
        let Service::Http(h) = s.routes["/news"].services["legacy"].resolve("k").unwrap() else {
            panic!()
        };
        assert_eq!(h.urls.len(), 2);
        assert_eq!(h.timeout, HTTP_DEFAULT_TIMEOUT);
        assert_eq!(h.max_in_flight, 64);
        assert_eq!(h.polling_interval, Some(Duration::from_secs(2)));
        assert_eq!(h.headers, vec![("x-api-key".to_string(), "k".to_string())]);
    }

    #[test]
    fn http_service_errors_name_the_key() {
        let svc = "[routes.\"/n\".services.h]\ntype = \"http\"\n";
        assert!(err(svc).ends_with("routes.\"/n\".services.h: url is required"));
        assert!(err(&format!("{svc}url = \"nope\"\n")).contains("not a valid URL"));
        assert!(err(&format!("{svc}url = \"https://x/\"\n")).contains("https is not supported"));
        assert!(err(&format!("{svc}url = []\n")).contains("at least one URL"));
        assert!(
            err(&format!(
                "{svc}url = \"http://x/\"\npolling_interval = \"0s\"\n"
            ))
            .contains("routes.\"/n\".services.h.polling_interval")
        );
        assert!(
            err(&format!(
                "{svc}url = \"http://x/\"\nrequest_channel = \"c\"\n"
            ))
            .contains("request_channel applies to type = \"redis\" only")
        );
        let redis = "[routes.\"/n\".services.r]\ntype = \"redis\"\nrequest_channel = \"c\"\n";
        assert!(
            err(&format!("{redis}url = \"http://x/\"\n"))
                .contains("url applies to type = \"http\" only")
        );
    }

    #[test]
    fn route_limits_are_validated() {
        let svc = "[routes.\"/q\".services.s]\ntype = \"redis\"\nrequest_channel = \"x\"\n";
        let s = Settings::from_toml(&format!(
            "[routes.\"/q\"]\nmax_connections = 5\nrate_limit = {{ per_second = 2.5, action = \"drop\" }}\n{svc}"
        ))
        .unwrap();
        let r = s.routes["/q"].rate_limit.unwrap();
        assert_eq!(
            (r.per_second, r.burst(), r.action),
            (2.5, 2.5, RateLimitAction::Drop)
        );
        assert!(
            err(&format!(
                "[routes.\"/q\"]\nrate_limit = {{ per_second = 0 }}\n{svc}"
            ))
            .contains("routes.\"/q\".rate_limit")
        );
        assert!(
            err(&format!(
                "[routes.\"/q\"]\nrate_limit = {{ per_second = 1, action = \"explode\" }}\n{svc}"
            ))
            .contains("explode")
        );
        assert!(
            err("[server]\nping_interval = \"30s\"\nidle_timeout = \"10s\"\n")
                .contains("server.idle_timeout")
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = err("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n");
        assert!(e.contains("lisen"), "{e}");
        let e = err("[routes.\"/q\".services.s]\ntype = \"redis\"\nrequest_chanel = \"x\"\n");
        assert!(e.contains("request_chanel"), "{e}");
        let e = err(
            "[routes.\"/q\"]\nmax_conections = 3\n[routes.\"/q\".services.s]\ntype = \"redis\"\nrequest_channel = \"x\"\n",
        );
        assert!(e.contains("max_conections"), "{e}");
        let e = err("[server]\nallowed_origin = [\"x\"]\n");
        assert!(e.contains("allowed_origin"), "{e}");
    }

    #[test]
    fn toml_syntax_errors_fit_on_one_line() {
        let e = err("[routes.\"/a\".services.s]\ntype = \"redis\"\n[routes.\"/a\".services.s]\n");
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(
            e.contains("[routes.\"/a\".services.s]: duplicate key (line 3"),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_name_the_key() {
        let e = err("[server]\nmax_connections = \"many\"\n");
        assert!(e.contains("server.max_connections"), "{e}");
    }

    #[test]
    fn bad_durations_and_values_are_rejected() {
        assert!(err("[server]\nwrite_timeout = \"-1s\"\n").contains("server.write_timeout"));
        assert!(err("[server]\nread_buffer = 16\n").contains("server.read_buffer"));
        assert!(err("[server]\nread_buffer = 2000000\n").contains("server.read_buffer"));
        assert!(err("[server]\nwrite_timeout = \"0s\"\n").contains("server.write_timeout"));
        assert!(err("[redis]\nurl = \"http://x\"\n").contains("redis.url"));
        assert!(err("node_id = \"a b\"\n").contains("node_id"));
        assert!(err("[server]\ntrusted_proxies = [\"nope\"]\n").contains("trusted_proxies"));
    }

    #[test]
    fn routes_must_be_paths_and_not_reserved() {
        let svc = ".services.s]\ntype = \"redis\"\nrequest_channel = \"x\"\n";
        assert!(err(&format!("[routes.\"quotes\"{svc}")).contains("routes.\"quotes\""));
        assert!(err(&format!("[routes.\"/metrics\"{svc}")).contains("reserved"));
        assert!(err("[routes.\"/q\"]\n").contains("at least one service"));
    }
}
