//! The accept loop: one hyper HTTP/1 connection per TCP connection, each drained gracefully when
//! the gateway shuts down.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::Gateway;

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
        let gw = gw.clone();
        gw.clone().tasks.spawn(async move {
            let service = service_fn(|req| crate::http::handle(gw.clone(), peer, req));
            let conn = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
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
        });
    }
}
