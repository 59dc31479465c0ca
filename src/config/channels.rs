//! `[channels]`: a Phoenix Channels endpoint bridged to Redis (docs/channels.md).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Checked, ConfigError, RESERVED_PATHS, ensure, nonzero, positive};
use crate::auth::{JwtSettings, OneOrMany, Verifier};

section! {
    /// `[channels]`: a Phoenix Channels endpoint bridged to Redis (docs/channels.md).
    pub struct ChannelsSettings {
        /// phoenix.js connects to `<endpoint>/websocket`.
        pub endpoint: String = "/socket".into(),
        /// HS256 secret for join tokens; prefer `jwt_secret_env`.
        pub jwt_secret: Option<String> = None,
        pub jwt_secret_env: Option<String> = None,
        /// Or verify with a public key (then the token endpoint cannot sign).
        pub jwt_public_key_file: Option<PathBuf> = None,
        pub jwt_algorithm: Option<String> = None,
        pub jwt_issuer: Option<OneOrMany> = None,
        pub jwt_audience: Option<OneOrMany> = None,
        /// Lifetime of tokens minted by the token endpoint.
        #[serde(with = "humantime_serde")]
        pub token_ttl: Duration = Duration::from_secs(3600),
        pub max_topics_per_socket: usize = 100,
        /// A socket that sends nothing (not even a heartbeat) for this long is closed with 1001.
        #[serde(with = "humantime_serde")]
        pub idle_timeout: Duration = Duration::from_secs(60),
        /// Reply ok to each client push once published (or error `unavailable`); Phoenix's
        /// default is no reply.
        pub ack_pushes: bool = false,
        /// Frames queued for one socket; a socket that lets it fill is closed with 1013.
        pub outbound_queue: usize = 1024,
        /// Largest client frame.
        pub max_frame_size: usize = 1024 * 1024,
        /// Where join/leave notes go for backends that want them; empty = none.
        pub lifecycle_channel: String = "refract:channels:lifecycle".into(),
        pub token_endpoint: Option<TokenEndpointSettings> = None,
        pub system: Option<SystemTopicSettings> = None,
        pub presence: PresenceSettings = PresenceSettings::default(),
        /// Built from the `jwt_*` keys by validation, which must load the key to check them;
        /// until then it refuses every token.
        #[serde(skip)]
        pub verifier: Verifier = Verifier::default(),
    }
}

section! {
    /// `[channels.presence]`: presence across nodes (docs/channels.md, "Presence").
    pub struct PresenceSettings {
        /// Track presence at all. Off: no presence entries, diffs or sweeps, and `presence_state`
        /// is `{}`; for broadcast topics with many members, where every join would otherwise be
        /// announced to every member.
        pub enabled: bool = true,
        /// A node's liveness key lives this long unless refreshed; after it, the node's members
        /// are removed by the others.
        #[serde(with = "humantime_serde")]
        pub ttl: Duration = Duration::from_secs(15),
        /// How often a node refreshes its liveness key and sweeps dead nodes' entries.
        #[serde(with = "humantime_serde")]
        pub refresh_interval: Duration = Duration::from_secs(5),
        /// Most metas listed in one `presence_state`.
        pub max_listed: usize = 1000,
        /// Largest `meta` object a join may add to its presence meta (bytes of JSON).
        pub max_meta_size: usize = 1024,
        /// How often the `admin` topic gets the gateway's stats.
        #[serde(with = "humantime_serde")]
        pub admin_interval: Duration = Duration::from_secs(5),
    }
}

section! {
    /// `[channels.token_endpoint]`: `POST /token` mints join tokens, behind an API key.
    pub struct TokenEndpointSettings {
        pub path: String = "/token".into(),
        /// Environment variable with the API key callers must send as `Authorization: Bearer`.
        pub api_key_env: Option<String> = None,
        /// No API key at all: development only, logged loudly at start.
        pub open: bool = false,
        /// Origins allowed to call it from a browser (CORS); never `*`.
        pub cors_origins: Vec<String> = Vec::new(),
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

/// What `channels.token_endpoint.path` must be.
pub(super) const TOKEN_PATH_TAKEN: &str = "must be a free URL path starting with '/'";

impl ChannelsSettings {
    /// The token settings in the shape the shared JWT code takes.
    pub fn jwt(&self) -> JwtSettings {
        JwtSettings {
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

    /// Checks the section and builds its verifier. Whether routes take its paths is checked
    /// with the routes ([`super::check_paths`]).
    pub(super) fn validate(&mut self) -> Checked {
        let path = self.endpoint.starts_with('/') && !self.endpoint.contains(['?', '#', ' ']);
        ensure(
            path,
            "channels.endpoint",
            "must be a URL path starting with '/'",
        )?;
        let ws = self.websocket_path();
        let taken = RESERVED_PATHS.contains(&ws.as_str());
        ensure(
            !taken,
            "channels.endpoint",
            format!("{ws} is already a route"),
        )?;
        let verifier = self.jwt().verifier();
        self.verifier = verifier.map_err(|e| ConfigError::new("channels.jwt_secret", e.0))?;
        positive("channels.max_topics_per_socket", self.max_topics_per_socket)?;
        positive("channels.outbound_queue", self.outbound_queue)?;
        positive("channels.max_frame_size", self.max_frame_size)?;
        nonzero("channels.idle_timeout", self.idle_timeout)?;
        nonzero("channels.token_ttl", self.token_ttl)?;
        if let Some(t) = &self.token_endpoint {
            let free = t.path.starts_with('/') && t.path != ws;
            ensure(free, "channels.token_endpoint.path", TOKEN_PATH_TAKEN)?;
            let message = "needs jwt_secret or jwt_secret_env: a public key cannot sign tokens";
            let secret = self.jwt_public_key_file.is_none();
            ensure(secret, "channels.token_endpoint", message)?;
            let key = "channels.token_endpoint.api_key_env";
            let message = "is required unless open = true";
            ensure(t.api_key_env.is_some() || t.open, key, message)?;
            if let Some(var) = &t.api_key_env {
                let long = std::env::var(var).is_ok_and(|k| k.len() >= 16);
                let message =
                    format!("environment variable {var} must hold a key of at least 16 bytes");
                ensure(long, key, message)?;
            }
            let star = t.cors_origins.iter().any(|o| o == "*");
            let message = "\"*\" is not allowed: list the origins";
            ensure(!star, "channels.token_endpoint.cors_origins", message)?;
        }
        let p = &self.presence;
        nonzero("channels.presence.refresh_interval", p.refresh_interval)?;
        nonzero("channels.presence.admin_interval", p.admin_interval)?;
        positive("channels.presence.max_listed", p.max_listed)?;
        let message = "must be longer than refresh_interval, or live nodes look dead";
        ensure(p.ttl > p.refresh_interval, "channels.presence.ttl", message)?;
        let datetime = self.system.as_ref().map(|s| s.datetime_interval);
        nonzero("channels.system.datetime_interval", datetime)
    }
}
