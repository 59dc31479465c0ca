//! Connection limits, taken before an upgrade and given back when the connection ends: the
//! node's `server.max_connections`, a route's `max_connections`, and per client address.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

/// One limit: how many are in use, and how many may be. A place under it is also a place under
/// its parent (a route's limit sits under the node's), so a slot holds one limit only.
#[derive(Debug)]
pub struct Limit {
    live: AtomicUsize,
    /// Changed only by a config reload, for the places taken after it.
    max: AtomicUsize,
    parent: Option<Arc<Limit>>,
}

impl Limit {
    pub fn new(max: usize) -> Arc<Self> {
        Self::under(None, max)
    }

    /// A limit within `parent`'s.
    pub fn under(parent: Option<Arc<Limit>>, max: usize) -> Arc<Self> {
        let (live, max) = (AtomicUsize::new(0), AtomicUsize::new(max));
        Arc::new(Self { live, max, parent })
    }

    /// A new maximum (a reloaded route's): places already taken stay taken.
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Release);
    }

    /// Takes one place here and in every parent, or names the limit that refused; nothing stays
    /// taken then.
    fn take(&self) -> Result<(), &Limit> {
        let taken = self
            .live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max.load(Ordering::Acquire)).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(self);
        }
        if let Some(parent) = &self.parent {
            parent.take().inspect_err(|_| self.give_back_here())?;
        }
        Ok(())
    }

    fn give_back_here(&self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
    }

    fn give_back(&self) {
        self.give_back_here();
        if let Some(parent) = &self.parent {
            parent.give_back();
        }
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
    /// The innermost limit taken; its parents were taken with it.
    limit: Arc<Limit>,
    /// Set when the slot counts against a per-address limit.
    ip: Option<(Arc<PerIp>, IpAddr)>,
}

impl ConnectionSlot {
    /// Takes a place under `limit` (a route's, within the node's; or the node's), then under
    /// `per_ip` (if the route limits addresses), or says which limit was hit; nothing stays
    /// taken on failure.
    pub fn reserve(
        limit: &Arc<Limit>,
        per_ip: Option<(&Arc<PerIp>, IpAddr, usize)>,
    ) -> Result<Self, SlotLimit> {
        if let Err(refused) = limit.take() {
            let node = refused.parent.is_none();
            return Err(if node {
                SlotLimit::Node
            } else {
                SlotLimit::Route
            });
        }
        // From here on, dropping `slot` gives back what was taken.
        let mut slot = ConnectionSlot {
            limit: limit.clone(),
            ip: None,
        };
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
        self.limit.give_back();
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

    fn live(limit: &Limit) -> usize {
        limit.live.load(Ordering::Acquire)
    }

    #[test]
    fn a_refused_slot_gives_back_what_it_took() {
        let node = Limit::new(2);
        let route = Limit::under(Some(node.clone()), 1);
        let per_ip = Arc::new(PerIp::default());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let first = ConnectionSlot::reserve(&route, Some((&per_ip, ip, 5))).unwrap();
        let refused = ConnectionSlot::reserve(&route, None);
        assert_eq!(refused.err(), Some(SlotLimit::Route));
        assert_eq!(live(&node), 1, "the node's place was not taken");
        let other = Limit::under(Some(node.clone()), 10);
        let second = ConnectionSlot::reserve(&other, None).unwrap();
        assert_eq!(
            ConnectionSlot::reserve(&other, None).err(),
            Some(SlotLimit::Node)
        );
        assert_eq!(live(&other), 1, "the route's place came back");
        drop((first, second));
        assert_eq!((live(&node), live(&route), live(&other)), (0, 0, 0));
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
        let _a1 = ConnectionSlot::reserve(&node, Some((&per_ip, a, 1))).unwrap();
        let again = ConnectionSlot::reserve(&node, Some((&per_ip, a, 1)));
        assert_eq!(again.err(), Some(SlotLimit::PerIp));
        assert_eq!(live(&node), 1, "the refused slot gave its place back");
        assert!(ConnectionSlot::reserve(&node, Some((&per_ip, b, 1))).is_ok());
    }
}
