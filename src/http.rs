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

use crate::Gateway;
use crate::error::rejection_response;
use crate::metrics::Rejection;
use crate::session::{self, Admitted};

pub async fn handle(
    gw: Arc<Gateway>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(respond(&gw, peer, req))
}

fn respond(
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
                gw.metrics.http[service.metrics].urls_down.store(
                    service.urls_down() as i64,
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
            return text(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                gw.metrics.render().into(),
            );
        }
        _ => {}
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
    let Some(slot) = gw.try_reserve_slot(&route) else {
        return reject(gw, Rejection::TooManyConnections);
    };
    let server = &gw.settings.server;
    let config = WebSocketConfig::default()
        .max_message_size(Some(route.max_message_size))
        .max_frame_size(Some(route.max_message_size))
        // Small buffers: most connections are idle most of the time.
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (response, upgrade) = match hyper_tungstenite::upgrade(&mut req, Some(config)) {
        Ok(pair) => pair,
        Err(_) => return reject(gw, Rejection::BadUpgrade),
    };
    let admitted = Admitted {
        remote_address: crate::net::client_ip(peer, req.headers(), &server.trusted_proxies)
            .to_string(),
        remote_port: peer.port(),
        route,
        slot,
    };
    gw.tasks.spawn(session::run(gw.clone(), upgrade, admitted));
    response
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
