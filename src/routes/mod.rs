//! Routes, the Prism-style front door: a URL path maps to services that hear every client's
//! connect, messages and disconnect, and answer that one client.
//!
//! - [`table`]: the configured routes, ready for the hot path.
//! - [`session`]: one client on a route (a ws driver handler): frames become events.
//! - [`peer`]: who a connection is, as every event says.
//! - [`registry`]: live connections by id, where a reply finds its client.
//! - [`relay`]: where a decoded service reply becomes frames on a client's queue.
//! - [`http_service`]: legacy HTTP services: a service's URLs, health and one POST.
//! - [`lane`]: one connection's events to one HTTP service, in order, and its polls.

pub mod http_service;
pub mod lane;
pub mod peer;
pub mod registry;
pub mod relay;
pub mod session;
pub mod table;
