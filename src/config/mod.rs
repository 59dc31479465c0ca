//! Configuration: the TOML file (plus `REFRACT__*` environment overrides) as typed data.
//!
//! Loading is in two steps so that every error names its key: serde turns the merged sources into
//! [`Settings`] (rejecting unknown keys and wrong types), then [`Settings::validate`] checks the
//! values, section by section (one file each). Both happen before anything binds.
//!
//! - [`server`]: `[server]`, the port and every connection's limits.
//! - [`redis`]: `[redis]`, where events go and replies come back.
//! - [`routes`]: `[routes."<path>"]`, services, admission, auth, rate limits.
//! - [`channels`]: `[channels]`, the Phoenix Channels endpoint, presence, tokens.
//! - [`admin`]: `[admin]`, the admin page and who may see it.
//! - [`pem`]: certificate and key files, read and checked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A section whose every key has a default: the struct (keys may be left out, unknown ones are
/// refused) and its `Default`, each default written once, beside its field.
macro_rules! section {
    ($(#[$meta:meta])* pub struct $name:ident {
        $($(#[$field_meta:meta])* pub $field:ident: $ty:ty = $default:expr,)*
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name { $($(#[$field_meta])* pub $field: $ty,)* }

        impl Default for $name {
            fn default() -> Self {
                Self { $($field: $default,)* }
            }
        }

        impl $name {
            /// The section's keys, in order (a flattened field by its own name).
            #[allow(dead_code)]
            pub const FIELDS: &'static [&'static str] = &[$(stringify!($field)),*];
        }
    };
}

pub mod admin;
pub mod channels;
pub mod pem;
pub mod redis;
pub mod routes;
pub mod server;

pub use admin::{ADMIN_PATHS, AdminSettings, Credentials};
pub use channels::{
    ChannelsSettings, PresenceSettings, SystemTopicSettings, TokenEndpointSettings,
};
pub use redis::{RedisMode, RedisSettings};
pub use routes::{
    AdmissionSettings, AuthSettings, HTTP_DEFAULT_MAX_IN_FLIGHT, HTTP_DEFAULT_TIMEOUT,
    HookSettings, HttpService, RateLimit, RateLimitAction, RouteSettings, Service,
};
pub use server::{ServerSettings, TlsSettings};

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
        let (file, key, message) = (String::new(), key.into(), message.into());
        Self { file, key, message }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// This node's id: names its response channel, so it must be unique among nodes sharing a
    /// Redis. Absent: generated at start.
    pub node_id: Option<String>,
    pub server: ServerSettings,
    pub redis: RedisSettings,
    pub routes: BTreeMap<String, RouteSettings>,
    /// The Phoenix Channels endpoint; absent = Channels off.
    pub channels: Option<ChannelsSettings>,
    /// The admin page; absent = off.
    pub admin: Option<AdminSettings>,
    /// The file the settings were read from, which a reload reads again.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// Each top-level key as read (environment overrides applied), to tell what a reload changed.
    #[serde(skip)]
    sections: BTreeMap<String, serde_json::Value>,
}

impl Settings {
    /// Reads `path` (TOML) and applies `REFRACT__SECTION__KEY` environment overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let env = config::Environment::with_prefix("REFRACT")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true);
        let mut settings = match std::fs::read_to_string(path) {
            Ok(text) => {
                let file = config::File::from_str(&text, config::FileFormat::Toml);
                Self::build(config::Config::builder().add_source(file).add_source(env))
            }
            Err(e) => Err(ConfigError::new(
                "(file)",
                format!("cannot read the file: {e}"),
            )),
        };
        if let Ok(s) = &mut settings {
            s.source = Some(path.to_path_buf());
        }
        if let Err(e) = &mut settings {
            // A key the environment set is the environment's fault, not the file's.
            e.file = match from_environment(e) {
                Some(var) => format!("environment {var}"),
                None => path.display().to_string(),
            };
        }
        settings
    }

    /// Parses TOML text without the environment; for tests and `refract check` of inline text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let file = config::File::from_str(text, config::FileFormat::Toml);
        Self::build(config::Config::builder().add_source(file))
    }

    fn build(sources: Sources) -> Result<Self, ConfigError> {
        let built = sources.build().map_err(from_config_error)?;
        let sections = built.clone().try_deserialize().unwrap_or_default();
        let mut settings: Self = built.try_deserialize().map_err(from_config_error)?;
        settings.sections = sections;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every value; the first problem found is returned with its key. Checking a JWT
    /// setting means building its verifier (which reads the key file or the environment), so the
    /// verifier built here is kept for the gateway to use, rather than built again later.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        if let Some(id) = &self.node_id {
            check_name("node_id", id, 64)?;
        }
        self.server.validate()?;
        self.redis.validate()?;
        if let Some(ch) = &mut self.channels {
            ch.validate()?;
        }
        for (path, route) in &mut self.routes {
            route.validate(path)?;
        }
        if let Some(admin) = &mut self.admin {
            admin.validate()?;
        }
        check_paths(&self.routes, self.channels.as_ref(), self.admin.as_ref())
    }

    /// The route at `path` as read: two reads of one route compare equal when it is unchanged.
    pub fn route_source(&self, path: &str) -> Option<&serde_json::Value> {
        self.sections.get("routes")?.get(path)
    }

    /// The top-level sections (and `node_id`) whose values differ from `other`'s, `routes` aside:
    /// what a reload cannot put in force.
    pub fn changed_sections<'a>(&'a self, other: &'a Settings) -> BTreeSet<&'a str> {
        let keys = self.sections.keys().chain(other.sections.keys());
        keys.filter(|k| *k != "routes" && self.sections.get(*k) != other.sections.get(*k))
            .map(String::as_str)
            .collect()
    }
}

/// Paths only one part may have: a route may not take the Channels endpoint's paths, and with
/// `[admin]`, nothing may take `/admin`. Checked with the routes at start and on a reload (whose
/// routes meet the sections in force).
pub fn check_paths(
    routes: &BTreeMap<String, RouteSettings>,
    channels: Option<&ChannelsSettings>,
    admin: Option<&AdminSettings>,
) -> Checked {
    if let Some(ch) = channels {
        let ws = ch.websocket_path();
        let message = format!("{ws} is already a route");
        ensure(!routes.contains_key(&ws), "channels.endpoint", message)?;
        if let Some(t) = &ch.token_endpoint {
            let free = !routes.contains_key(&t.path);
            ensure(
                free,
                "channels.token_endpoint.path",
                channels::TOKEN_PATH_TAKEN,
            )?;
        }
    }
    if admin.is_some() {
        let endpoint = channels.map(|c| c.endpoint.as_str());
        let taken = routes.keys().map(String::as_str).chain(endpoint);
        for path in taken.filter(|p| *p == "/admin" || p.starts_with("/admin/")) {
            let key = match endpoint == Some(path) {
                true => "channels.endpoint".to_string(),
                false => format!("routes.\"{path}\""),
            };
            ensure(
                false,
                key,
                "the admin page takes /admin when [admin] is configured",
            )?;
        }
    }
    Ok(())
}

type Sources = config::ConfigBuilder<config::builder::DefaultState>;
/// What each section's `validate` returns: the first problem found, with its key.
type Checked = Result<(), ConfigError>;

/// An error for `key` unless `ok`.
fn ensure(ok: bool, key: impl Into<String>, message: impl Into<String>) -> Checked {
    ok.then_some(())
        .ok_or_else(|| ConfigError::new(key, message))
}

/// A count that must not be 0 (absent is fine).
fn positive(key: &str, value: impl Into<Option<usize>>) -> Checked {
    ensure(value.into() != Some(0), key, "must be greater than 0")
}

/// A duration that must not be 0 (absent is fine).
fn nonzero(key: &str, value: impl Into<Option<Duration>>) -> Checked {
    let ok = value.into().is_none_or(|d| !d.is_zero());
    ensure(ok, key, "must be longer than 0s")
}

/// Names that end up inside Redis channel names: printable, no spaces or glob characters.
fn check_name(key: &str, value: &str, max: usize) -> Checked {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':');
    let ok = (1..=max).contains(&value.len()) && value.bytes().all(allowed);
    let message = format!("must be 1 to {max} characters of A-Z a-z 0-9 - _ . :");
    ensure(ok, key, message)
}

/// The `REFRACT__*` variable that set the key `e` is about, if one did: `server.listen` comes
/// from `REFRACT__SERVER__LISTEN`; an unknown field `listne` of `server` from
/// `REFRACT__SERVER__LISTNE`.
fn from_environment(e: &ConfigError) -> Option<String> {
    let mut path = e.key.clone();
    if let Some(field) = e.message.strip_prefix("unknown field `") {
        let field = field.split('`').next()?;
        path = match e.key.as_str() {
            "(file)" => field.to_string(),
            section => format!("{section}.{field}"),
        };
    }
    let var = format!("REFRACT__{}", path.replace('.', "__").to_uppercase());
    std::env::var_os(&var).map(|_| var)
}

/// Sections that flatten the admission keys into theirs, where serde cannot list what it
/// expected: their keys, for the unknown-key message.
fn expected_keys(section: &str) -> Option<Vec<&'static str>> {
    let own: &[&str] = if section == "server" {
        ServerSettings::FIELDS
    } else if section.starts_with("routes.\"") && section.ends_with('"') {
        routes::ROUTE_FIELDS
    } else {
        return None;
    };
    let mut keys = Vec::new();
    for &key in own {
        match key {
            "admission" => keys.extend_from_slice(routes::ADMISSION_FIELDS),
            _ => keys.push(key),
        }
    }
    Some(keys)
}

/// The `config` crate's errors carry the key they concern (spelled its way); ours names it too.
fn from_config_error(e: config::ConfigError) -> ConfigError {
    use config::ConfigError::{At, FileParse, Type};
    let (key, message) = match e {
        FileParse { cause, .. } => return toml_syntax_error(&cause.to_string()),
        Type {
            key: Some(k),
            unexpected: u,
            expected: x,
            ..
        } => (k, format!("invalid type: {u}, expected {x}")),
        At {
            key: Some(k),
            error,
            ..
        } => (k, error.to_string()),
        other => return ConfigError::new("(file)", other.to_string()),
    };
    let key = route_key(&key);
    let listed = message.starts_with("unknown field `") && !message.contains("expected");
    let message = match expected_keys(&key).filter(|_| listed) {
        Some(keys) => {
            let keys: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
            format!("{message}, expected one of {}", keys.join(", "))
        }
        None => message,
    };
    ConfigError::new(key, message)
}

/// The TOML parser's report spans several lines (location, source excerpt, caret, message); fold
/// it into one, with the offending source line standing in for the key.
fn toml_syntax_error(report: &str) -> ConfigError {
    let location = report.lines().next().and_then(|l| l.split_once(" at "));
    let source = report.lines().find_map(|l| {
        let (n, source) = l.split_once(" | ")?;
        n.trim().parse::<u32>().is_ok().then_some(source.trim())
    });
    let mut lines = report.lines().map(str::trim).rev();
    let message = lines.find(|l| !l.is_empty() && !l.starts_with('|') && !l.contains(" | "));
    let message = format!(
        "{} ({})",
        message.unwrap_or("invalid TOML"),
        location.map_or("", |l| l.1)
    );
    ConfigError::new(source.unwrap_or("(file)"), message)
}

/// `routes./quotes.services.x` (the config crate's spelling) becomes `routes."/quotes".services.x`;
/// the path ends where a route's own key begins (a path may hold dots).
fn route_key(key: &str) -> String {
    let Some(rest) = key.strip_prefix("routes.").filter(|r| r.starts_with('/')) else {
        return key.to_string();
    };
    let split = routes::ROUTE_FIELDS
        .iter()
        .chain(routes::ADMISSION_FIELDS)
        .filter_map(|field| {
            let at = rest.find(&format!(".{field}"))?;
            let after = &rest[at + 1 + field.len()..];
            (after.is_empty() || after.starts_with('.')).then_some(at)
        })
        .min();
    match split {
        Some(i) => format!("routes.\"{}\"{}", &rest[..i], &rest[i..]),
        None => format!("routes.\"{rest}\""),
    }
}
