//! A raw Phoenix V2 client for tests: frames `[join_ref, ref, topic, event, payload]`.

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::{Client, Gateway, Node};

pub trait HasAddr {
    fn addr(&self) -> std::net::SocketAddr;
}

impl HasAddr for Gateway {
    fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

impl HasAddr for Node {
    fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

/// A raw Phoenix V2 client.
pub struct Phx {
    pub ws: Client,
    pub next_ref: u64,
}

impl Phx {
    pub async fn connect(gw: &impl HasAddr, query: &str) -> Self {
        let ws = Client::connect(&format!(
            "ws://{}/socket/websocket?vsn=2.0.0{query}",
            gw.addr()
        ))
        .await;
        Self { ws, next_ref: 0 }
    }

    pub fn make_ref(&mut self) -> String {
        self.next_ref += 1;
        self.next_ref.to_string()
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.ws.send(text).await;
    }

    /// Sends `[join_ref, ref, topic, event, payload]`; returns the ref.
    pub async fn send(
        &mut self,
        join_ref: Option<&str>,
        topic: &str,
        event: &str,
        payload: Value,
    ) -> String {
        let r = self.make_ref();
        let frame = json!([join_ref, r, topic, event, payload]);
        self.ws.send(&frame.to_string()).await;
        r
    }

    pub async fn recv(&mut self) -> Value {
        match self.ws.recv().await {
            Message::Text(t) => serde_json::from_str(&t).unwrap(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next frame with this event, skipping others (presence diffs and the like).
    pub async fn recv_event(&mut self, event: &str) -> Value {
        loop {
            let f = self.recv().await;
            if f[3] == event {
                return f;
            }
        }
    }

    /// Joins `topic`; returns (join_ref, the reply frame).
    pub async fn join(&mut self, topic: &str, payload: Value) -> (String, Value) {
        let r = self.make_ref();
        let frame = json!([r, r, topic, "phx_join", payload]);
        self.ws.send(&frame.to_string()).await;
        let reply = self.recv_event("phx_reply").await;
        (r, reply)
    }

    pub async fn join_ok(&mut self, topic: &str, tok: &str) -> String {
        let (jr, reply) = self.join(topic, json!({"token": tok})).await;
        assert_eq!(reply[4]["status"], "ok", "join {topic}: {reply}");
        jr
    }
}
