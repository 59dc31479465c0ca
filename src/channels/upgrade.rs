//! The Channels front door's checks before a socket upgrade, in order: serializer version,
//! upgrade, the socket credential (if any), readiness, the connection limit.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response};

use crate::Gateway;
use crate::channels::endpoint::Channels;
use crate::channels::socket::{self, Admitted};
use crate::error::Refusal;
use crate::http::limits::ConnectionSlot;
use crate::http::upgrade::{self, offered_protocols, query_pairs};
use crate::metrics::Rejection;

/// phoenix.js 1.8 puts the socket token in a subprotocol: `base64url.bearer.phx.<base64url>`.
const PHX_TOKEN_PROTOCOL: &str = "base64url.bearer.phx.";

pub async fn upgrade(
    gw: &Arc<Gateway>,
    ch: &Arc<Channels>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Refusal> {
    let query = query_pairs(req.uri());
    if !query.get("vsn").is_some_and(|v| v.starts_with("2.")) {
        return Err(Rejection::UnsupportedSerializer.into());
    }
    upgrade::require_upgrade(&req)?;
    let from_protocol = offered_protocols(req.headers()).find_map(|p| {
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
    let credential = match token {
        None => None,
        Some(t) => Some(
            ch.settings
                .verifier
                .verify(&t)
                .map_err(|_| Rejection::BadSocketToken)?,
        ),
    };
    upgrade::require_ready(gw)?;
    let slot =
        ConnectionSlot::reserve(&gw.live, None).map_err(|_| Rejection::TooManyConnections)?;
    let phoenix = offered_protocols(req.headers()).any(|p| p == "phoenix");
    let protocol = phoenix.then(|| HeaderValue::from_static("phoenix"));
    let (response, ws) = upgrade::accept(gw, &mut req, ch.settings.max_frame_size, protocol)?;
    let admitted = Admitted { slot, credential };
    gw.tasks
        .spawn(socket::run(gw.clone(), ch.clone(), ws, admitted));
    Ok(response)
}
