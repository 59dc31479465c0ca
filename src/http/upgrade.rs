//! What both front doors share on the way to a WebSocket: reading the request's query and
//! offered subprotocols (once), the readiness check, and the upgrade itself.

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, SEC_WEBSOCKET_PROTOCOL};
use hyper::{Request, Response, Uri};
use hyper_tungstenite::HyperWebsocket;

use crate::Gateway;
use crate::metrics::Rejection;

/// Query parameters, percent-decoded; the last value of a repeated name wins.
pub fn query_pairs(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

/// The subprotocols a client offered, in order.
pub fn offered_protocols(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

/// Whether the request asks for a WebSocket at all.
pub fn require_upgrade(req: &Request<Incoming>) -> Result<(), Rejection> {
    if hyper_tungstenite::is_upgrade_request(req) {
        Ok(())
    } else {
        Err(Rejection::UpgradeRequired)
    }
}

/// Whether the node takes clients: it is ready and not shutting down.
pub fn require_ready(gw: &Gateway) -> Result<(), Rejection> {
    if gw.is_ready() && !gw.shutdown.is_cancelled() {
        Ok(())
    } else {
        Err(Rejection::NotReady)
    }
}

/// Answers the upgrade (with `protocol`, if the client must get one back); the socket arrives
/// on the returned future once the response is sent.
pub fn accept(
    gw: &Gateway,
    req: &mut Request<Incoming>,
    max_message_size: usize,
    protocol: Option<HeaderValue>,
) -> Result<(Response<Full<Bytes>>, HyperWebsocket), Rejection> {
    let config = crate::ws::config(gw.settings.server.read_buffer, max_message_size);
    let (mut response, upgrade) =
        hyper_tungstenite::upgrade(req, Some(config)).map_err(|_| Rejection::BadUpgrade)?;
    if let Some(protocol) = protocol {
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    Ok((response, upgrade))
}
