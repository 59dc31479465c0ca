//! Redis: the one place that knows it. Routes and Channels publish, subscribe and keep
//! presence through what this module offers, so that other ways of reaching Redis (Sentinel,
//! Cluster) are added here.
//!
//! - [`client`]: the node's client and command pool, bounded commands, [`client::RedisError`].
//! - [`publisher`]: sharded, pipelined PUBLISH, in order per connection.
//! - [`subscriber`]: the node's response-channel subscription, its canary and reconnects.
//! - [`store`]: the keys and scripts the gateway keeps in Redis: presence, the clock's lease.

pub mod client;
pub mod publisher;
pub mod store;
pub mod subscriber;
