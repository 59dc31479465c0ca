//! The live route connections of this node, by id: where a service reply finds its client.
//!
//! A sharded concurrent map, so the Redis reader and thousands of sessions never contend on one
//! lock.

use std::sync::Arc;

use dashmap::DashMap;

use crate::ids::ConnectionId;
use crate::metrics::CloseReason;
use crate::routes::table::{Route, RouteTable};
use crate::ws::queue::Control;

/// What the rest of the node holds of a session.
#[derive(Debug, Clone)]
pub struct Handle {
    /// The route as it was when the client connected.
    pub route: Arc<Route>,
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

    /// Asks every connection whose path is not in `table` to close (1001, `route_removed`);
    /// each ends as any session does, with its `disconnect` event. Returns how many.
    pub fn close_removed(&self, table: &RouteTable) -> usize {
        let mut closed = 0;
        for entry in self.map.iter() {
            if table.get(&entry.route.path).is_none() {
                entry.control.kill(CloseReason::RouteRemoved);
                closed += 1;
            }
        }
        closed
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
