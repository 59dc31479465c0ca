//! The live connections of this node, by id: where a service reply finds its client.
//!
//! A sharded concurrent map, so the Redis reader and thousands of sessions never contend on one
//! lock; the reader only ever `try_send`s into a connection's bounded queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use dashmap::DashMap;
use hyper_tungstenite::tungstenite::Message;
use tokio::sync::{Notify, mpsc};

use crate::ids::ConnectionId;
use crate::metrics::CloseReason;

/// How anyone but the session itself ends a session: set a reason, wake it.
#[derive(Debug, Default)]
pub struct Control {
    wake: Notify,
    /// `CloseReason as u8 + 1`; 0 while nobody asked.
    reason: AtomicU8,
    /// Bytes of frames queued for the client and not yet written.
    queued_bytes: AtomicUsize,
}

impl Control {
    /// Asks the session to close; the first reason wins.
    pub fn kill(&self, reason: CloseReason) {
        let _ =
            self.reason
                .compare_exchange(0, reason as u8 + 1, Ordering::AcqRel, Ordering::Acquire);
        self.wake.notify_one();
    }

    /// Accounts `n` more queued bytes, unless that would pass `limit`.
    pub fn reserve(&self, n: usize, limit: usize) -> bool {
        self.queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q + n <= limit).then_some(q + n)
            })
            .is_ok()
    }

    /// Accounts `n` queued bytes as written (or discarded).
    pub fn release(&self, n: usize) {
        self.queued_bytes.fetch_sub(n, Ordering::AcqRel);
    }

    pub async fn killed(&self) -> CloseReason {
        loop {
            if let Some(r) = self.reason() {
                return r;
            }
            self.wake.notified().await;
        }
    }

    fn reason(&self) -> Option<CloseReason> {
        match self.reason.load(Ordering::Acquire) {
            0 => None,
            n => CloseReason::ALL.get(usize::from(n - 1)).copied(),
        }
    }
}

/// What the rest of the node holds of a session.
#[derive(Debug, Clone)]
pub struct Handle {
    pub route: usize,
    pub outbound: mpsc::Sender<Message>,
    pub control: Arc<Control>,
}

#[derive(Debug, Default)]
pub struct Registry {
    map: DashMap<ConnectionId, Handle>,
}

impl Registry {
    pub fn insert(&self, id: ConnectionId, handle: Handle) {
        self.map.insert(id, handle);
    }

    pub fn remove(&self, id: &str) {
        self.map.remove(id);
    }

    /// A clone of the handle, so no map lock is held while the caller works.
    pub fn get(&self, id: &str) -> Option<Handle> {
        self.map.get(id).map(|h| h.clone())
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
