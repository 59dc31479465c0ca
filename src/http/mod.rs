//! The HTTP surface on the gateway's one port: health, readiness, metrics, and the two front
//! doors' upgrades. Everything a request can be refused for is decided before any upgrade, and
//! every refusal is answered (and counted) in `respond`.
//!
//! - [`serve`]: the accept loop; one hyper connection per TCP connection, drained on shutdown.
//! - [`admission`]: a route's rules: addresses, origins, JWTs, the connect hook.
//! - [`handshake`]: what a connection may cost before its upgrade (pending, rate, time).
//! - [`limits`]: connection slots under the node's, the route's and the address's limits.
//! - [`upgrade`]: what both doors share on the way to a WebSocket.
//! - [`tls`]: TLS on the listener, and its certificate reloads.

pub mod admission;
pub mod handshake;
pub mod limits;
pub mod serve;
pub mod tls;
pub mod upgrade;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use crate::Gateway;
use crate::error::Refusal;
use crate::http::admission::Denied;
use crate::http::limits::{ConnectionSlot, SlotLimit};
use crate::metrics::{Denial, Rejection};
use crate::routes::session::{self, Admitted};

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
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let answer = match (req.method(), path) {
        (&Method::GET, "/healthz") => Ok(text(StatusCode::OK, "text/plain", "ok\n".into())),
        (&Method::GET, "/readyz") => upgrade::require_ready(gw)
            .map(|()| text(StatusCode::OK, "text/plain", "ready\n".into()))
            .map_err(Refusal::from),
        (&Method::GET, "/metrics") => Ok(metrics(gw)),
        (&Method::GET, "/admin" | "/admin/api/state") if gw.settings.admin.is_some() => {
            let admin = gw.settings.admin.as_ref().expect("checked");
            crate::admin::handle(gw, admin, path, req.headers()).await
        }
        _ => match &gw.channels {
            Some(ch) if path == ch.ws_path => crate::channels::upgrade::upgrade(gw, ch, req).await,
            Some(ch) if ch.is_token_path(path) => Ok(crate::channels::token::handle(ch, req).await),
            _ => route_upgrade(gw, peer, req).await,
        },
    };
    answer.unwrap_or_else(|refusal| {
        match refusal {
            Refusal::Rejected(r) => gw.metrics.rejected(r),
            Refusal::Unauthorized(_) => gw.metrics.rejected(Rejection::Unauthorized),
            Refusal::Denied(_) => {}
        }
        refusal.response()
    })
}

fn metrics(gw: &Gateway) -> Response<Full<Bytes>> {
    for (_, service) in gw.routes().http_services() {
        service.metrics.urls_down.set(service.urls_down() as i64);
    }
    gw.metrics.publish_queued.set(gw.publisher.queued() as i64);
    let body = gw.metrics.render().into();
    text(StatusCode::OK, crate::metrics::CONTENT_TYPE, body)
}

/// The routes front door: path, upgrade and readiness; then the route's cheap checks, the
/// connection limits, and the token and hook, in that order.
async fn route_upgrade(
    gw: &Arc<Gateway>,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Refusal> {
    let route = gw.routes().get(req.uri().path()).cloned();
    let route = route.ok_or(Rejection::NotFound)?;
    upgrade::require_upgrade(&req)?;
    upgrade::require_ready(gw)?;
    let route_metrics = &route.metrics;
    let deny = |denied: Denied| {
        route_metrics.denied(denied.reason);
        Refusal::Denied(denied)
    };
    let ip = crate::net::client_ip(peer, req.headers(), &gw.settings.server.trusted_proxies);
    route.gate.check_request(ip, req.headers()).map_err(deny)?;
    let per_ip = route
        .gate
        .rules
        .max_connections_per_ip
        .map(|max| (&gw.per_ip, ip, max));
    let slot = match ConnectionSlot::reserve(&route.limit, per_ip) {
        Ok(slot) => slot,
        Err(SlotLimit::PerIp) => {
            return Err(deny(Denied {
                status: StatusCode::TOO_MANY_REQUESTS,
                reason: Denial::TooManyConnections,
            }));
        }
        Err(SlotLimit::Node | SlotLimit::Route) => {
            route_metrics.denied(Denial::TooManyConnections);
            return Err(Rejection::TooManyConnections.into());
        }
    };
    let identity = route
        .gate
        .authenticate(gw, &route.path, peer, ip, req.uri(), req.headers())
        .await
        .map_err(deny)?;
    let protocol = identity.protocol.clone();
    let (response, ws) = upgrade::accept(gw, &mut req, route.max_message_size, protocol)?;
    let admitted = Admitted {
        remote_address: ip.to_string(),
        remote_port: peer.port(),
        route,
        slot,
        identity,
    };
    gw.tasks.spawn(session::run(gw.clone(), ws, admitted));
    Ok(response)
}

fn text(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, content_type.parse().unwrap());
    response
}
