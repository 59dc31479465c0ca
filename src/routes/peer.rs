//! Who a route connection is, as every event about it says: shared by the session and its
//! legacy HTTP lanes.

use std::sync::Arc;

use crate::ids::ConnectionId;
use crate::prism::Peer;

pub struct PeerInfo {
    pub id: ConnectionId,
    /// The route's path (events carry it; nothing else of the route is needed here).
    pub route: Arc<str>,
    pub remote_address: String,
    pub remote_port: u16,
    pub user: Option<String>,
    pub claims: Option<Box<serde_json::value::RawValue>>,
}

impl PeerInfo {
    pub fn peer(&self) -> Peer<'_> {
        Peer {
            id: self.id.as_str(),
            route: &self.route,
            remote_address: &self.remote_address,
            remote_port: self.remote_port,
            user: self.user.as_deref(),
            claims: self.claims.as_deref(),
        }
    }
}
