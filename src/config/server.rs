//! `[server]`: the one listening port and the limits of every client connection.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::{AdmissionSettings, Checked, ensure, nonzero, pem, positive};

/// Bounds of `server.read_buffer`: below the minimum every frame header takes several reads;
/// above the maximum, idle connections would hold megabytes each.
const READ_BUFFER_MIN: usize = 64;
const READ_BUFFER_MAX: usize = 1 << 20;

section! {
    pub struct ServerSettings {
        /// Address of the one port that serves routes, health and metrics.
        pub listen: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 8080)),
        /// Peers whose `X-Forwarded-For` is believed. Empty: the TCP peer is always the client.
        pub trusted_proxies: Vec<IpNet> = Vec::new(),
        /// Admission defaults for every route; a route may set its own.
        #[serde(flatten)]
        pub admission: AdmissionSettings = AdmissionSettings::default(),
        /// Live WebSocket connections on this node; upgrades past it get 503.
        pub max_connections: usize = 20_000,
        /// Largest client message (after reassembly of fragments); larger closes with 1009.
        pub max_message_size: usize = 64 * 1024,
        /// Frames waiting to be written to one client; a client that lets it fill is closed with
        /// 1013.
        pub outbound_queue: usize = 1024,
        /// Bytes queued for one client; a client that lets it fill is closed with 1013.
        pub outbound_queue_bytes: usize = 1024 * 1024,
        /// Bytes of each connection's read buffer, held for as long as it is open: most of an idle
        /// connection's memory. Larger frames are read in pieces of this size.
        pub read_buffer: usize = 512,
        /// How often an idle client is pinged.
        #[serde(with = "humantime_serde")]
        pub ping_interval: Duration = Duration::from_secs(20),
        /// A client that sends nothing (not even a pong) for this long is closed with 1001, and
        /// services get its `disconnect`: this is how a vanished peer is detected.
        #[serde(with = "humantime_serde")]
        pub idle_timeout: Duration = Duration::from_secs(60),
        /// How long a write to one client may take before the client is considered stuck.
        #[serde(with = "humantime_serde")]
        pub write_timeout: Duration = Duration::from_secs(10),
        /// How long shutdown waits for clients to close and events to drain.
        #[serde(with = "humantime_serde")]
        pub shutdown_grace: Duration = Duration::from_secs(10),
        /// How long a new connection has for its TLS handshake, and a request for its headers.
        #[serde(with = "humantime_serde")]
        pub handshake_timeout: Duration = Duration::from_secs(10),
        /// Largest request head (request line and headers); larger gets 431.
        pub max_header_size: usize = 16 * 1024,
        /// Connections between accept and upgrade at once; more are closed at accept.
        pub max_pending_handshakes: usize = 4096,
        /// Connections the kernel holds for the gateway to accept (the `listen` backlog).
        pub listen_backlog: u32 = 4096,
        /// New connections per second from one address (a bucket of one second's worth);
        /// 0 = no limit.
        pub handshakes_per_ip_per_second: f64 = 0.0,
        /// TLS on the listener (`wss://`, `https://`); absent = plain.
        pub tls: Option<TlsSettings> = None,
    }
}

/// `[server.tls]`: the listener's certificate, re-read when its files change or on SIGHUP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM: the server certificate, then its intermediates.
    pub cert_file: PathBuf,
    /// PEM: its private key.
    pub key_file: PathBuf,
    /// How often the files are checked for a change.
    #[serde(
        default = "TlsSettings::default_reload_interval",
        with = "humantime_serde"
    )]
    pub reload_interval: Duration,
}

impl TlsSettings {
    fn default_reload_interval() -> Duration {
        Duration::from_secs(10)
    }
}

impl ServerSettings {
    pub(super) fn validate(&self) -> Checked {
        positive("server.max_connections", self.max_connections)?;
        positive("server.max_message_size", self.max_message_size)?;
        positive("server.outbound_queue", self.outbound_queue)?;
        positive("server.outbound_queue_bytes", self.outbound_queue_bytes)?;
        let buffer = (READ_BUFFER_MIN..=READ_BUFFER_MAX).contains(&self.read_buffer);
        let message = format!("must be between {READ_BUFFER_MIN} and {READ_BUFFER_MAX} bytes");
        ensure(buffer, "server.read_buffer", message)?;
        nonzero("server.ping_interval", self.ping_interval)?;
        nonzero("server.idle_timeout", self.idle_timeout)?;
        ensure(
            self.idle_timeout > self.ping_interval,
            "server.idle_timeout",
            "must be longer than server.ping_interval, or live clients time out",
        )?;
        nonzero("server.write_timeout", self.write_timeout)?;
        nonzero("server.handshake_timeout", self.handshake_timeout)?;
        positive("server.max_pending_handshakes", self.max_pending_handshakes)?;
        positive("server.listen_backlog", self.listen_backlog as usize)?;
        // 8192: the HTTP parser's smallest buffer.
        let head = (8192..=READ_BUFFER_MAX).contains(&self.max_header_size);
        let message = format!("must be between 8192 and {READ_BUFFER_MAX} bytes");
        ensure(head, "server.max_header_size", message)?;
        let rate = self.handshakes_per_ip_per_second;
        let message = "must be a number of connections per second, 0 for no limit";
        ensure(
            rate.is_finite() && rate >= 0.0,
            "server.handshakes_per_ip_per_second",
            message,
        )?;
        if let Some(tls) = &self.tls {
            pem::server_config(&tls.cert_file, &tls.key_file)?;
            nonzero("server.tls.reload_interval", tls.reload_interval)?;
        }
        positive(
            "server.max_connections_per_ip",
            self.admission.max_connections_per_ip,
        )
    }
}
