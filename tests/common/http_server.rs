//! A real HTTP server on port 0 playing a legacy service: records every request and answers
//! what the test's handler says.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// What the service answers to one request.
pub enum Answer {
    /// Status, content type, body.
    Status(u16, &'static str, String),
    Json(Value),
    NoContent,
    /// Never answer (until the client gives up).
    Hang,
}

pub struct Recorded {
    pub path: String,
    pub content_type: String,
    pub headers: hyper::HeaderMap,
    pub body: Value,
}

pub struct HttpServer {
    pub addr: SocketAddr,
    requests: mpsc::UnboundedReceiver<Recorded>,
    task: tokio::task::JoinHandle<()>,
    scheme: &'static str,
}

/// One connection: each request recorded and answered as the handler says.
async fn serve<S>(stream: S, tx: mpsc::UnboundedSender<Recorded>, handler: Handler)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        let (tx, handler) = (tx.clone(), handler.clone());
        async move {
            let path = req.uri().path().to_string();
            let headers = req.headers().clone();
            let content_type = headers
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let raw = req.into_body().collect().await.unwrap().to_bytes();
            let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
            let answer = handler(&body);
            let _ = tx.send(Recorded {
                path,
                content_type,
                headers,
                body,
            });
            let response = match answer {
                Answer::Status(code, ct, body) => Response::builder()
                    .status(code)
                    .header("content-type", ct)
                    .body(Full::new(Bytes::from(body))),
                Answer::Json(v) => Response::builder()
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(v.to_string()))),
                Answer::NoContent => Response::builder()
                    .status(204)
                    .body(Full::new(Bytes::new())),
                Answer::Hang => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    unreachable!()
                }
            };
            Ok::<_, Infallible>(response.unwrap())
        }
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

type Handler = Arc<dyn Fn(&Value) -> Answer + Send + Sync>;

impl HttpServer {
    pub async fn start<F>(handler: F) -> Self
    where
        F: Fn(&Value) -> Answer + Send + Sync + 'static,
    {
        Self::start_with(Arc::new(handler), None).await
    }

    /// The same over TLS, with `certs`' server certificate (for 127.0.0.1).
    pub async fn start_tls<F>(handler: F, certs: &super::tls::TestCerts) -> Self
    where
        F: Fn(&Value) -> Answer + Send + Sync + 'static,
    {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let _ = rustls::crypto::ring::default_provider().install_default();
        let chain = CertificateDer::pem_file_iter(certs.path("server.crt"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(certs.path("server.key")).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let mut server = Self::start_with(Arc::new(handler), Some(acceptor)).await;
        server.scheme = "https";
        server
    }

    async fn start_with(handler: Handler, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, requests) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (tx, handler, tls) = (tx.clone(), handler.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                serve(stream, tx, handler).await;
                            }
                        }
                        None => serve(stream, tx, handler).await,
                    }
                });
            }
        });
        Self {
            addr,
            requests,
            task,
            scheme: "http",
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    pub async fn next(&mut self) -> Recorded {
        tokio::time::timeout(super::WAIT, self.requests.recv())
            .await
            .expect("timed out waiting for an HTTP request")
            .unwrap()
    }

    /// The next request whose body has `type` == `kind`.
    pub async fn next_of(&mut self, kind: &str) -> Recorded {
        loop {
            let r = self.next().await;
            if r.body["type"] == kind {
                return r;
            }
        }
    }

    pub fn try_next(&mut self) -> Option<Recorded> {
        self.requests.try_recv().ok()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
