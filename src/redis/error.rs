//! The one error type of everything that talks to Redis.

/// Why a Redis operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("{0}")]
    Pool(#[from] deadpool_redis::PoolError),
    #[error("cannot create the connection pool: {0}")]
    BuildPool(#[from] deadpool_redis::BuildError),
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Resp(#[from] crate::redis::resp::RespError),
    #[error("Redis refused: {0}")]
    Refused(String),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("the connection closed")]
    Closed,
    #[error("no master known: the sentinels have not named one yet")]
    NoMaster,
    #[error("the sentinels named a new master")]
    MasterChanged,
    #[error("{0} is not available in cluster mode")]
    Unsupported(&'static str),
}

impl RedisError {
    /// The connection broke before the command went out: a retry on a fresh one is safe. A
    /// timeout (an I/O error to redis-rs) is not: the command may have run.
    pub fn is_dropped(&self) -> bool {
        match self {
            Self::Redis(e) => !e.is_timeout() && (e.is_connection_dropped() || e.is_io_error()),
            Self::Io(_) | Self::Closed => true,
            _ => false,
        }
    }
}
