//! `[routes."<path>"]`: each route's services, admission, auth, hook and rate limit.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};
use ipnet::IpNet;
use serde::Deserialize;

use super::{Checked, ConfigError, RESERVED_PATHS, check_name, ensure, nonzero, pem, positive};
use crate::auth::{JwtSettings, OneOrMany, Verifier};

/// A route's keys (its admission keys flattened in as `admission`), for the unknown-key message.
pub const ROUTE_FIELDS: &[&str] = &[
    "services",
    "max_connections",
    "max_message_size",
    "rate_limit",
    "admission",
    "auth",
];

/// The admission keys, which `[server]` and each route flatten into theirs.
pub const ADMISSION_FIELDS: &[&str] = &[
    "allowed_origins",
    "allow_ips",
    "deny_ips",
    "max_connections_per_ip",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSettings {
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
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
        let (s, d) = (self.clone(), defaults.clone());
        AdmissionSettings {
            allowed_origins: s.allowed_origins.or(d.allowed_origins),
            allow_ips: s.allow_ips.or(d.allow_ips),
            deny_ips: s.deny_ips.or(d.deny_ips),
            max_connections_per_ip: s.max_connections_per_ip.or(d.max_connections_per_ip),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub jwt: Option<JwtSettings>,
    /// Query parameter that may carry the token (default `token`).
    pub token_query_param: Option<String>,
    pub connect_hook: Option<HookSettings>,
    /// Built from `jwt` by validation, which must load the key to check it; until then it
    /// refuses every token.
    #[serde(skip)]
    pub verifier: Verifier,
}

impl AuthSettings {
    pub fn token_query_param(&self) -> &str {
        self.token_query_param.as_deref().unwrap_or("token")
    }

    fn validate(&mut self, key: &str) -> Checked {
        let either = self.jwt.is_some() || self.connect_hook.is_some();
        ensure(either, key, "needs jwt, connect_hook, or both")?;
        if let Some(jwt) = &self.jwt {
            let verifier = jwt.verifier();
            self.verifier = verifier.map_err(|e| ConfigError::new(format!("{key}.jwt"), e.0))?;
        }
        if let Some(hook) = &self.connect_hook {
            let key = format!("{key}.connect_hook");
            let url = reqwest::Url::parse(&hook.url);
            let http = url.is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            ensure(http, &key, "url must be an http:// or https:// URL")?;
            nonzero(&format!("{key}.timeout"), hook.timeout)?;
            positive(&format!("{key}.max_in_flight"), hook.max_in_flight)?;
        }
        Ok(())
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

/// One backend service of a route: `type = "redis"` or `type = "http"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "ServiceKeys")]
pub enum Service {
    Redis {
        /// The channel the service listens on.
        request_channel: String,
    },
    Http(HttpService),
}

/// A legacy HTTP service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpService {
    /// One URL, or a list used round robin.
    pub urls: Vec<reqwest::Url>,
    /// Extra request headers (for example an API key).
    pub headers: Vec<(String, String)>,
    /// Per-request timeout (default 5s).
    pub timeout: Duration,
    /// Requests in flight to this service at once (default 64).
    pub max_in_flight: usize,
    /// Poll every live connection this often; absent = no polling.
    pub polling_interval: Option<Duration>,
    /// CA certificates (PEM) that the service's `https://` URLs must chain to, instead of the
    /// system's roots.
    pub tls_ca_file: Option<PathBuf>,
}

pub const HTTP_DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub const HTTP_DEFAULT_MAX_IN_FLIGHT: usize = 64;

/// A service's keys as written, for both types. Not a serde-tagged enum: that would buffer the
/// keys, losing the key and the wording of a wrong type's error, and would call a key of the
/// other type unknown instead of saying which type it belongs to.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceKeys {
    #[serde(rename = "type")]
    kind: Option<String>,
    request_channel: Option<String>,
    url: Option<OneOrMany>,
    headers: Option<BTreeMap<String, String>>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    max_in_flight: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    polling_interval: Option<Duration>,
    tls_ca_file: Option<PathBuf>,
}

impl TryFrom<ServiceKeys> for Service {
    type Error = String;

    fn try_from(k: ServiceKeys) -> Result<Self, String> {
        match k.kind.as_deref() {
            None => Err("type is required (\"redis\" or \"http\")".into()),
            Some("redis") => {
                let http_only = [
                    ("url", k.url.is_some()),
                    ("headers", k.headers.is_some()),
                    ("timeout", k.timeout.is_some()),
                    ("max_in_flight", k.max_in_flight.is_some()),
                    ("polling_interval", k.polling_interval.is_some()),
                    ("tls_ca_file", k.tls_ca_file.is_some()),
                ];
                if let Some((name, _)) = http_only.iter().find(|(_, set)| *set) {
                    return Err(format!("{name} applies to type = \"http\" only"));
                }
                match k.request_channel {
                    Some(request_channel) if !request_channel.is_empty() => {
                        Ok(Service::Redis { request_channel })
                    }
                    _ => Err("request_channel is required".into()),
                }
            }
            Some("http") => k.http().map(Service::Http),
            Some(other) => Err(format!(
                "type \"{other}\" is unknown (expected \"redis\" or \"http\")"
            )),
        }
    }
}

impl ServiceKeys {
    fn http(self) -> Result<HttpService, String> {
        if self.request_channel.is_some() {
            return Err("request_channel applies to type = \"redis\" only".into());
        }
        let urls = match self.url {
            None => return Err("url is required".into()),
            Some(OneOrMany::One(url)) => vec![url],
            Some(OneOrMany::Many(list)) if list.is_empty() => {
                return Err("url must list at least one URL".into());
            }
            Some(OneOrMany::Many(list)) => list,
        };
        let urls = urls.iter().map(|raw| {
            let url = reqwest::Url::parse(raw)
                .map_err(|e| format!("url \"{raw}\" is not a valid URL ({e})"))?;
            match url.scheme() {
                "http" | "https" => Ok(url),
                other => Err(format!(
                    "url \"{raw}\": scheme {other} is not http or https"
                )),
            }
        });
        let urls = urls.collect::<Result<_, _>>()?;
        let headers: Vec<_> = self.headers.into_iter().flatten().collect();
        let invalid = |(name, value): &&(String, String)| {
            HeaderName::from_bytes(name.as_bytes()).is_err()
                || HeaderValue::from_str(value).is_err()
        };
        if let Some((name, _)) = headers.iter().find(invalid) {
            return Err(format!("headers: \"{name}\" is not a valid header"));
        }
        Ok(HttpService {
            urls,
            headers,
            timeout: self.timeout.unwrap_or(HTTP_DEFAULT_TIMEOUT),
            max_in_flight: self.max_in_flight.unwrap_or(HTTP_DEFAULT_MAX_IN_FLIGHT),
            polling_interval: self.polling_interval,
            tls_ca_file: self.tls_ca_file,
        })
    }
}

impl RouteSettings {
    /// Checks the route at `path` and builds its verifier.
    pub(super) fn validate(&mut self, path: &str) -> Checked {
        let key = format!("routes.\"{path}\"");
        let url_path = path.starts_with('/') && !path.contains(['?', '#', ' ']);
        let message = "a route is a URL path: it starts with '/' and has no '?', '#' or spaces";
        ensure(url_path, &key, message)?;
        let message = "this path is reserved for the gateway itself";
        ensure(!RESERVED_PATHS.contains(&path), &key, message)?;
        positive(&format!("{key}.max_connections"), self.max_connections)?;
        positive(&format!("{key}.max_message_size"), self.max_message_size)?;
        if let Some(r) = self.rate_limit {
            let ok = r.per_second.is_finite()
                && r.per_second > 0.0
                && r.burst.is_none_or(|b| b.is_finite() && b >= 1.0);
            let message = "per_second must be > 0 and burst >= 1";
            ensure(ok, format!("{key}.rate_limit"), message)?;
        }
        let per_ip = self.admission.max_connections_per_ip;
        positive(&format!("{key}.max_connections_per_ip"), per_ip)?;
        if let Some(auth) = &mut self.auth {
            auth.validate(&format!("{key}.auth"))?;
        }
        let (some, message) = (
            !self.services.is_empty(),
            "a route needs at least one service",
        );
        ensure(some, format!("{key}.services"), message)?;
        for (name, service) in &self.services {
            let key = format!("{key}.services.{name}");
            check_name(&key, name, 100)?;
            if let Service::Http(http) = service {
                nonzero(&format!("{key}.timeout"), http.timeout)?;
                positive(&format!("{key}.max_in_flight"), http.max_in_flight)?;
                nonzero(&format!("{key}.polling_interval"), http.polling_interval)?;
                if let Some(ca) = &http.tls_ca_file {
                    let https = http.urls.iter().any(|u| u.scheme() == "https");
                    let ca_key = format!("{key}.tls_ca_file");
                    ensure(https, &ca_key, "applies to https:// URLs only")?;
                    pem::certificates(&ca_key, ca)?;
                }
            }
        }
        Ok(())
    }
}
