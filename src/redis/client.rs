//! The node's Redis handle: one client for pub/sub connections, one pool for commands, every
//! command bounded by `redis.command_timeout`, and one typed error for all of it.

use std::time::Duration;

use deadpool_redis::{Pool, Runtime};
use redis::FromRedisValue;

use crate::config::RedisSettings;

/// Why a Redis operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("{0}")]
    Pool(#[from] deadpool_redis::PoolError),
    #[error("cannot create the connection pool: {0}")]
    CreatePool(#[from] deadpool_redis::CreatePoolError),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("the connection closed")]
    Closed,
}

impl RedisError {
    /// The connection broke before the command went out: a retry on a fresh one is safe.
    pub fn is_dropped(&self) -> bool {
        matches!(self, Self::Redis(e) if e.is_connection_dropped() || e.is_io_error())
    }
}

pub struct Redis {
    client: redis::Client,
    pool: Pool,
    timeout: Duration,
}

impl Redis {
    /// Nothing connects yet: connections are made on first use and remade after failures.
    pub fn open(settings: &RedisSettings) -> Result<Self, RedisError> {
        let client = redis::Client::open(settings.url.as_str())?;
        let mut cfg = deadpool_redis::Config::from_url(settings.url.clone());
        cfg.pool = Some(deadpool_redis::PoolConfig::new(settings.publishers + 2));
        let pool = cfg.create_pool(Some(Runtime::Tokio1))?;
        Ok(Self {
            client,
            pool,
            timeout: settings.command_timeout,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A pooled connection, within the command timeout.
    pub async fn connection(&self) -> Result<deadpool_redis::Connection, RedisError> {
        match tokio::time::timeout(self.timeout, self.pool.get()).await {
            Ok(conn) => Ok(conn?),
            Err(_) => Err(RedisError::Timeout("connecting")),
        }
    }

    /// A new pub/sub connection, within the command timeout.
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, RedisError> {
        match tokio::time::timeout(self.timeout, self.client.get_async_pubsub()).await {
            Ok(pubsub) => Ok(pubsub?),
            Err(_) => Err(RedisError::Timeout("connecting for pub/sub")),
        }
    }

    /// Runs one command on a pooled connection; connecting and running share the timeout.
    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, RedisError> {
        let run = async {
            let mut conn = self.pool.get().await?;
            Ok(cmd.query_async::<T>(&mut conn).await?)
        };
        tokio::time::timeout(self.timeout, run)
            .await
            .unwrap_or(Err(RedisError::Timeout("running a command")))
    }

    /// Runs a Lua script with `keys` and `args`.
    pub async fn eval<T: FromRedisValue>(
        &self,
        script: &str,
        keys: &[&str],
        args: &[&str],
    ) -> Result<T, RedisError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script).arg(keys.len()).arg(keys).arg(args);
        self.query(&cmd).await
    }
}
