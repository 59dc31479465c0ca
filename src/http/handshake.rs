//! What a connection may cost before it is a WebSocket: at most `server.max_pending_handshakes`
//! connections at once between accept and upgrade, at most `server.handshakes_per_ip_per_second`
//! new ones per client address, and `server.handshake_timeout` for the TLS handshake and for a
//! request's headers (themselves at most `server.max_header_size`). A connection over a limit is
//! closed at once, before anything is read, and counted by reason.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::ServerSettings;

/// Addresses remembered for the per-address rate at most; past it, idle ones are forgotten.
const MAX_TRACKED: usize = 100_000;

pub struct HandshakeGuard {
    pending: Arc<Semaphore>,
    /// Handshakes per second per address (a bucket of one second's worth); 0 = no limit.
    per_ip: f64,
    buckets: DashMap<IpAddr, (f64, Instant)>,
}

/// Why a connection was closed before its upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    TooManyPending,
    RateLimited,
}

impl HandshakeGuard {
    pub fn new(server: &ServerSettings) -> Self {
        Self {
            pending: Arc::new(Semaphore::new(server.max_pending_handshakes)),
            per_ip: server.handshakes_per_ip_per_second,
            buckets: DashMap::new(),
        }
    }

    /// A place for one connection from `ip` until it is upgraded or closed (the permit).
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Result<OwnedSemaphorePermit, Refused> {
        if self.per_ip > 0.0 && !self.take_token(ip, now) {
            return Err(Refused::RateLimited);
        }
        self.pending
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::TooManyPending)
    }

    fn take_token(&self, ip: IpAddr, now: Instant) -> bool {
        let burst = self.per_ip.max(1.0);
        if self.buckets.len() >= MAX_TRACKED {
            // Full buckets carry no information: an address idle for a second is forgotten.
            self.buckets
                .retain(|_, (_, at)| now.duration_since(*at) < Duration::from_secs(1));
        }
        let mut entry = self.buckets.entry(ip).or_insert((burst, now));
        let (tokens, at) = &mut *entry;
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_ip).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(pending: usize, per_ip: f64) -> HandshakeGuard {
        let server = ServerSettings {
            max_pending_handshakes: pending,
            handshakes_per_ip_per_second: per_ip,
            ..ServerSettings::default()
        };
        HandshakeGuard::new(&server)
    }

    #[test]
    fn pending_places_are_given_back() {
        let g = guard(2, 0.0);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let now = Instant::now();
        let a = g.admit(ip, now).unwrap();
        let _b = g.admit(ip, now).unwrap();
        assert_eq!(g.admit(ip, now).unwrap_err(), Refused::TooManyPending);
        drop(a);
        assert!(g.admit(ip, now).is_ok());
    }

    #[test]
    fn each_address_has_its_own_rate() {
        let g = guard(100, 2.0);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        let mut held = Vec::new();
        held.push(g.admit(a, t0).unwrap());
        held.push(g.admit(a, t0).unwrap());
        assert_eq!(g.admit(a, t0).unwrap_err(), Refused::RateLimited);
        held.push(g.admit(b, t0).unwrap());
        // Half a second refills one token.
        held.push(g.admit(a, t0 + Duration::from_millis(500)).unwrap());
        assert!(g.admit(a, t0 + Duration::from_millis(500)).is_err());
    }
}
