//! Connection limits, taken before an upgrade and given back when the connection ends: the
//! node's `server.max_connections`, a route's `max_connections`, and per client address.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

/// One limit: how many are in use, and how many may be.
#[derive(Debug)]
pub struct Limit {
    live: AtomicUsize,
    max: usize,
}

impl Limit {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            live: AtomicUsize::new(0),
            max,
        })
    }

    /// Takes one place unless the limit is reached.
    fn take(&self) -> bool {
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    fn give_back(&self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Connections per client address, for `max_connections_per_ip`.
#[derive(Debug, Default)]
pub struct PerIp {
    counts: DashMap<IpAddr, usize>,
}

/// Which connection limit refused a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotLimit {
    Node,
    Route,
    PerIp,
}

/// A reserved place under every limit that applies to one connection; given back when dropped.
pub struct ConnectionSlot {
    node: Arc<Limit>,
    route: Option<Arc<Limit>>,
    /// Set when the slot counts against a per-address limit.
    ip: Option<(Arc<PerIp>, IpAddr)>,
}

impl ConnectionSlot {
    /// Takes a place under `node`, then `route` (if any), then `per_ip` (if the route limits
    /// addresses), or says which limit was hit; nothing stays taken on failure.
    pub fn reserve(
        node: &Arc<Limit>,
        route: Option<&Arc<Limit>>,
        per_ip: Option<(&Arc<PerIp>, IpAddr, usize)>,
    ) -> Result<Self, SlotLimit> {
        if !node.take() {
            return Err(SlotLimit::Node);
        }
        // From here on, dropping `slot` gives back what was taken.
        let mut slot = ConnectionSlot {
            node: node.clone(),
            route: None,
            ip: None,
        };
        if let Some(route) = route {
            if !route.take() {
                return Err(SlotLimit::Route);
            }
            slot.route = Some(route.clone());
        }
        if let Some((map, ip, max)) = per_ip {
            let mut n = map.counts.entry(ip).or_insert(0);
            if *n >= max {
                return Err(SlotLimit::PerIp);
            }
            *n += 1;
            drop(n);
            slot.ip = Some((map.clone(), ip));
        }
        Ok(slot)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.node.give_back();
        if let Some(route) = &self.route {
            route.give_back();
        }
        if let Some((map, ip)) = &self.ip {
            if let Some(mut n) = map.counts.get_mut(ip) {
                *n -= 1;
            }
            map.counts.remove_if(ip, |_, n| *n == 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_slot_gives_back_what_it_took() {
        let node = Limit::new(2);
        let route = Limit::new(1);
        let per_ip = Arc::new(PerIp::default());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let first = ConnectionSlot::reserve(&node, Some(&route), Some((&per_ip, ip, 5))).unwrap();
        let refused = ConnectionSlot::reserve(&node, Some(&route), None);
        assert_eq!(refused.err(), Some(SlotLimit::Route));
        assert_eq!(
            node.live.load(Ordering::Acquire),
            1,
            "the node place came back"
        );
        drop(first);
        assert_eq!(
            (
                node.live.load(Ordering::Acquire),
                route.live.load(Ordering::Acquire)
            ),
            (0, 0)
        );
        assert!(
            per_ip.counts.is_empty(),
            "an address with no connection is forgotten"
        );
    }

    #[test]
    fn the_per_address_limit_counts_each_address_alone() {
        let node = Limit::new(10);
        let per_ip = Arc::new(PerIp::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let _a1 = ConnectionSlot::reserve(&node, None, Some((&per_ip, a, 1))).unwrap();
        let again = ConnectionSlot::reserve(&node, None, Some((&per_ip, a, 1)));
        assert_eq!(again.err(), Some(SlotLimit::PerIp));
        assert!(ConnectionSlot::reserve(&node, None, Some((&per_ip, b, 1))).is_ok());
    }
}
