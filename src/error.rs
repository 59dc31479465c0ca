//! Errors, and the one place where each becomes something on the wire: an HTTP status and body
//! before an upgrade, a close frame after it, a `phx_reply` error on a Channels topic. Clients
//! never see internal details.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use hyper_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};

use crate::http::admission::Denied;
use crate::metrics::{CloseReason, JoinResult, Rejection};
use crate::redis::client::RedisError;

/// Errors that stop the gateway from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
}

/// Why a request was refused before any upgrade. Counted where it is decided; answered here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Refused by the gateway itself (path, upgrade, readiness, limits, Channels checks).
    Rejected(Rejection),
    /// Refused by a route's admission rules.
    Denied(Denied),
    /// The admin page's credentials were missing or wrong; the challenge names the scheme
    /// configured. Counted as [`Rejection::Unauthorized`].
    Unauthorized(Challenge),
}

/// How the admin page wants to be asked (`WWW-Authenticate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    Bearer,
    Basic,
}

impl From<Rejection> for Refusal {
    fn from(r: Rejection) -> Self {
        Self::Rejected(r)
    }
}

impl From<Denied> for Refusal {
    fn from(d: Denied) -> Self {
        Self::Denied(d)
    }
}

impl Refusal {
    pub fn response(self) -> Response<Full<Bytes>> {
        match self {
            Self::Rejected(r) => rejection_response(r),
            Self::Denied(d) => denied_response(d),
            Self::Unauthorized(challenge) => {
                let mut response = rejection_response(Rejection::Unauthorized);
                let value = match challenge {
                    Challenge::Bearer => "Bearer realm=\"refract admin\"",
                    Challenge::Basic => "Basic realm=\"refract admin\", charset=\"UTF-8\"",
                };
                let headers = response.headers_mut();
                headers.insert(hyper::header::WWW_AUTHENTICATE, value.parse().unwrap());
                response
            }
        }
    }
}

/// The HTTP answer to a refused request. Bodies are short and never carry internal details.
fn rejection_response(rejection: Rejection) -> Response<Full<Bytes>> {
    let (status, body) = match rejection {
        Rejection::NotFound => (StatusCode::NOT_FOUND, "not found\n"),
        Rejection::UpgradeRequired => (
            StatusCode::UPGRADE_REQUIRED,
            "this path is a WebSocket route: upgrade required\n",
        ),
        Rejection::BadUpgrade => (StatusCode::BAD_REQUEST, "bad WebSocket upgrade request\n"),
        Rejection::NotReady => (
            StatusCode::SERVICE_UNAVAILABLE,
            "gateway not ready: Redis is unavailable\n",
        ),
        Rejection::TooManyConnections => {
            (StatusCode::SERVICE_UNAVAILABLE, "too many connections\n")
        }
        Rejection::UnsupportedSerializer => (
            StatusCode::BAD_REQUEST,
            "unsupported serializer: connect with vsn=2.0.0\n",
        ),
        Rejection::BadSocketToken => (StatusCode::FORBIDDEN, "invalid socket token\n"),
        Rejection::Unauthorized => (StatusCode::UNAUTHORIZED, "credentials required\n"),
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        "text/plain; charset=utf-8".parse().unwrap(),
    );
    if rejection == Rejection::UpgradeRequired {
        headers.insert(hyper::header::UPGRADE, "websocket".parse().unwrap());
        headers.insert(hyper::header::CONNECTION, "Upgrade".parse().unwrap());
    }
    response
}

/// The HTTP answer to a client refused by a route's admission rules: the status chosen by the
/// rule and a short JSON body naming the reason, nothing more.
fn denied_response(denied: Denied) -> Response<Full<Bytes>> {
    let body = format!("{{\"error\":\"{}\"}}\n", denied.reason.as_str());
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = denied.status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        "application/json".parse().unwrap(),
    );
    response
}

/// A close the gateway sends: code, reason text, and how it is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: &'static str,
    pub why: CloseReason,
}

impl Close {
    const fn new(code: u16, reason: &'static str, why: CloseReason) -> Self {
        Self { code, reason, why }
    }

    pub const SHUTDOWN: Close = Close::new(1001, "server shutting down", CloseReason::Shutdown);

    pub const IDLE: Close = Close::new(1001, "idle timeout", CloseReason::IdleTimeout);

    pub const TOKEN_EXPIRED: Close = Close::new(4001, "token expired", CloseReason::TokenExpired);

    pub const RATE_LIMIT: Close = Close::new(1008, "rate limit", CloseReason::RateLimited);

    pub const TOO_MANY_BAD_FRAMES: Close = Close::new(
        1007,
        "too many malformed frames",
        CloseReason::ProtocolError,
    );

    /// The close for a connection ended from outside (see [`crate::ws::queue::Control`]).
    pub fn for_kill(why: CloseReason) -> Close {
        let (code, reason) = match why {
            CloseReason::SlowClient => (1013, "slow client: outbound queue full"),
            CloseReason::WriteTimeout => (1013, "slow client: write timed out"),
            CloseReason::Shutdown => return Self::SHUTDOWN,
            CloseReason::RouteRemoved => (1001, "route removed"),
            _ => (1011, "closed by the gateway"),
        };
        Close { code, reason, why }
    }
}

/// What a failed read from a client means: the close frame to try to send (if the socket can
/// still carry one) and how it is counted.
pub fn close_for_read_error(e: &WsError) -> (Option<Close>, CloseReason) {
    let close = match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            Close::new(1009, "message too large", CloseReason::MessageTooLarge)
        }
        WsError::Utf8(_) => Close::new(
            1007,
            "text frame is not valid UTF-8",
            CloseReason::InvalidUtf8,
        ),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            return (None, CloseReason::ConnectionLost);
        }
        WsError::Protocol(_) | WsError::Capacity(_) | WsError::AttackAttempt => {
            Close::new(1002, "protocol error", CloseReason::ProtocolError)
        }
        _ => return (None, CloseReason::ConnectionLost),
    };
    (Some(close), close.why)
}

/// Why the token endpoint refused a request: its status and JSON body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    NotFound,
    MethodNotAllowed,
    Unauthorized,
    BodyTooLarge,
    BadBody,
    InvalidChannel,
    CannotSign,
    OriginNotAllowed,
}

impl TokenRefusal {
    pub fn status_and_body(self) -> (StatusCode, &'static str) {
        match self {
            Self::NotFound => (StatusCode::NOT_FOUND, r#"{"error":"not found"}"#),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, r#"{"error":"use POST"}"#),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, r#"{"error":"unauthorized"}"#),
            Self::BodyTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                r#"{"error":"body too large"}"#,
            ),
            Self::BadBody => (
                StatusCode::BAD_REQUEST,
                r#"{"error":"expected a JSON body {\"channel\": string, \"id\"?: string}"}"#,
            ),
            Self::InvalidChannel => (StatusCode::BAD_REQUEST, r#"{"error":"invalid channel"}"#),
            Self::CannotSign => (
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"error":"cannot sign"}"#,
            ),
            Self::OriginNotAllowed => (StatusCode::FORBIDDEN, r#"{"error":"origin not allowed"}"#),
        }
    }
}

/// Why a Channels request on a topic failed: the reason of its `phx_reply` error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhxError {
    InvalidTopic,
    Unauthorized,
    Forbidden,
    InvalidMeta,
    TooManyChannels,
    /// Redis could not take the join or the push; phoenix.js retries.
    Unavailable,
    /// A push on a topic the socket has not joined (or with a stale `join_ref`).
    UnmatchedTopic,
}

impl PhxError {
    pub fn reason(self) -> &'static str {
        match self {
            Self::InvalidTopic => "invalid topic",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::InvalidMeta => "invalid meta",
            Self::TooManyChannels => "too many channels joined",
            Self::Unavailable => "unavailable",
            Self::UnmatchedTopic => "unmatched topic",
        }
    }

    /// How a refused join is counted.
    pub fn join_result(self) -> JoinResult {
        match self {
            Self::InvalidTopic => JoinResult::InvalidTopic,
            Self::Unauthorized => JoinResult::Unauthorized,
            Self::Forbidden | Self::InvalidMeta | Self::UnmatchedTopic => JoinResult::Forbidden,
            Self::TooManyChannels => JoinResult::TooManyChannels,
            Self::Unavailable => JoinResult::Unavailable,
        }
    }
}
