//! Channels, the Phoenix-style front door: a Phoenix Channels endpoint bridged to Redis
//! (`docs/channels.md`).
//!
//! - [`endpoint`]: the endpoint's shared state: settings, verifier, hub, bridge handle.
//! - [`upgrade`]: the checks before a socket upgrade.
//! - [`socket`]: one Phoenix socket (a ws driver handler): heartbeats, joins, leaves, pushes.
//! - [`hub`]: topic membership on this node, and fan-out.
//! - [`bridge`]: the node's subscription to `to:<topic>:*` for every topic with a local member.
//! - [`presence`]: presence across nodes; dead-node sweeps; the `admin` stats.
//! - [`clock`]: the `system` topic's clock, published by one node at a time.
//! - [`token`]: the token endpoint.

pub mod bridge;
pub mod clock;
pub mod endpoint;
pub mod hub;
pub mod presence;
pub mod socket;
pub mod token;
pub mod upgrade;
