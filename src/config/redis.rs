//! `[redis]`: where events are published and replies come back.

use std::time::Duration;

use super::{Checked, ConfigError, check_name, ensure, nonzero, positive};

section! {
    pub struct RedisSettings {
        pub url: String = "redis://127.0.0.1:6379".into(),
        /// Prefix of the per-node response channel `<response_channel>.<node_id>`.
        pub response_channel: String = "refract.responses".into(),
        /// Parallel publishing connections; each carries pipelined batches, and one connection's
        /// events always use the same one, which keeps them in order.
        pub publishers: usize = 2,
        /// Events waiting to be published per publishing connection before clients feel
        /// backpressure.
        pub publish_queue: usize = 4096,
        /// How often the node sends itself a canary through its response channel.
        #[serde(with = "humantime_serde")]
        pub canary_interval: Duration = Duration::from_secs(2),
        /// How long a canary may take to come back before the node turns not-ready and
        /// re-subscribes.
        #[serde(with = "humantime_serde")]
        pub canary_timeout: Duration = Duration::from_secs(3),
        /// Timeout for connecting to Redis and for one publish batch.
        #[serde(with = "humantime_serde")]
        pub command_timeout: Duration = Duration::from_secs(3),
        /// Largest service reply accepted on the response channel.
        pub max_reply_size: usize = 1024 * 1024,
    }
}

impl RedisSettings {
    pub(super) fn validate(&self) -> Checked {
        let scheme = self.url.starts_with("redis://") || self.url.starts_with("unix://");
        ensure(scheme, "redis.url", "must start with redis:// or unix://")?;
        ::redis::Client::open(self.url.as_str()).map_err(|e| {
            ConfigError::new("redis.url", format!("is not a valid Redis URL ({e})"))
        })?;
        check_name("redis.response_channel", &self.response_channel, 200)?;
        positive("redis.publishers", self.publishers)?;
        positive("redis.publish_queue", self.publish_queue)?;
        positive("redis.max_reply_size", self.max_reply_size)?;
        nonzero("redis.canary_interval", self.canary_interval)?;
        nonzero("redis.canary_timeout", self.canary_timeout)?;
        nonzero("redis.command_timeout", self.command_timeout)
    }
}
