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
}

impl HttpServer {
    pub async fn start<F>(handler: F) -> Self
    where
        F: Fn(&Value) -> Answer + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, requests) = mpsc::unbounded_channel();
        let handler = Arc::new(handler);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (tx, handler) = (tx.clone(), handler.clone());
                tokio::spawn(async move {
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
                });
            }
        });
        Self {
            addr,
            requests,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
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
