//! The accept loop: one hyper HTTP/1 connection per TCP connection (over TLS when
//! `[server.tls]` is set), each drained gracefully when the gateway shuts down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::Gateway;

/// How long a client has for the TLS handshake, and for a request's headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
        let _ = stream.set_nodelay(true);
        gw.clone().tasks.spawn(connection(gw.clone(), stream, peer));
    }
}

/// One accepted connection: its TLS handshake if the listener has TLS, then HTTP.
async fn connection(gw: Arc<Gateway>, stream: TcpStream, peer: SocketAddr) {
    let Some(tls) = &gw.tls else {
        return http(gw, stream, peer).await;
    };
    let handshake = tls.acceptor().accept(stream);
    let stream = tokio::select! {
        _ = gw.shutdown.cancelled() => return,
        done = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake) => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                gw.metrics.tls_handshake_failures.inc();
                tracing::debug!(error = %e, %peer, "TLS handshake failed");
                return;
            }
            Err(_) => {
                gw.metrics.tls_handshake_failures.inc();
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
    let conn = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => if let Err(e) = r {
            tracing::debug!(error = %e, %peer, "HTTP connection ended with an error");
        },
        _ = gw.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
