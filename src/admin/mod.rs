//! The admin page: what this node and the nodes beside it are doing, for a person (`/admin`, one
//! self-contained HTML page) and for scripts (`/admin/api/state`, the JSON the page reads). Off
//! unless `[admin]` is configured, and never open: the data needs the configured bearer token or
//! basic credentials. The page itself is static and carries no data.
//!
//! - [`state`]: the JSON: this node, its routes and services, the nodes on this Redis, Channels
//!   topics, and every drop counter with a reason.

pub mod state;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{HeaderMap, Response, StatusCode};

use crate::Gateway;
use crate::config::{AdminSettings, Credentials};
use crate::error::{Challenge, Refusal};
use crate::redis::store;

const PAGE: &str = include_str!("page.html");

/// Answers `/admin` (the page) and `/admin/api/state` (its data, with the credentials).
pub async fn handle(
    gw: &Arc<Gateway>,
    admin: &AdminSettings,
    path: &str,
    headers: &HeaderMap,
) -> Result<Response<Full<Bytes>>, Refusal> {
    if path == "/admin" {
        return Ok(respond(
            "text/html; charset=utf-8",
            Bytes::from_static(PAGE.as_bytes()),
        ));
    }
    authorize(&admin.credentials, headers)?;
    let body = state::collect(gw, admin).await.to_string();
    Ok(respond("application/json", body.into()))
}

fn respond(content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, content_type.parse().unwrap());
    headers.insert(CACHE_CONTROL, "no-store".parse().unwrap());
    response
}

/// The request's `Authorization` must be exactly what the credentials make, compared in time
/// that does not depend on where they differ.
fn authorize(credentials: &Credentials, headers: &HeaderMap) -> Result<(), Refusal> {
    let (expected, challenge) = match credentials {
        Credentials::Bearer(token) => (format!("Bearer {token}"), Challenge::Bearer),
        Credentials::Basic { username, password } => {
            let pair =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            (format!("Basic {pair}"), Challenge::Basic)
        }
        Credentials::None => return Err(Refusal::Unauthorized(Challenge::Bearer)),
    };
    let given = headers
        .get(AUTHORIZATION)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    match same(given, expected.as_bytes()) {
        true => Ok(()),
        false => Err(Refusal::Unauthorized(challenge)),
    }
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Keeps this node in the node list (its liveness key, with its stats) when no presence worker
/// does it: the admin page lists every node on this Redis.
pub async fn heartbeat(gw: Arc<Gateway>) {
    const EVERY: Duration = Duration::from_secs(5);
    const TTL_MS: u64 = 15_000;
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = gw.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let node = gw.node.as_str();
        if let Err(e) = store::set_alive(&gw.redis, node, &gw.stats(), TTL_MS).await {
            tracing::debug!(error = %e, "node heartbeat not written");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn only_the_exact_credentials_pass() {
        let bearer = Credentials::Bearer("0123456789abcdef".into());
        assert!(authorize(&bearer, &headers("Bearer 0123456789abcdef")).is_ok());
        for wrong in [
            "Bearer 0123456789abcdeF",
            "Bearer 0123456789abcde",
            "bearer 0123456789abcdef",
            "",
        ] {
            assert_eq!(
                authorize(&bearer, &headers(wrong)).unwrap_err(),
                Refusal::Unauthorized(Challenge::Bearer),
                "{wrong:?}"
            );
        }
        assert!(authorize(&bearer, &HeaderMap::new()).is_err());
        let basic = Credentials::Basic {
            username: "ops".into(),
            password: "correct horse battery".into(),
        };
        // base64("ops:correct horse battery")
        let good = "Basic b3BzOmNvcnJlY3QgaG9yc2UgYmF0dGVyeQ==";
        assert!(authorize(&basic, &headers(good)).is_ok());
        let err = authorize(&basic, &headers("Basic b3BzOndyb25n")).unwrap_err();
        assert_eq!(err, Refusal::Unauthorized(Challenge::Basic));
        assert!(authorize(&Credentials::None, &headers(good)).is_err());
    }
}
