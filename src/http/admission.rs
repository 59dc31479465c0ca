//! Who may connect to a route, decided before the upgrade: address lists, origins, a JWT, and an
//! optional HTTP hook. Whatever admits a client also says who it is (`user`, `claims`), which
//! every event of the connection then carries to services.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hyper::header::{AUTHORIZATION, HeaderMap, HeaderValue, ORIGIN};
use hyper::{StatusCode, Uri};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use crate::Gateway;
use crate::auth::TokenError;
use crate::config::{AdmissionSettings, AuthSettings, HookSettings};
use crate::http::upgrade::{offered_protocols, query_pairs};
use crate::metrics::Denial;

/// Subprotocol prefix that carries a token, for browsers (which cannot set headers):
/// `new WebSocket(url, ["bearer." + token])`.
pub const BEARER_PROTOCOL_PREFIX: &str = "bearer.";

/// A route's admission rules, resolved at start-up.
pub struct Gate {
    pub rules: AdmissionSettings,
    /// With the verifier that validation built, used when `jwt` is set.
    pub auth: Option<AuthSettings>,
    hook_slots: Option<Semaphore>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

/// Who was admitted.
#[derive(Debug, Default)]
pub struct Identity {
    pub user: Option<String>,
    /// Serialized once, spliced into every event.
    pub claims: Option<Box<RawValue>>,
    /// Time left on the token: the connection is closed (4001) when it runs out.
    pub expires_in: Option<Duration>,
    /// The subprotocol to answer with, if the client offered any.
    pub protocol: Option<HeaderValue>,
}

/// A refusal: the status to answer and the reason to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    pub status: StatusCode,
    pub reason: Denial,
}

impl Denied {
    fn new(status: StatusCode, reason: Denial) -> Self {
        Self { status, reason }
    }
}

impl Gate {
    /// `route` settings over the `[server]` defaults, with the verifier that validation built.
    pub fn new(
        defaults: &AdmissionSettings,
        route: &AdmissionSettings,
        auth: Option<AuthSettings>,
    ) -> Self {
        let hook_slots = auth
            .as_ref()
            .and_then(|a| a.connect_hook.as_ref())
            .map(|h| Semaphore::new(h.max_in_flight));
        Self {
            rules: route.or(defaults),
            auth,
            hook_slots,
        }
    }

    /// The checks that need nothing but the request: address lists and origin.
    pub fn check_request(&self, ip: IpAddr, headers: &HeaderMap) -> Result<(), Denied> {
        let in_list = |list: &Option<Vec<ipnet::IpNet>>| {
            list.as_ref().map(|l| l.iter().any(|net| net.contains(&ip)))
        };
        if in_list(&self.rules.deny_ips) == Some(true)
            || in_list(&self.rules.allow_ips) == Some(false)
        {
            return Err(Denied::new(StatusCode::FORBIDDEN, Denial::IpDenied));
        }
        if let (Some(allowed), Some(origin)) = (&self.rules.allowed_origins, headers.get(ORIGIN)) {
            let origin = origin.to_str().unwrap_or("");
            if !allowed.iter().any(|p| origin_matches(origin, p)) {
                return Err(Denied::new(StatusCode::FORBIDDEN, Denial::Origin));
            }
        }
        Ok(())
    }

    /// The JWT and the hook, in that order; both must admit when both are configured. The hook's
    /// `user`/`claims`, when it gives them, win over the token's.
    pub async fn authenticate(
        &self,
        gw: &Gateway,
        route: &str,
        peer: SocketAddr,
        client_ip: IpAddr,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Identity, Denied> {
        let mut identity = Identity {
            protocol: chosen_protocol(headers),
            ..Identity::default()
        };
        let Some(auth) = &self.auth else {
            return Ok(identity);
        };
        if auth.jwt.is_some() {
            let token = find_token(headers, uri, auth.token_query_param());
            let claims = auth
                .verifier
                .verify(token.as_deref().unwrap_or(""))
                .map_err(|e| match e {
                    TokenError::Expired => Denied::new(StatusCode::UNAUTHORIZED, Denial::Expired),
                    TokenError::WrongAudience => {
                        Denied::new(StatusCode::FORBIDDEN, Denial::BadToken)
                    }
                    _ => Denied::new(StatusCode::UNAUTHORIZED, Denial::BadToken),
                })?;
            identity.expires_in = claims.time_left();
            identity.user = claims.subject().map(str::to_owned);
            identity.claims = Some(raw(&Value::Object(claims.map)));
        }
        if let (Some(hook), Some(slots)) = (&auth.connect_hook, &self.hook_slots) {
            let verdict = ask_hook(gw, hook, slots, route, peer, client_ip, uri, headers).await?;
            if verdict.user.is_some() {
                identity.user = verdict.user;
            }
            if let Some(claims) = verdict.claims {
                identity.claims = Some(raw(&Value::Object(claims)));
            }
        }
        Ok(identity)
    }
}

fn raw(v: &Value) -> Box<RawValue> {
    RawValue::from_string(v.to_string()).expect("a Value serializes to valid JSON")
}

/// Bearer header, then the query parameter, then a `bearer.<token>` subprotocol. Public for the
/// fuzz target: it reads what any client sends.
pub fn find_token(headers: &HeaderMap, uri: &Uri, param: &str) -> Option<String> {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        });
    if let Some(t) = bearer {
        return Some(t.trim().to_owned());
    }
    if let Some(t) = query_pairs(uri).remove(param) {
        return Some(t);
    }
    offered_protocols(headers)
        .find_map(|p| p.strip_prefix(BEARER_PROTOCOL_PREFIX).map(str::to_owned))
}

/// A client that offers subprotocols must get one back, or the browser drops the connection:
/// the first one that is not a token, else the token protocol itself. Public for the fuzz target.
pub fn chosen_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut offered = offered_protocols(headers).peekable();
    let first = *offered.peek()?;
    let pick = offered
        .find(|p| !p.starts_with(BEARER_PROTOCOL_PREFIX))
        .unwrap_or(first);
    HeaderValue::from_str(pick).ok()
}

/// `https://app.example.com` matches exactly (case-insensitive); `*.example.com` matches any
/// subdomain with any scheme; `https://*.example.com` any subdomain over https.
pub fn origin_matches(origin: &str, pattern: &str) -> bool {
    let origin = origin.to_ascii_lowercase();
    let pattern = pattern.to_ascii_lowercase();
    let (scheme, host) = match origin.split_once("://") {
        Some((s, h)) => (s, h),
        None => return false,
    };
    let (want_scheme, host_pattern) = match pattern.split_once("://") {
        Some((s, h)) => (Some(s), h),
        None => (None, pattern.as_str()),
    };
    if want_scheme.is_some_and(|s| s != scheme) {
        return false;
    }
    match host_pattern.strip_prefix("*.") {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(&format!(".{suffix}")),
        None if want_scheme.is_some() => host == host_pattern,
        None => false,
    }
}

#[derive(Deserialize)]
struct HookVerdict {
    allow: bool,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    claims: Option<Map<String, Value>>,
}

#[allow(clippy::too_many_arguments)]
async fn ask_hook(
    gw: &Gateway,
    hook: &HookSettings,
    slots: &Semaphore,
    route: &str,
    peer: SocketAddr,
    client_ip: IpAddr,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<HookVerdict, Denied> {
    let error = Denied::new(StatusCode::SERVICE_UNAVAILABLE, Denial::HookError);
    let forwarded: BTreeMap<&str, &str> = hook
        .forward_headers
        .iter()
        .filter_map(|name| Some((name.as_str(), headers.get(name.as_str())?.to_str().ok()?)))
        .collect();
    let body = serde_json::json!({
        "route": route,
        "remoteAddress": client_ip.to_string(),
        "remotePort": peer.port(),
        "headers": forwarded,
        "query": query_pairs(uri),
    });
    let call = async {
        // Waiting for a slot counts against the same timeout as the call.
        let _permit = slots.acquire().await.map_err(|_| error)?;
        let response = gw
            .http_client
            .post(&hook.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|_| error)?;
        let status = response.status();
        if status.is_client_error() {
            let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::FORBIDDEN);
            return Err(Denied::new(status, Denial::HookDenied));
        }
        if !status.is_success() {
            return Err(error);
        }
        let bytes = response.bytes().await.map_err(|_| error)?;
        let verdict: HookVerdict = serde_json::from_slice(&bytes).map_err(|_| error)?;
        if verdict.allow {
            Ok(verdict)
        } else {
            Err(Denied::new(StatusCode::FORBIDDEN, Denial::HookDenied))
        }
    };
    tokio::time::timeout(hook.timeout, call)
        .await
        .unwrap_or(Err(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly_or_by_subdomain_pattern() {
        assert!(origin_matches(
            "https://app.example.com",
            "https://app.example.com"
        ));
        assert!(origin_matches(
            "HTTPS://App.Example.com",
            "https://app.example.com"
        ));
        assert!(!origin_matches(
            "https://app.example.com.evil.io",
            "https://app.example.com"
        ));
        assert!(origin_matches("https://a.example.com", "*.example.com"));
        assert!(origin_matches("http://a.b.example.com", "*.example.com"));
        assert!(!origin_matches("https://example.com", "*.example.com"));
        assert!(!origin_matches("https://badexample.com", "*.example.com"));
        assert!(origin_matches(
            "https://a.example.com",
            "https://*.example.com"
        ));
        assert!(!origin_matches(
            "http://a.example.com",
            "https://*.example.com"
        ));
        assert!(!origin_matches("null", "*.example.com"));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn tokens_come_from_header_query_or_subprotocol() {
        let uri: Uri = "/q?token=from-query&x=1".parse().unwrap();
        let plain: Uri = "/q".parse().unwrap();
        let h = headers(&[("authorization", "Bearer from-header")]);
        assert_eq!(
            find_token(&h, &uri, "token").as_deref(),
            Some("from-header")
        );
        assert_eq!(
            find_token(&HeaderMap::new(), &uri, "token").as_deref(),
            Some("from-query")
        );
        assert_eq!(find_token(&HeaderMap::new(), &uri, "jwt"), None);
        let h = headers(&[("sec-websocket-protocol", "chat, bearer.from.proto")]);
        assert_eq!(
            find_token(&h, &plain, "token").as_deref(),
            Some("from.proto")
        );
    }

    #[test]
    fn the_answered_subprotocol_is_never_the_token_when_another_was_offered() {
        let h = headers(&[("sec-websocket-protocol", "bearer.abc, chat")]);
        assert_eq!(chosen_protocol(&h).unwrap(), "chat");
        let h = headers(&[("sec-websocket-protocol", "bearer.abc")]);
        assert_eq!(chosen_protocol(&h).unwrap(), "bearer.abc");
        assert!(chosen_protocol(&HeaderMap::new()).is_none());
    }
}
