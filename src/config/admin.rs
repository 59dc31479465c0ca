//! `[admin]`: the admin page (`/admin`) and its JSON API (`/admin/api/state`), off unless this
//! section is present, and never open: a bearer token or HTTP basic credentials are required.

use super::{Checked, ConfigError, ensure};

/// The paths the admin page takes when `[admin]` is configured.
pub const ADMIN_PATHS: [&str; 2] = ["/admin", "/admin/api/state"];

/// Shortest bearer token or password accepted: guessing must not be practical.
const MIN_SECRET: usize = 16;

section! {
    pub struct AdminSettings {
        /// The bearer token, from this environment variable (preferred) ...
        pub token_env: Option<String> = None,
        /// ... or written here.
        pub token: Option<String> = None,
        /// HTTP basic credentials instead of a token: the user name ...
        pub username: Option<String> = None,
        /// ... and its password, from this environment variable (preferred) or written here.
        pub password_env: Option<String> = None,
        pub password: Option<String> = None,
        /// At most this many Channels topics are listed (the largest on this node first).
        pub max_topics: usize = 100,
        /// Resolved from the keys above by validation; until then nothing is accepted.
        #[serde(skip)]
        pub credentials: Credentials = Credentials::None,
    }
}

/// What a request must carry to see the admin page's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `Authorization: Basic <base64(user:password)>`.
    Basic {
        username: String,
        password: String,
    },
}

impl AdminSettings {
    pub(super) fn validate(&mut self) -> Checked {
        let token = secret("admin.token", &self.token_env, &self.token)?;
        let password = secret("admin.password", &self.password_env, &self.password)?;
        self.credentials = match (token, &self.username, password) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                let message = "use a token or a username and password, not both";
                return Err(ConfigError::new("admin.username", message));
            }
            (Some(token), None, None) => Credentials::Bearer(token),
            (None, Some(username), Some(password)) => {
                let ok = !username.is_empty() && !username.contains(':');
                ensure(ok, "admin.username", "must be non-empty, without ':'")?;
                Credentials::Basic {
                    username: username.clone(),
                    password,
                }
            }
            (None, Some(_), None) => {
                let message = "is required with admin.username (or admin.password)";
                return Err(ConfigError::new("admin.password_env", message));
            }
            (None, None, Some(_)) => {
                let message = "is required with a password";
                return Err(ConfigError::new("admin.username", message));
            }
            (None, None, None) => {
                let message = "needs token_env (or token), or username with password_env (or \
                               password): the admin page is never open";
                return Err(ConfigError::new("admin", message));
            }
        };
        ensure(
            self.max_topics > 0,
            "admin.max_topics",
            "must be greater than 0",
        )
    }
}

/// A secret from `<key>_env` (the variable must be set) or `<key>`, at least [`MIN_SECRET`]
/// characters; `None` when neither is set.
fn secret(
    key: &str,
    env: &Option<String>,
    inline: &Option<String>,
) -> Result<Option<String>, ConfigError> {
    let value = match (env, inline) {
        (Some(_), Some(_)) => {
            let message = format!("set {key} or {key}_env, not both");
            return Err(ConfigError::new(key, message));
        }
        (Some(var), None) => match std::env::var(var) {
            Ok(v) => v,
            Err(_) => {
                let message = format!("environment variable {var} is not set");
                return Err(ConfigError::new(format!("{key}_env"), message));
            }
        },
        (None, Some(v)) => v.clone(),
        (None, None) => return Ok(None),
    };
    let message = format!("must be at least {MIN_SECRET} characters");
    ensure(value.chars().count() >= MIN_SECRET, key, message)?;
    Ok(Some(value))
}
