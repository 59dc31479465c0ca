//! The contract every long-lived worker keeps (the response-channel subscriber, the publisher
//! shards, the Channels bridge, presence, the clock):
//!
//! - it runs on [`Workers`], which the gateway waits for at shutdown;
//! - it stops when its token is cancelled (the gateway's shutdown, or the drain token for
//!   workers that outlive the clients), and every sleep and read it does sits in a `select!`
//!   with that token;
//! - it reconnects after failures with [`crate::backoff::Backoff`], never exits on one;
//! - it reports readiness one way: [`crate::Gateway::set_ready`] with its [`Part`].

use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The gateway's workers. Most stop on the gateway's shutdown token; those that carry clients'
/// last words (the publishers) stop on [`Workers::drain_token`] instead, which is cancelled only
/// after every client has closed (see [`crate::run`]).
#[derive(Clone, Default)]
pub struct Workers {
    tracker: TaskTracker,
    shutdown: CancellationToken,
    drain: CancellationToken,
}

impl Workers {
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            shutdown,
            ..Self::default()
        }
    }

    /// Runs a worker; one that returns before shutdown is logged, since that means a part of
    /// the gateway silently stopped working.
    pub fn spawn(&self, name: &'static str, work: impl Future<Output = ()> + Send + 'static) {
        let shutdown = self.shutdown.clone();
        self.tracker.spawn(async move {
            work.await;
            if shutdown.is_cancelled() {
                tracing::debug!(worker = name, "worker stopped");
            } else {
                tracing::error!(worker = name, "worker ended before shutdown");
            }
        });
    }

    /// The token of workers that must outlive the clients.
    pub fn drain_token(&self) -> CancellationToken {
        self.drain.clone()
    }

    /// Tells the draining workers to finish, and waits for every worker.
    pub async fn stop(&self) {
        self.drain.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// The parts of the node that must work before it takes clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The response channel is subscribed and a canary came back through it.
    ResponseChannel,
    /// Presence entries a previous process left under this node id are cleared.
    Presence,
}

/// Which parts are ready; the node is ready when all are.
#[derive(Debug)]
pub struct Readiness {
    response_channel: AtomicBool,
    presence: AtomicBool,
}

impl Readiness {
    /// `presence`: whether presence must be cleared before the node is ready.
    pub fn new(presence: bool) -> Self {
        Self {
            response_channel: AtomicBool::new(false),
            presence: AtomicBool::new(!presence),
        }
    }

    fn flag(&self, part: Part) -> &AtomicBool {
        match part {
            Part::ResponseChannel => &self.response_channel,
            Part::Presence => &self.presence,
        }
    }

    /// Sets one part; true when that changed it.
    pub fn set(&self, part: Part, ready: bool) -> bool {
        self.flag(part).swap(ready, Ordering::AcqRel) != ready
    }

    pub fn is_ready(&self) -> bool {
        self.response_channel.load(Ordering::Acquire) && self.presence.load(Ordering::Acquire)
    }
}
