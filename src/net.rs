//! Who the client is: the peer address, or the first `X-Forwarded-For` entry when the peer is a
//! trusted proxy.

use std::net::{IpAddr, SocketAddr};

use hyper::HeaderMap;
use ipnet::IpNet;

/// The client's address as services see it. A forwarded address is believed only from a peer
/// inside `trusted`, so a client cannot spoof its address by sending the header itself.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer_ip = peer.ip().to_canonical();
    if !trusted.iter().any(|net| net.contains(&peer_ip)) {
        return peer_ip;
    }
    headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|first| first.trim().parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .unwrap_or(peer_ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let peer: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        assert_eq!(client_ip(peer, &headers("1.2.3.4"), &[]), peer.ip());
    }

    #[test]
    fn trusted_proxy_forwards_first_entry() {
        let peer: SocketAddr = "10.0.0.2:4000".parse().unwrap();
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let got = client_ip(peer, &headers(" 1.2.3.4 , 10.0.0.9"), &trusted);
        assert_eq!(got, "1.2.3.4".parse::<IpAddr>().unwrap());
        // Garbage in the header falls back to the peer.
        assert_eq!(client_ip(peer, &headers("nonsense"), &trusted), peer.ip());
        assert_eq!(client_ip(peer, &HeaderMap::new(), &trusted), peer.ip());
    }

    #[test]
    fn mapped_ipv6_is_shown_as_ipv4() {
        let peer: SocketAddr = "[::ffff:127.0.0.1]:80".parse().unwrap();
        assert_eq!(
            client_ip(peer, &HeaderMap::new(), &[]).to_string(),
            "127.0.0.1"
        );
    }
}
