//! The HTTP surface on the gateway's one port: route upgrades, health, readiness and metrics.
//! Everything a request can be refused for is decided here, before any upgrade.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::admission::Denied;
use crate::config::ServerSettings;
use crate::error::{denied_response, rejection_response};
use crate::metrics::{Denial, Rejection};
use crate::routes::Route;
use crate::session::{self, Admitted};
use crate::{Gateway, SlotLimit};

pub async fn handle(
    gw: Arc<Gateway>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(respond(&gw, peer, req).await)
}

async fn respond(
    gw: &Arc<Gateway>,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/healthz") => return text(StatusCode::OK, "text/plain", "ok\n".into()),
        (&Method::GET, "/readyz") => {
            return if gw.is_ready() && !gw.shutdown.is_cancelled() {
                text(StatusCode::OK, "text/plain", "ready\n".into())
            } else {
                reject(gw, Rejection::NotReady)
            };
        }
        (&Method::GET, "/metrics") => {
            for (_, service) in gw.routes.http_services() {
                gw.metrics.http[service.metrics]
                    .urls_down
                    .set(service.urls_down() as i64);
            }
            return text(
                StatusCode::OK,
                crate::metrics::CONTENT_TYPE,
                gw.metrics.render().into(),
            );
        }
        _ => {}
    }
    if let Some(ch) = &gw.channels {
        if path == ch.ws_path {
            return crate::channels::upgrade(gw, ch, req).await;
        }
        if ch
            .settings
            .token_endpoint
            .as_ref()
            .is_some_and(|t| t.path == path)
        {
            return crate::channels::token::handle(ch, req).await;
        }
    }
    let Some(route) = gw.routes.get(path).cloned() else {
        return reject(gw, Rejection::NotFound);
    };
    if !hyper_tungstenite::is_upgrade_request(&req) {
        return reject(gw, Rejection::UpgradeRequired);
    }
    if !gw.is_ready() || gw.shutdown.is_cancelled() {
        return reject(gw, Rejection::NotReady);
    }
    let server = &gw.settings.server;
    let ip = crate::net::client_ip(peer, req.headers(), &server.trusted_proxies);
    // Cheap checks first, then the connection limits, then token and hook.
    if let Err(denied) = route.gate.check_request(ip, req.headers()) {
        return deny(gw, &route, denied);
    }
    let slot = match gw.try_reserve_slot(&route, ip) {
        Ok(slot) => slot,
        Err(SlotLimit::PerIp) => {
            let denied = Denied {
                status: StatusCode::TOO_MANY_REQUESTS,
                reason: Denial::TooManyConnections,
            };
            return deny(gw, &route, denied);
        }
        Err(SlotLimit::Node | SlotLimit::Route) => {
            gw.metrics.routes[route.index].denied(Denial::TooManyConnections);
            return reject(gw, Rejection::TooManyConnections);
        }
    };
    let identity = match route
        .gate
        .authenticate(gw, &route.path, peer, ip, req.uri(), req.headers())
        .await
    {
        Ok(identity) => identity,
        Err(denied) => return deny(gw, &route, denied),
    };
    let config = websocket_config(&gw.settings.server, route.max_message_size);
    let (mut response, upgrade) = match hyper_tungstenite::upgrade(&mut req, Some(config)) {
        Ok(pair) => pair,
        Err(_) => return reject(gw, Rejection::BadUpgrade),
    };
    if let Some(protocol) = &identity.protocol {
        response
            .headers_mut()
            .insert(hyper::header::SEC_WEBSOCKET_PROTOCOL, protocol.clone());
    }
    let admitted = Admitted {
        remote_address: ip.to_string(),
        remote_port: peer.port(),
        route,
        slot,
        identity,
    };
    gw.tasks.spawn(session::run(gw.clone(), upgrade, admitted));
    response
}

fn deny(gw: &Gateway, route: &Route, denied: Denied) -> Response<Full<Bytes>> {
    gw.metrics.routes[route.index].denied(denied.reason);
    denied_response(denied)
}

fn reject(gw: &Gateway, rejection: Rejection) -> Response<Full<Bytes>> {
    gw.metrics.rejected(rejection);
    rejection_response(rejection)
}

fn text(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, content_type.parse().unwrap());
    response
}

/// The WebSocket settings of every upgraded connection, Prism routes and Channels alike.
pub(crate) fn websocket_config(
    server: &ServerSettings,
    max_message_size: usize,
) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
        // Held by every open connection; a larger frame grows it while it is read.
        .read_buffer_size(server.read_buffer)
        // Frames go out as soon as they are written; the session batches and flushes.
        .write_buffer_size(0)
}
