//! `[redis]`: which Redis (one server, a Sentinel-watched master, or a Cluster), where events are
//! published and where replies come back.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Checked, ConfigError, check_name, ensure, nonzero, pem, positive};

/// How the gateway reaches Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisMode {
    /// One server at `url`.
    #[default]
    Standalone,
    /// The master the `sentinels` name for `master_name`, followed through failovers.
    Sentinel,
    /// A Redis Cluster found from the `nodes` seeds; events and replies use sharded pub/sub.
    Cluster,
}

section! {
    pub struct RedisSettings {
        pub mode: RedisMode = RedisMode::Standalone,
        /// The server, in standalone mode.
        pub url: String = "redis://127.0.0.1:6379".into(),
        /// Cluster seeds: any of the cluster's nodes; the rest are discovered.
        pub nodes: Vec<String> = Vec::new(),
        /// Sentinels watching the master, in sentinel mode.
        pub sentinels: Vec<String> = Vec::new(),
        /// The master's name at the sentinels.
        pub master_name: Option<String> = None,
        /// Credentials for the master a sentinel names (its address carries none).
        pub username: Option<String> = None,
        pub password: Option<String> = None,
        /// PEM file of the CA certificates that `rediss://` servers must chain to, instead of the
        /// system's roots.
        pub tls_ca_file: Option<PathBuf> = None,
        /// A client certificate and its private key (PEM), for servers that ask for one
        /// (mutual TLS, as `redis-server` does by default with `tls-auth-clients yes`).
        pub tls_cert_file: Option<PathBuf> = None,
        pub tls_key_file: Option<PathBuf> = None,
        /// Prefix of the per-node response channel `<response_channel>.<node_id>`.
        pub response_channel: String = "refract.responses".into(),
        /// Parallel publishing connections; each carries pipelined batches, and one connection's
        /// events always use the same one, which keeps them in order.
        pub publishers: usize = 2,
        /// Events waiting to be published per publishing connection before clients feel
        /// backpressure.
        pub publish_queue: usize = 4096,
        /// How often the node sends itself a canary through its response channel.
        #[serde(with = "humantime_serde")]
        pub canary_interval: Duration = Duration::from_secs(2),
        /// How long a canary may take to come back before the node turns not-ready and
        /// re-subscribes.
        #[serde(with = "humantime_serde")]
        pub canary_timeout: Duration = Duration::from_secs(3),
        /// Timeout for connecting to Redis and for one publish batch.
        #[serde(with = "humantime_serde")]
        pub command_timeout: Duration = Duration::from_secs(3),
        /// Largest service reply accepted on the response channel.
        pub max_reply_size: usize = 1024 * 1024,
    }
}

impl RedisSettings {
    pub(super) fn validate(&self) -> Checked {
        match self.mode {
            RedisMode::Standalone => check_url("redis.url", &self.url)?,
            RedisMode::Sentinel => {
                let message = "is required when mode = \"sentinel\"";
                ensure(!self.sentinels.is_empty(), "redis.sentinels", message)?;
                check_urls("redis.sentinels", &self.sentinels)?;
                let name = self.master_name.as_deref().unwrap_or("");
                ensure(!name.is_empty(), "redis.master_name", message)?;
            }
            RedisMode::Cluster => {
                let message = "is required when mode = \"cluster\"";
                ensure(!self.nodes.is_empty(), "redis.nodes", message)?;
                check_urls("redis.nodes", &self.nodes)?;
            }
        }
        let only = |key: &str, set: bool, mode: &str| {
            let message = format!("applies to mode = \"{mode}\" only");
            ensure(!set, format!("redis.{key}"), message)
        };
        let (sentinel, cluster) = (
            self.mode == RedisMode::Sentinel,
            self.mode == RedisMode::Cluster,
        );
        only("nodes", !cluster && !self.nodes.is_empty(), "cluster")?;
        only(
            "sentinels",
            !sentinel && !self.sentinels.is_empty(),
            "sentinel",
        )?;
        only(
            "master_name",
            !sentinel && self.master_name.is_some(),
            "sentinel",
        )?;
        only("username", !sentinel && self.username.is_some(), "sentinel")?;
        only("password", !sentinel && self.password.is_some(), "sentinel")?;
        self.check_tls()?;
        check_name("redis.response_channel", &self.response_channel, 200)?;
        positive("redis.publishers", self.publishers)?;
        positive("redis.publish_queue", self.publish_queue)?;
        positive("redis.max_reply_size", self.max_reply_size)?;
        nonzero("redis.canary_interval", self.canary_interval)?;
        nonzero("redis.canary_timeout", self.canary_timeout)?;
        nonzero("redis.command_timeout", self.command_timeout)
    }
}

impl RedisSettings {
    /// The URLs this mode connects to first (in sentinel mode the master is reached with the
    /// sentinels' scheme).
    fn urls(&self) -> &[String] {
        match self.mode {
            RedisMode::Standalone => std::slice::from_ref(&self.url),
            RedisMode::Sentinel => &self.sentinels,
            RedisMode::Cluster => &self.nodes,
        }
    }

    /// Whether connections use TLS: the mode's URLs are `rediss://`.
    pub fn tls(&self) -> bool {
        self.urls().iter().any(|u| u.starts_with("rediss://"))
    }

    fn check_tls(&self) -> Checked {
        let files = [
            ("tls_ca_file", &self.tls_ca_file),
            ("tls_cert_file", &self.tls_cert_file),
            ("tls_key_file", &self.tls_key_file),
        ];
        for (key, file) in files {
            let message = "applies to rediss:// URLs only";
            ensure(
                file.is_none() || self.tls(),
                format!("redis.{key}"),
                message,
            )?;
        }
        let (cert, key) = (&self.tls_cert_file, &self.tls_key_file);
        let pair = "tls_cert_file and tls_key_file go together";
        ensure(cert.is_some() || key.is_none(), "redis.tls_cert_file", pair)?;
        ensure(key.is_some() || cert.is_none(), "redis.tls_key_file", pair)?;
        self.tls_certificates().map(drop)
    }

    /// What `rediss://` connections trust and present, read from the `tls_*` files; `None`
    /// when none is set (the system's roots, no client certificate).
    /// What the gateway's own `rediss://` connections trust and present, from the files
    /// [`Self::tls_certificates`] read; `None` when no URL is `rediss://`.
    pub fn tls_client_config(
        &self,
        certs: Option<&::redis::TlsCertificates>,
    ) -> Result<Option<rustls::ClientConfig>, ConfigError> {
        if !self.tls() {
            return Ok(None);
        }
        let ca = certs.and_then(|c| c.root_cert.as_deref());
        let client = certs
            .and_then(|c| c.client_tls.as_ref())
            .map(|c| (&c.client_cert[..], &c.client_key[..]));
        pem::client_config(ca, client).map(Some)
    }

    pub fn tls_certificates(&self) -> Result<Option<::redis::TlsCertificates>, ConfigError> {
        if self.tls_ca_file.is_none() && self.tls_cert_file.is_none() {
            return Ok(None);
        }
        let root_cert = match &self.tls_ca_file {
            Some(path) => Some(pem::certificates("redis.tls_ca_file", path)?),
            None => None,
        };
        let client_tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Some(::redis::ClientTlsConfig {
                client_cert: pem::certificates("redis.tls_cert_file", cert)?,
                client_key: pem::private_key("redis.tls_key_file", key)?,
            }),
            _ => None,
        };
        Ok(Some(::redis::TlsCertificates {
            client_tls,
            root_cert,
        }))
    }
}

fn check_urls(key: &str, urls: &[String]) -> Checked {
    let each = |(i, url): (usize, &String)| check_url(&format!("{key}[{i}]"), url);
    urls.iter().enumerate().try_for_each(each)
}

fn check_url(key: &str, url: &str) -> Checked {
    let scheme = ["redis://", "rediss://", "unix://"]
        .iter()
        .any(|s| url.starts_with(s));
    ensure(
        scheme,
        key,
        "must start with redis://, rediss:// or unix://",
    )?;
    let insecure = url::Url::parse(url).is_ok_and(|u| u.fragment() == Some("insecure"));
    ensure(
        !insecure,
        key,
        "#insecure (no certificate check) is not supported: name the server's CA in redis.tls_ca_file",
    )?;
    ::redis::Client::open(url)
        .map(drop)
        .map_err(|e| ConfigError::new(key, format!("is not a valid Redis URL ({e})")))
}
