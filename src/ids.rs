//! Identifiers: connection ids (unguessable, unique across nodes) and node ids.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;

/// A connection's id: 128 bits from a CSPRNG, base64url without padding (22 characters).
///
/// Services use it to address one client, so guessing one must be infeasible; at 128 random bits
/// ids are also unique across nodes without coordination. Shared, not copied: a Channels socket
/// hands it to every topic it joins.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ConnectionId(Arc<str>);

impl ConnectionId {
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        // ThreadRng is a CSPRNG (ChaCha, reseeded from the OS).
        rand::rng().fill_bytes(&mut bytes);
        Self(URL_SAFE_NO_PAD.encode(bytes).into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for ConnectionId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionId({})", self.0)
    }
}

/// A gateway node's id; it names the node's response channel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeId(String);

impl NodeId {
    /// The configured id, assumed validated by [`crate::config::Settings::validate`].
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// A fresh id (`n-` and 64 random bits in hex), unique among nodes without configuration.
    pub fn generate() -> Self {
        Self(format!("n-{:016x}", rand::rng().next_u64()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn connection_ids_are_url_safe_128_bit_and_distinct() {
        let ids: HashSet<_> = (0..10_000).map(|_| ConnectionId::random()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(100) {
            assert_eq!(id.as_str().len(), 22);
            let raw = URL_SAFE_NO_PAD.decode(id.as_str()).unwrap();
            assert_eq!(raw.len(), 16);
            assert!(
                id.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
        }
    }

    #[test]
    fn generated_node_ids_differ() {
        assert_ne!(NodeId::generate(), NodeId::generate());
        assert!(NodeId::generate().as_str().starts_with("n-"));
    }
}
