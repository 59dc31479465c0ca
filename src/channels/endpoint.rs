//! The Channels endpoint's shared state: its settings (with their verifier), the hub of local
//! memberships, and the handle on the node's Redis bridge.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::channels::bridge::Cmd;
use crate::channels::hub::Hub;
use crate::config::ChannelsSettings;
use crate::metrics::{ChannelMetrics, Metrics};
use crate::phoenix::Topic;
use crate::ws::driver::Timing;

pub struct Channels {
    pub settings: ChannelsSettings,
    /// `<endpoint>/websocket`.
    pub ws_path: String,
    /// The HMAC secret, for the token endpoint (absent with a public key).
    secret: Option<Vec<u8>>,
    api_key: Option<String>,
    pub hub: Arc<Hub>,
    bridge: mpsc::UnboundedSender<Cmd>,
    metrics: Arc<Metrics>,
    command_timeout: Duration,
    /// Every socket's timers. 1001 on idleness, not 1000: phoenix.js reconnects after 1001. No
    /// pings: phoenix.js sends heartbeats.
    pub timing: Timing,
}

impl Channels {
    /// Built from validated settings; the receiver goes to [`crate::channels::bridge::run`].
    pub fn new(
        settings: ChannelsSettings,
        metrics: Arc<Metrics>,
        command_timeout: Duration,
        write_timeout: Duration,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Cmd>) {
        let jwt = settings.jwt();
        let secret = jwt.secret_bytes().ok();
        let api_key = settings
            .token_endpoint
            .as_ref()
            .and_then(|t| t.api_key_env.as_ref())
            .and_then(|var| std::env::var(var).ok());
        if settings.token_endpoint.as_ref().is_some_and(|t| t.open) {
            tracing::warn!(
                "the Channels token endpoint is OPEN: anyone can mint tokens (development only)"
            );
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let ch = Self {
            timing: Timing {
                write_timeout,
                idle_timeout: settings.idle_timeout,
                ping_interval: None,
            },
            ws_path: settings.websocket_path(),
            settings,
            secret,
            api_key,
            hub: Arc::new(Hub::new(metrics.clone())),
            bridge: tx,
            metrics,
            command_timeout,
        };
        (Arc::new(ch), rx)
    }

    pub fn metrics(&self) -> &ChannelMetrics {
        &self.metrics.channels
    }

    /// Subscribes this node to a topic, waiting for Redis to confirm.
    pub async fn subscribe(&self, topic: &Topic) -> bool {
        let (done, confirmed) = oneshot::channel();
        if self
            .bridge
            .send(Cmd::Subscribe(topic.clone(), done))
            .is_err()
        {
            return false;
        }
        matches!(
            tokio::time::timeout(self.command_timeout, confirmed).await,
            Ok(Ok(true))
        )
    }

    pub fn unsubscribe(&self, topic: &Topic) {
        let _ = self.bridge.send(Cmd::Unsubscribe(topic.clone()));
    }

    /// Whether `path` is the token endpoint's.
    pub fn is_token_path(&self, path: &str) -> bool {
        self.settings
            .token_endpoint
            .as_ref()
            .is_some_and(|t| t.path == path)
    }

    /// Compares in constant time, so the key cannot be guessed byte by byte.
    pub fn api_key_matches(&self, given: &str) -> bool {
        let Some(key) = &self.api_key else {
            return false;
        };
        key.len() == given.len()
            && key
                .bytes()
                .zip(given.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// A token for the token endpoint, signed with the configured secret.
    pub fn mint(&self, claims: serde_json::Map<String, serde_json::Value>) -> Option<String> {
        let secret = self.secret.as_ref()?;
        crate::auth::mint_hmac(
            secret,
            jsonwebtoken::Algorithm::HS256,
            claims,
            self.settings.token_ttl,
        )
        .ok()
    }
}
