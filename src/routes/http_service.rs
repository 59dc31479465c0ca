//! Legacy HTTP services: each event of a connection is POSTed as JSON and the response body's
//! replies go to that client (the per-connection order is kept by [`super::lane`]).
//!
//! A per-service semaphore bounds the requests in flight; per-URL health backs a failing URL
//! off (capped, exponential).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::Gateway;
use crate::backoff::Backoff;
use crate::config::HttpService as Settings;
use crate::log::LogLimiter;
use crate::metrics::{HttpMetrics, HttpResult};
use crate::prism::{self, Action};

/// Consecutive failures of one URL before it is backed off.
const FAILURES_BEFORE_BACKOFF: u32 = 3;

/// A configured HTTP service with its runtime state.
pub struct HttpService {
    pub name: String,
    pub metrics: HttpMetrics,
    pub config: Settings,
    headers: reqwest::header::HeaderMap,
    in_flight: Semaphore,
    next_url: AtomicUsize,
    health: Vec<Mutex<UrlHealth>>,
    /// Rate-limits the warnings of failed requests.
    pub log: LogLimiter,
    /// Its own client when it trusts its own CA (`tls_ca_file`); else the gateway's.
    client: Option<reqwest::Client>,
}

impl std::fmt::Debug for HttpService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpService")
            .field("name", &self.name)
            .field("urls", &self.config.urls)
            .finish_non_exhaustive()
    }
}

/// How every client for HTTP services and hooks is made: the gateway's shared one, and a
/// service's own when it trusts its own CA.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60))
}

/// A client trusting only the CA certificates in `ca` (checked by config validation).
fn own_client(ca: &std::path::Path) -> Result<reqwest::Client, reqwest::Error> {
    let pem = std::fs::read(ca).unwrap_or_default();
    let roots = reqwest::Certificate::from_pem_bundle(&pem)?;
    client_builder().tls_certs_only(roots).build()
}

/// One URL of a service as the admin page shows it.
pub struct UrlState {
    pub url: String,
    /// Consecutive failed requests.
    pub failures: u32,
    /// Left of its backoff, if it is backing off.
    pub backing_off_for: Option<Duration>,
}

struct UrlHealth {
    failures: u32,
    backoff: Backoff,
    down_until: Option<Instant>,
}

impl HttpService {
    pub fn new(
        name: String,
        metrics: HttpMetrics,
        config: Settings,
    ) -> Result<Self, reqwest::Error> {
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &config.headers {
            // Validated in config.
            if let (Ok(k), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(k.as_bytes()),
                reqwest::header::HeaderValue::from_str(v),
            ) {
                headers.insert(k, v);
            }
        }
        let health = config
            .urls
            .iter()
            .map(|_| {
                Mutex::new(UrlHealth {
                    failures: 0,
                    backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(30)),
                    down_until: None,
                })
            })
            .collect();
        let client = match &config.tls_ca_file {
            Some(ca) => Some(own_client(ca)?),
            None => None,
        };
        Ok(Self {
            name,
            metrics,
            in_flight: Semaphore::new(config.max_in_flight),
            headers,
            next_url: AtomicUsize::new(0),
            health,
            log: LogLimiter::new(Duration::from_secs(5)),
            client,
            config,
        })
    }

    /// The next URL in round-robin order that is not backing off.
    fn pick_url(&self) -> Option<usize> {
        let n = self.config.urls.len();
        let start = self.next_url.fetch_add(1, Relaxed);
        let now = Instant::now();
        (0..n).map(|k| (start + k) % n).find(|&i| {
            let h = self.health[i].lock().unwrap_or_else(|e| e.into_inner());
            h.down_until.is_none_or(|t| now >= t)
        })
    }

    /// Records the outcome of a request to URL `i`; returns true when it just went down.
    fn record(&self, i: usize, healthy: bool) -> Option<Duration> {
        let mut h = self.health[i].lock().unwrap_or_else(|e| e.into_inner());
        if healthy {
            h.failures = 0;
            h.down_until = None;
            h.backoff.reset();
            return None;
        }
        h.failures += 1;
        (h.failures >= FAILURES_BEFORE_BACKOFF).then(|| {
            let delay = h.backoff.next_delay();
            h.down_until = Some(Instant::now() + delay);
            delay
        })
    }

    /// Each URL's health, for the admin page.
    pub fn url_states(&self) -> Vec<UrlState> {
        let now = Instant::now();
        let states = self.config.urls.iter().zip(&self.health).map(|(url, h)| {
            let h = h.lock().unwrap_or_else(|e| e.into_inner());
            UrlState {
                url: url.to_string(),
                failures: h.failures,
                backing_off_for: h.down_until.and_then(|t| t.checked_duration_since(now)),
            }
        });
        states.collect()
    }

    /// URLs currently backing off, for the metrics gauge.
    pub fn urls_down(&self) -> usize {
        let now = Instant::now();
        self.health
            .iter()
            .filter(|h| {
                h.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .down_until
                    .is_some_and(|t| now < t)
            })
            .count()
    }
}

/// One POST, bounded by the service's in-flight limit and timeout.
pub async fn post(
    gw: &Gateway,
    service: &HttpService,
    body: Bytes,
) -> Result<Vec<Action>, HttpResult> {
    let _permit = service
        .in_flight
        .acquire()
        .await
        .map_err(|_| HttpResult::BackingOff)?;
    let Some(i) = service.pick_url() else {
        return Err(HttpResult::BackingOff);
    };
    let outcome = request(gw, service, i, body).await;
    let healthy = !matches!(
        outcome,
        Err(HttpResult::Timeout | HttpResult::ConnectError | HttpResult::ServerError)
    );
    if let Some(delay) = service.record(i, healthy) {
        tracing::warn!(
            service = %service.name,
            url = %service.config.urls[i],
            retry_in = ?delay,
            "HTTP service URL keeps failing; backing off"
        );
    }
    outcome
}

async fn request(
    gw: &Gateway,
    service: &HttpService,
    i: usize,
    body: Bytes,
) -> Result<Vec<Action>, HttpResult> {
    let client = service.client.as_ref().unwrap_or(&gw.http_client);
    let sent = client
        .post(service.config.urls[i].clone())
        .headers(service.headers.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .timeout(service.config.timeout)
        .body(body)
        .send()
        .await;
    let mut response = sent.map_err(|e| {
        if e.is_timeout() {
            HttpResult::Timeout
        } else {
            HttpResult::ConnectError
        }
    })?;
    let status = response.status();
    if status.is_server_error() {
        return Err(HttpResult::ServerError);
    }
    if !status.is_success() {
        return Err(HttpResult::ClientError);
    }
    if status == reqwest::StatusCode::NO_CONTENT {
        return Ok(Vec::new());
    }
    let limit = gw.settings.redis.max_reply_size;
    let mut buf = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > limit {
                    return Err(HttpResult::TooLarge);
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) if e.is_timeout() => return Err(HttpResult::Timeout),
            Err(_) => return Err(HttpResult::ConnectError),
        }
    }
    prism::decode_http_body(&buf, limit).map_err(|e| match e {
        prism::ReplyError::TooLarge => HttpResult::TooLarge,
        _ => HttpResult::InvalidBody,
    })
}
