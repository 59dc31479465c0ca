//! Redis: the one place that knows it. Routes and Channels publish, subscribe and keep
//! presence through what this module offers, whichever way Redis is reached (`redis.mode`):
//! one server, the master Sentinel names, or a Cluster with sharded pub/sub.
//!
//! - [`client`]: the node's handle in each mode, and bounded commands.
//! - [`error`]: [`error::RedisError`], the one error of all of it.
//! - [`pubsub`]: one subscription connection (SUBSCRIBE or SSUBSCRIBE) and what it hears.
//! - [`direct`]: the gateway's own connection to a plain server: a subscription, or PUBLISH
//!   pipelines, with no task in between.
//! - [`resp`]: RESP2 frames, read and written (pure).
//! - [`publisher`]: sharded, pipelined PUBLISH (SPUBLISH in a cluster), in order per connection.
//! - [`subscriber`]: the node's response-channel subscription, its canary and reconnects.
//! - [`sentinel`]: asks the sentinels which server is the master and follows a failover.
//! - [`store`]: the keys and scripts the gateway keeps in Redis: presence, the clock's lease.

pub mod client;
pub mod direct;
pub mod error;
pub mod publisher;
pub mod pubsub;
pub mod resp;
pub mod sentinel;
pub mod store;
pub mod subscriber;
