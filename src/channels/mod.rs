//! Channels: a Phoenix Channels endpoint bridged to Redis (`docs/channels.md`).
//!
//! - [`socket`]: one Phoenix socket: heartbeat, join/leave, pushes to `from:<topic>:<event>`.
//! - [`hub`]: topic membership on this node, and fan-out.
//! - [`presence`]: presence across nodes, kept in Redis; dead-node sweeps; the `admin` stats.
//! - [`bridge`]: the node's one pub/sub connection for `to:<topic>:*`.
//! - [`token`]: the token endpoint.

pub mod bridge;
pub mod hub;
pub mod presence;
pub mod socket;
pub mod token;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, SEC_WEBSOCKET_PROTOCOL};
use hyper::{Request, Response, StatusCode};
use tokio::sync::{mpsc, oneshot};

use crate::Gateway;
use crate::auth::{Claims, Verifier};
use crate::config::ChannelsSettings;
use crate::metrics::{ChannelMetrics, Metrics, Rejection};
use crate::publisher::{Publish, Tag};

/// phoenix.js 1.8 puts the socket token in a subprotocol: `base64url.bearer.phx.<base64url>`.
const PHX_TOKEN_PROTOCOL: &str = "base64url.bearer.phx.";

pub struct Channels {
    pub settings: ChannelsSettings,
    /// `<endpoint>/websocket`.
    pub ws_path: String,
    pub verifier: Verifier,
    /// The HMAC secret, for the token endpoint (absent with a public key).
    secret: Option<Vec<u8>>,
    api_key: Option<String>,
    pub hub: hub::Hub,
    bridge: mpsc::UnboundedSender<bridge::Cmd>,
    metrics: Arc<Metrics>,
    command_timeout: Duration,
    /// Set once a previous process's presence entries under this node id are cleared; joins
    /// wait for it (answered `unavailable`, which phoenix.js retries).
    pub presence_ready: std::sync::atomic::AtomicBool,
}

impl Channels {
    /// Built from validated settings; the receiver goes to [`bridge::run`].
    pub fn new(
        settings: ChannelsSettings,
        metrics: Arc<Metrics>,
        command_timeout: Duration,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<bridge::Cmd>) {
        let jwt = settings.jwt();
        let verifier = settings.verifier.clone();
        let secret = jwt.secret_bytes().ok();
        let api_key = settings
            .token_endpoint
            .as_ref()
            .and_then(|t| t.api_key_env.as_ref())
            .and_then(|var| std::env::var(var).ok());
        if settings.token_endpoint.as_ref().is_some_and(|t| t.open) {
            tracing::warn!(
                "the Channels token endpoint is OPEN: anyone can mint tokens (development only)"
            );
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let ch = Self {
            ws_path: settings.websocket_path(),
            settings,
            verifier,
            secret,
            api_key,
            hub: hub::Hub::new(metrics.clone()),
            bridge: tx,
            metrics,
            command_timeout,
            presence_ready: std::sync::atomic::AtomicBool::new(false),
        };
        (Arc::new(ch), rx)
    }

    pub fn metrics(&self) -> &ChannelMetrics {
        &self.metrics.channels
    }

    /// Subscribes this node to a topic, waiting for Redis to confirm.
    pub async fn subscribe(&self, topic: &str) -> bool {
        let (done, confirmed) = oneshot::channel();
        if self
            .bridge
            .send(bridge::Cmd::Subscribe(topic.to_owned(), done))
            .is_err()
        {
            return false;
        }
        matches!(
            tokio::time::timeout(self.command_timeout, confirmed).await,
            Ok(Ok(true))
        )
    }

    pub fn unsubscribe(&self, topic: &str) {
        let _ = self.bridge.send(bridge::Cmd::Unsubscribe(topic.to_owned()));
    }

    /// Compares in constant time, so the key cannot be guessed byte by byte.
    pub fn api_key_matches(&self, given: &str) -> bool {
        let Some(key) = &self.api_key else {
            return false;
        };
        key.len() == given.len()
            && key
                .bytes()
                .zip(given.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// A token for the token endpoint, signed with the configured secret.
    pub fn mint(&self, claims: serde_json::Map<String, serde_json::Value>) -> Option<String> {
        let secret = self.secret.as_ref()?;
        crate::auth::mint_hmac(
            secret,
            jsonwebtoken::Algorithm::HS256,
            claims,
            self.settings.token_ttl,
        )
        .ok()
    }
}

/// The checks before a socket upgrade: serializer version, the socket credential if any,
/// readiness, the connection limit.
pub async fn upgrade(
    gw: &Arc<Gateway>,
    ch: &Arc<Channels>,
    mut req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    if !query.get("vsn").is_some_and(|v| v.starts_with("2.")) {
        return plain(
            StatusCode::BAD_REQUEST,
            "unsupported serializer: connect with vsn=2.0.0\n",
        );
    }
    if !hyper_tungstenite::is_upgrade_request(&req) {
        return crate::error::rejection_response(Rejection::UpgradeRequired);
    }
    let offered: Vec<String> = req
        .headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_owned()))
        .collect();
    let from_protocol = offered.iter().find_map(|p| {
        let b64 = p.strip_prefix(PHX_TOKEN_PROTOCOL)?;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b64.trim_end_matches('='))
            .ok()?;
        String::from_utf8(raw).ok()
    });
    let token = query
        .get("token")
        .or_else(|| query.get("userToken"))
        .cloned()
        .or(from_protocol);
    let credential: Option<Claims> = match token {
        None => None,
        Some(t) => match ch.verifier.verify(&t) {
            Ok(claims) => Some(claims),
            Err(_) => return plain(StatusCode::FORBIDDEN, "invalid socket token\n"),
        },
    };
    if !gw.is_ready() || gw.shutdown.is_cancelled() {
        gw.metrics.rejected(Rejection::NotReady);
        return crate::error::rejection_response(Rejection::NotReady);
    }
    let Some(slot) = gw.try_reserve_socket_slot() else {
        gw.metrics.rejected(Rejection::TooManyConnections);
        return crate::error::rejection_response(Rejection::TooManyConnections);
    };
    let config = crate::http::websocket_config(&gw.settings.server, ch.settings.max_frame_size);
    let (mut response, upgrade) = match hyper_tungstenite::upgrade(&mut req, Some(config)) {
        Ok(pair) => pair,
        Err(_) => return crate::error::rejection_response(Rejection::BadUpgrade),
    };
    if offered.iter().any(|p| p == "phoenix") {
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("phoenix"));
    }

    let admitted = socket::Admitted { slot, credential };
    gw.tasks
        .spawn(socket::run(gw.clone(), ch.clone(), upgrade, admitted));
    response
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

/// One node at a time publishes the `system` topic's clock: whoever holds a short Redis lease.
const CLOCK_SCRIPT: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) or redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return redis.call('INCR', KEYS[2])
end
return 0";

pub async fn clock(gw: Arc<Gateway>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let lease_ms = (every.as_millis() as u64 * 3).max(1000);
    loop {
        tokio::select! {
            _ = gw.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let counter = async {
            let mut conn = gw.publisher.pool().get().await.ok()?;
            redis::cmd("EVAL")
                .arg(CLOCK_SCRIPT)
                .arg(2)
                .arg("refract:channels:system:leader")
                .arg("refract:channels:system:counter")
                .arg(gw.node.as_str())
                .arg(lease_ms)
                .query_async::<u64>(&mut conn)
                .await
                .ok()
        };
        let Ok(Some(n)) = tokio::time::timeout(gw.settings.redis.command_timeout, counter).await
        else {
            continue;
        };
        if n == 0 {
            continue;
        }
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        let payload = serde_json::json!({"datetime": now.to_string(), "counter": n});
        let p = Publish::new("to:system:datetime", payload.to_string(), Tag::Channel);
        gw.publisher.publish(0, p).await;
    }
}
