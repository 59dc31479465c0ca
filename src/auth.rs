//! JSON Web Tokens: verifying them (routes now, Channels later) and minting them (`refract
//! token`, and Channels' token endpoint). Nothing here knows about routes or sockets.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The longest clock skew a verifier may allow.
pub const MAX_LEEWAY: Duration = Duration::from_secs(30);

/// The most time a token is said to have left: "never" for any connection, and small enough
/// that callers can add it to `Instant::now()` (an `exp` near `u64::MAX` would overflow that).
pub const MAX_TIME_LEFT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// How a JWT is checked; `[... ] jwt = { ... }` in the config.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    /// HMAC secret, inline. Prefer `secret_env`: a secret in a committed file is not secret.
    pub secret: Option<String>,
    /// Name of the environment variable holding the HMAC secret.
    pub secret_env: Option<String>,
    /// PEM file with the public key (RSA, EC P-256/P-384 or Ed25519).
    pub public_key_file: Option<PathBuf>,
    /// `HS256` (default with a secret), `HS384`, `HS512`, `RS256`.., `PS256`.., `ES256`,
    /// `ES384`, `EdDSA`. A token signed with any other algorithm is refused.
    pub algorithm: Option<String>,
    /// Accepted `iss` values; absent = not checked.
    pub issuer: Option<OneOrMany>,
    /// Accepted `aud` values; absent = not checked.
    pub audience: Option<OneOrMany>,
    /// Allowed clock skew for `exp` and `nbf` (at most 30 s; default 5 s).
    #[serde(default, with = "humantime_serde")]
    pub leeway: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn to_vec(&self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

/// Why a JWT setting is unusable; the caller adds the key path.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct SettingsError(pub String);

/// Why a token was refused. Each maps to a metric reason and an HTTP status in `error.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no token")]
    Missing,
    #[error("token is invalid")]
    Invalid,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token is for another audience")]
    WrongAudience,
    #[error("token is from another issuer")]
    WrongIssuer,
}

/// The verified claims of a token.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    pub map: Map<String, Value>,
}

impl Claims {
    /// `sub`, who the token is about.
    pub fn subject(&self) -> Option<&str> {
        self.map.get("sub").and_then(Value::as_str)
    }

    /// `exp` as seconds since the epoch. A NumericDate may be fractional (RFC 7519 section 2):
    /// it is read as the verifier reads it (rounded), so an admitted token always has a deadline.
    pub fn expires_at(&self) -> Option<u64> {
        let exp = self.map.get("exp")?;
        exp.as_u64().or_else(|| {
            let secs = exp.as_f64()?;
            (secs.is_finite() && secs >= 0.0 && secs < u64::MAX as f64).then(|| secs.round() as u64)
        })
    }

    /// Time left before `exp`, from now (zero if already past), at most [`MAX_TIME_LEFT`].
    pub fn time_left(&self) -> Option<Duration> {
        let exp = self.expires_at()?;
        Some(Duration::from_secs(exp.saturating_sub(now_secs())).min(MAX_TIME_LEFT))
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Verifies tokens for one configured key. Built once at start-up.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

/// Refuses every token (no algorithm is allowed): what settings hold until validation builds
/// their verifier, so that settings that skipped validation fail closed.
impl Default for Verifier {
    fn default() -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms.clear();
        let key = DecodingKey::from_secret(&[]);
        Self { key, validation }
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl JwtSettings {
    /// Checks the settings and loads the key (reading the environment and key file).
    pub fn verifier(&self) -> Result<Verifier, SettingsError> {
        let err = |m: String| SettingsError(m);
        let sources = [
            self.secret.is_some(),
            self.secret_env.is_some(),
            self.public_key_file.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err(err(
                "exactly one of secret, secret_env or public_key_file is required".into(),
            ));
        }
        let algorithm = match self.algorithm.as_deref() {
            Some(name) => name
                .parse::<Algorithm>()
                .map_err(|_| err(format!("algorithm \"{name}\" is unknown")))?,
            None if self.public_key_file.is_some() => {
                return Err(err("algorithm is required with public_key_file".into()));
            }
            None => Algorithm::HS256,
        };
        let hmac = matches!(
            algorithm,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        );
        let key = if let Some(path) = &self.public_key_file {
            if hmac {
                return Err(err(format!(
                    "algorithm {algorithm:?} needs a secret, not a public key"
                )));
            }
            let pem = std::fs::read(path)
                .map_err(|e| err(format!("public_key_file {}: {e}", path.display())))?;
            let key = match algorithm {
                Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
                Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
                _ => DecodingKey::from_rsa_pem(&pem),
            };
            key.map_err(|e| {
                err(format!(
                    "public_key_file {}: not a {algorithm:?} public key ({e})",
                    path.display()
                ))
            })?
        } else {
            if !hmac {
                return Err(err(format!(
                    "algorithm {algorithm:?} needs public_key_file"
                )));
            }
            let secret = self.secret_bytes()?;
            DecodingKey::from_secret(&secret)
        };
        let leeway = self.leeway.unwrap_or(Duration::from_secs(5));
        if leeway > MAX_LEEWAY {
            return Err(err("leeway must be at most 30s".into()));
        }
        let mut validation = Validation::new(algorithm);
        validation.leeway = leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        match &self.audience {
            Some(aud) => validation.set_audience(&aud.to_vec()),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&iss.to_vec());
        }
        Ok(Verifier { key, validation })
    }

    /// The HMAC secret, from the file or the environment; at least 16 bytes.
    pub fn secret_bytes(&self) -> Result<Vec<u8>, SettingsError> {
        let secret = match (&self.secret, &self.secret_env) {
            (Some(s), _) => s.clone(),
            (None, Some(var)) => std::env::var(var).map_err(|_| {
                SettingsError(format!("secret_env: environment variable {var} is not set"))
            })?,
            (None, None) => return Err(SettingsError("secret or secret_env is required".into())),
        };
        if secret.len() < 16 {
            return Err(SettingsError("the secret must be at least 16 bytes".into()));
        }
        Ok(secret.into_bytes())
    }
}

impl Verifier {
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map(|data| Claims { map: data.claims })
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidAudience => TokenError::WrongAudience,
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                _ => TokenError::Invalid,
            })
    }
}

/// Signs `claims` with an HMAC secret (HS256/384/512), adding `iat` and `exp` = now + `ttl`.
pub fn mint_hmac(
    secret: &[u8],
    algorithm: Algorithm,
    mut claims: Map<String, Value>,
    ttl: Duration,
) -> Result<String, SettingsError> {
    let now = now_secs();
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), (now + ttl.as_secs()).into());
    jsonwebtoken::encode(
        &Header::new(algorithm),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| SettingsError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn hs(extra: Value, ttl: i64) -> String {
        let mut claims = extra.as_object().unwrap().clone();
        let now = now_secs() as i64;
        claims.insert("exp".into(), (now + ttl).into());
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn settings(extra: Value) -> JwtSettings {
        let mut v = json!({"secret": SECRET});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_good_token_gives_its_claims() {
        let v = settings(json!({})).verifier().unwrap();
        let c = v
            .verify(&hs(json!({"sub": "alice", "role": "admin"}), 60))
            .unwrap();
        assert_eq!(c.subject(), Some("alice"));
        assert_eq!(c.map["role"], "admin");
        assert!(c.time_left().unwrap() <= Duration::from_secs(60));
    }

    #[test]
    fn bad_tokens_are_classified() {
        let v = settings(json!({"audience": "refract", "issuer": "me", "leeway": "0s"}))
            .verifier()
            .unwrap();
        let ok = json!({"sub": "a", "aud": "refract", "iss": "me"});
        assert!(v.verify(&hs(ok.clone(), 60)).is_ok());
        assert_eq!(v.verify(&hs(ok.clone(), -10)), Err(TokenError::Expired));
        assert_eq!(v.verify(""), Err(TokenError::Missing));
        assert_eq!(v.verify("not.a.token"), Err(TokenError::Invalid));
        assert_eq!(
            v.verify(&hs(json!({"aud": "other", "iss": "me"}), 60)),
            Err(TokenError::WrongAudience)
        );
        assert_eq!(
            v.verify(&hs(json!({"aud": "refract", "iss": "you"}), 60)),
            Err(TokenError::WrongIssuer)
        );
        let nbf = json!({"aud": "refract", "iss": "me", "nbf": now_secs() + 600});
        assert_eq!(v.verify(&hs(nbf, 900)), Err(TokenError::NotYetValid));
        // Signed with another secret.
        let other = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({"aud": "refract", "iss": "me", "exp": now_secs() + 60}),
            &EncodingKey::from_secret(b"another-secret-of-32-bytes......"),
        )
        .unwrap();
        assert_eq!(v.verify(&other), Err(TokenError::Invalid));
    }

    #[test]
    fn alg_none_and_algorithm_confusion_are_refused() {
        let v = settings(json!({})).verifier().unwrap();
        // {"alg":"none"} with an empty signature.
        let header = base64_url(br#"{"alg":"none","typ":"JWT"}"#);
        let body = base64_url(format!(r#"{{"sub":"x","exp":{}}}"#, now_secs() + 60).as_bytes());
        assert_eq!(
            v.verify(&format!("{header}.{body}.")),
            Err(TokenError::Invalid)
        );
        // An HS384 token on an HS256 verifier.
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &json!({"exp": now_secs() + 60}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(v.verify(&t), Err(TokenError::Invalid));
    }

    fn base64_url(b: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    #[test]
    fn fractional_and_far_exp_still_give_a_deadline() {
        let claims = |exp: Value| Claims {
            map: json!({"exp": exp}).as_object().unwrap().clone(),
        };
        let soon = now_secs() as f64 + 60.4;
        assert_eq!(claims(json!(soon)).expires_at(), Some(soon.round() as u64));
        assert!(claims(json!(soon)).time_left().unwrap() <= Duration::from_secs(61));
        let left = claims(json!(u64::MAX)).time_left().unwrap();
        assert_eq!(left, MAX_TIME_LEFT);
        let _ = std::time::Instant::now() + left;
        assert_eq!(claims(json!(-1)).expires_at(), None);
        assert_eq!(claims(json!(1e30)).expires_at(), None);
    }

    #[test]
    fn tokens_without_exp_are_refused() {
        let v = settings(json!({})).verifier().unwrap();
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "forever"}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(v.verify(&t), Err(TokenError::Invalid));
    }

    #[test]
    fn settings_are_checked() {
        let e = |v: Value| {
            serde_json::from_value::<JwtSettings>(v)
                .unwrap()
                .verifier()
                .unwrap_err()
                .0
        };
        assert!(e(json!({})).contains("exactly one of"));
        assert!(e(json!({"secret": "short"})).contains("16 bytes"));
        assert!(e(json!({"secret": SECRET, "algorithm": "RS256"})).contains("public_key_file"));
        assert!(e(json!({"secret": SECRET, "algorithm": "XX1"})).contains("unknown"));
        assert!(e(json!({"secret": SECRET, "leeway": "1m"})).contains("30s"));
        assert!(e(json!({"secret_env": "REFRACT_TEST_SURELY_UNSET"})).contains("is not set"));
        assert!(
            e(json!({"public_key_file": "/nonexistent.pem", "algorithm": "RS256"}))
                .contains("/nonexistent.pem")
        );
    }

    #[test]
    fn minted_tokens_verify() {
        let v = settings(json!({})).verifier().unwrap();
        let mut claims = Map::new();
        claims.insert("sub".into(), "bob".into());
        let t = mint_hmac(
            SECRET.as_bytes(),
            Algorithm::HS256,
            claims,
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(v.verify(&t).unwrap().subject(), Some("bob"));
    }
}
