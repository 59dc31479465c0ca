//! Errors, and the one place where each becomes something on the wire: an HTTP status before the
//! upgrade, or a close frame after it.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use hyper_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};

use crate::metrics::{CloseReason, Rejection};

/// Errors that stop the gateway from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("redis: {0}")]
    Redis(String),
    #[error("http client: {0}")]
    Http(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// The HTTP answer to a refused request. Bodies are short and never carry internal details.
pub fn rejection_response(rejection: Rejection) -> Response<Full<Bytes>> {
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
pub fn denied_response(denied: crate::admission::Denied) -> Response<Full<Bytes>> {
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
    pub const SHUTDOWN: Close = Close {
        code: 1001,
        reason: "server shutting down",
        why: CloseReason::Shutdown,
    };

    pub const IDLE: Close = Close {
        code: 1001,
        reason: "idle timeout",
        why: CloseReason::IdleTimeout,
    };

    pub const TOKEN_EXPIRED: Close = Close {
        code: 4001,
        reason: "token expired",
        why: CloseReason::TokenExpired,
    };

    pub const RATE_LIMIT: Close = Close {
        code: 1008,
        reason: "rate limit",
        why: CloseReason::RateLimited,
    };

    /// The close for a session ended from outside (see [`crate::registry::Control`]).
    pub fn for_kill(why: CloseReason) -> Close {
        let (code, reason) = match why {
            CloseReason::SlowClient => (1013, "slow client: outbound queue full"),
            CloseReason::WriteTimeout => (1013, "slow client: write timed out"),
            CloseReason::Shutdown => return Self::SHUTDOWN,
            _ => (1011, "closed by the gateway"),
        };
        Close { code, reason, why }
    }
}

/// What a failed read from a client means: the close frame to try to send (if the socket can
/// still carry one) and how it is counted.
pub fn close_for_read_error(e: &WsError) -> (Option<Close>, CloseReason) {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => (
            Some(Close {
                code: 1009,
                reason: "message too large",
                why: CloseReason::MessageTooLarge,
            }),
            CloseReason::MessageTooLarge,
        ),
        WsError::Utf8(_) => (
            Some(Close {
                code: 1007,
                reason: "text frame is not valid UTF-8",
                why: CloseReason::InvalidUtf8,
            }),
            CloseReason::InvalidUtf8,
        ),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            (None, CloseReason::ConnectionLost)
        }
        WsError::Protocol(_) | WsError::Capacity(_) | WsError::AttackAttempt => (
            Some(Close {
                code: 1002,
                reason: "protocol error",
                why: CloseReason::ProtocolError,
            }),
            CloseReason::ProtocolError,
        ),
        _ => (None, CloseReason::ConnectionLost),
    }
}
