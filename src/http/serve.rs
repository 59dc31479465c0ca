//! The accept loop: one hyper HTTP/1 connection per TCP connection (over TLS when
//! `[server.tls]` is set), each drained gracefully when the gateway shuts down. Until its
//! upgrade a connection holds a place under [`crate::http::handshake`]'s limits, and has
//! `server.handshake_timeout` for each step.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::Gateway;
use crate::http::handshake::Refused;
use crate::metrics::HandshakeRefusal;

/// Binds the listening socket with room for `backlog` connections the kernel has completed but
/// the gateway not yet accepted (capped by the kernel's `net.core.somaxconn`).
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As `TcpListener::bind` does: a restarted gateway rebinds while old connections linger.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Accepts until shutdown. Connections are spawned on `gw.tasks`.
pub async fn serve(listener: TcpListener, gw: Arc<Gateway>) {
    loop {
        let accepted = tokio::select! {
            _ = gw.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Usually out of file descriptors: log, let some close, and keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::select! {
                    _ = gw.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
        };
        let place = match gw.handshakes.admit(peer.ip(), std::time::Instant::now()) {
            Ok(place) => place,
            Err(refused) => {
                // Closed before anything is read: the cheapest answer to a flood.
                gw.metrics.handshake_refused(match refused {
                    Refused::TooManyPending => HandshakeRefusal::TooManyPending,
                    Refused::RateLimited => HandshakeRefusal::RateLimited,
                });
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let gw = gw.clone();
        gw.clone().tasks.spawn(async move {
            connection(gw, stream, peer).await;
            // Upgraded (the session runs on its own task) or closed: the place is free.
            drop(place);
        });
    }
}

/// One accepted connection: its TLS handshake if the listener has TLS, then HTTP.
async fn connection(gw: Arc<Gateway>, stream: TcpStream, peer: SocketAddr) {
    let Some(tls) = &gw.tls else {
        return http(gw, stream, peer).await;
    };
    let handshake = tls.acceptor().accept(stream);
    let timeout = gw.settings.server.handshake_timeout;
    let stream = tokio::select! {
        _ = gw.shutdown.cancelled() => return,
        done = tokio::time::timeout(timeout, handshake) => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                gw.metrics.tls_handshake_failures.inc();
                tracing::debug!(error = %e, %peer, "TLS handshake failed");
                return;
            }
            Err(_) => {
                gw.metrics.tls_handshake_failures.inc();
                gw.metrics.handshake_refused(HandshakeRefusal::Timeout);
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
    };
    http(gw, stream, peer).await
}

async fn http<S>(gw: Arc<Gateway>, stream: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(|req| crate::http::handle(gw.clone(), peer, req));
    let server = &gw.settings.server;
    let conn = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(server.handshake_timeout)
        .max_buf_size(server.max_header_size)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => if let Err(e) = r {
            if e.is_timeout() {
                gw.metrics.handshake_refused(HandshakeRefusal::Timeout);
            } else if e.is_parse_too_large() {
                gw.metrics.handshake_refused(HandshakeRefusal::HeadersTooLarge);
            }
            tracing::debug!(error = %e, %peer, "HTTP connection ended with an error");
        },
        _ = gw.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
