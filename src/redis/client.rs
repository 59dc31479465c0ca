//! The node's Redis handle, whichever way Redis is reached (`redis.mode`): one server, the
//! master that Sentinel names, or a Cluster. Every command is bounded by
//! `redis.command_timeout`, and one typed error covers all of it.
//!
//! - standalone: the gateway's own connections ([`super::direct`]) for subscriptions and
//!   publishing, and a pool for every other command, all to `url`;
//! - sentinel: the same, for the current master; the sentinel worker replaces it when the
//!   sentinels name another, and everything made for the old one (a publishing connection, a
//!   subscription) notices and is made again, so nothing keeps writing to a demoted master;
//! - cluster: one multiplexed cluster connection for commands (it follows `MOVED` and topology
//!   changes itself) and, per subscription, a RESP3 cluster connection whose pushes carry the
//!   sharded messages.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use deadpool_redis::{Pool, Runtime};
use redis::FromRedisValue;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use tokio::sync::{OnceCell, watch};

use crate::config::{RedisMode, RedisSettings};
use crate::redis::direct;
pub use crate::redis::error::RedisError;
use crate::redis::pubsub::Subscription;

/// One Redis server: where its connections go (the client's connection info) and a pool for
/// commands.
pub struct Server {
    client: redis::Client,
    pool: Pool,
    /// `host:port`, for logs and the `refract_redis_master` metric.
    pub addr: String,
}

impl Server {
    fn open(
        url: &str,
        addr: &str,
        pool_size: usize,
        tls: &Tls,
        timeout: Duration,
    ) -> Result<Self, RedisError> {
        let client = tls.client(url)?;
        let addr = addr.to_string();
        // The pool's connections are made like the client's, TLS settings included.
        // Without a config, redis-rs cuts each response at 500 ms and each connect at 1 s, under
        // `command_timeout`; every call here is bounded by `command_timeout` already.
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(None);
        let info = client.get_connection_info().clone();
        let manager = deadpool_redis::Manager::new_with_config(info, config)?;
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .build()?;
        Ok(Self { client, pool, addr })
    }
}

/// What `rediss://` connections trust and present (`redis.tls_*`); empty: the system's roots.
/// redis-rs's connections take the certificates; the gateway's own take the connector.
#[derive(Clone, Default)]
pub struct Tls {
    certificates: Option<redis::TlsCertificates>,
    connector: Option<tokio_rustls::TlsConnector>,
}

impl Tls {
    /// A client for `url`, with the configured certificates if it is `rediss://`.
    pub fn client(&self, url: &str) -> Result<redis::Client, RedisError> {
        match &self.certificates {
            Some(certs) if url.starts_with("rediss://") => {
                Ok(redis::Client::build_with_tls(url, certs.clone())?)
            }
            _ => Ok(redis::Client::open(url)?),
        }
    }
}

/// The master the sentinels name, replaced on a failover.
struct Followed {
    current: RwLock<Option<Arc<Server>>>,
    /// Bumped at every replacement; subscriptions end when it changes.
    changes: watch::Sender<u64>,
}

struct Cluster {
    seeds: Vec<String>,
    commands: ClusterClient,
    /// Made on first use (the cluster may not be up at start), then kept: it reconnects itself.
    conn: OnceCell<ClusterConnection>,
}

enum Target {
    Standalone(Arc<Server>),
    Sentinel(Followed),
    Cluster(Box<Cluster>),
}

pub struct Redis {
    target: Target,
    timeout: Duration,
    pool_size: usize,
    tls: Tls,
}

/// A connection a publishing worker keeps between batches, with the server it was made for
/// (in sentinel mode, perhaps no longer the master).
pub enum Conn {
    /// The gateway's own.
    Direct(Box<direct::Conn>, Arc<Server>),
    Cluster(ClusterConnection),
}

impl Redis {
    /// Nothing connects yet: connections are made on first use and remade after failures.
    pub fn open(settings: &RedisSettings) -> Result<Self, RedisError> {
        let timeout = settings.command_timeout;
        // Commands other than publishing (scripts, canaries, reads): publishers hold their own.
        let pool_size = 2;
        if settings.tls() {
            crate::config::pem::install_crypto_provider();
        }
        let certificates = settings.tls_certificates()?;
        let connector = settings
            .tls_client_config(certificates.as_ref())?
            .map(|c| tokio_rustls::TlsConnector::from(Arc::new(c)));
        let tls = Tls {
            certificates,
            connector,
        };
        let target = match settings.mode {
            RedisMode::Standalone => {
                let server = Server::open(&settings.url, &settings.url, pool_size, &tls, timeout)?;
                Target::Standalone(Arc::new(server))
            }
            RedisMode::Sentinel => Target::Sentinel(Followed {
                current: RwLock::new(None),
                changes: watch::Sender::new(0),
            }),
            RedisMode::Cluster => Target::Cluster(Box::new(Cluster {
                seeds: settings.nodes.clone(),
                commands: cluster_builder(&settings.nodes, timeout, &tls).build()?,
                conn: OnceCell::new(),
            })),
        };
        Ok(Self {
            target,
            timeout,
            pool_size,
            tls,
        })
    }

    /// How `rediss://` connections are made (for the sentinel worker's own connections).
    pub fn tls(&self) -> &Tls {
        &self.tls
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sharded pub/sub (cluster mode): SPUBLISH and SSUBSCRIBE instead of PUBLISH and SUBSCRIBE.
    pub fn sharded(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    /// The command that publishes in this mode.
    pub fn publish_command(&self) -> &'static str {
        if self.sharded() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// The server commands go to: the one server, or the current master.
    fn server(&self) -> Result<Arc<Server>, RedisError> {
        match &self.target {
            Target::Standalone(s) => Ok(s.clone()),
            Target::Sentinel(f) => f
                .current
                .read()
                .unwrap()
                .clone()
                .ok_or(RedisError::NoMaster),
            Target::Cluster(_) => Err(RedisError::Unsupported("a single server")),
        }
    }

    /// The current master's address (sentinel mode).
    pub fn master(&self) -> Option<String> {
        self.server().ok().map(|s| s.addr.clone())
    }

    /// Makes the server at `url` (`addr`) the master (sentinel mode): from now on commands,
    /// publishing connections and subscriptions use it, and those made for the old one are
    /// dropped before their next use.
    pub fn follow_master(&self, url: &str, addr: &str) -> Result<(), RedisError> {
        let Target::Sentinel(f) = &self.target else {
            return Err(RedisError::Unsupported("following a master"));
        };
        let server = Arc::new(Server::open(
            url,
            addr,
            self.pool_size,
            &self.tls,
            self.timeout,
        )?);
        *f.current.write().unwrap() = Some(server);
        f.changes.send_modify(|n| *n += 1);
        Ok(())
    }

    async fn cluster_conn(c: &Cluster, timeout: Duration) -> Result<ClusterConnection, RedisError> {
        let connect = c.conn.get_or_try_init(|| c.commands.get_async_connection());
        match tokio::time::timeout(timeout, connect).await {
            Ok(conn) => Ok(conn?.clone()),
            Err(_) => Err(RedisError::Timeout("connecting to the cluster")),
        }
    }

    /// Runs one command; connecting and running share the timeout. In cluster mode it goes to
    /// the node that owns its first key.
    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, RedisError> {
        let run = async {
            match &self.target {
                Target::Cluster(c) => {
                    let mut conn = Self::cluster_conn(c, self.timeout).await?;
                    Ok(cmd.query_async::<T>(&mut conn).await?)
                }
                _ => {
                    let mut conn = self.server()?.pool.get().await?;
                    Ok(cmd.query_async::<T>(&mut conn).await?)
                }
            }
        };
        tokio::time::timeout(self.timeout, run)
            .await
            .unwrap_or(Err(RedisError::Timeout("running a command")))
    }

    /// Runs a Lua script with `keys` and `args`; in cluster mode, the keys share one slot.
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

    /// Publishes `(channel, payload)` pairs as pipelines; returns how many subscribers each
    /// reached. `conn` is kept between calls; it is made (again) when missing, broken, or made for
    /// a master that is no longer the master.
    pub async fn publish_batch(
        &self,
        conn: &mut Option<Conn>,
        batch: &[(&str, &[u8])],
    ) -> Result<Vec<i64>, RedisError> {
        if let Target::Cluster(c) = &self.target {
            if conn.is_none() {
                *conn = Some(Conn::Cluster(Self::cluster_conn(c, self.timeout).await?));
            }
            let Some(Conn::Cluster(cc)) = conn else {
                unreachable!("cluster mode keeps cluster connections")
            };
            let sent = tokio::time::timeout(self.timeout, publish_by_slot(cc, batch));
            return sent.await.unwrap_or(Err(RedisError::Timeout("publishing")));
        }
        let current = self.server()?;
        if matches!(conn, Some(Conn::Direct(_, s)) if !Arc::ptr_eq(s, &current)) {
            discard(conn);
        }
        // A connection kept from before a Redis restart fails on first use without having sent
        // anything; one retry on a fresh connection keeps that from losing the batch. A timeout
        // is not retried: Redis may have executed the pipeline, and a retry would duplicate it.
        let reused = conn.is_some();
        match self.send_direct(conn, &current, batch).await {
            Err(e) if reused && e.is_dropped() => {
                discard(conn);
                self.send_direct(conn, &current, batch).await
            }
            r => r,
        }
    }

    /// Publishes on the gateway's own connection, made first if there is none.
    async fn send_direct(
        &self,
        conn: &mut Option<Conn>,
        server: &Arc<Server>,
        batch: &[(&str, &[u8])],
    ) -> Result<Vec<i64>, RedisError> {
        if conn.is_none() {
            let info = server.client.get_connection_info();
            let connect = direct::Conn::connect(info, self.tls.connector.as_ref());
            let made = tokio::time::timeout(self.timeout, connect)
                .await
                .map_err(|_| RedisError::Timeout("connecting"))??;
            *conn = Some(Conn::Direct(Box::new(made), server.clone()));
        }
        let Some(Conn::Direct(c, _)) = conn else {
            unreachable!("a direct connection was just made")
        };
        let sent = tokio::time::timeout(self.timeout, c.publish(batch)).await;
        sent.unwrap_or(Err(RedisError::Timeout("publishing")))
    }

    /// A new subscription connection: SUBSCRIBE on the server (or master), SSUBSCRIBE across
    /// the cluster. In sentinel mode its stream ends when the sentinels name a new master.
    pub async fn subscription(&self) -> Result<Subscription, RedisError> {
        let connect = async {
            match &self.target {
                Target::Cluster(c) => {
                    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                    let client = cluster_builder(&c.seeds, self.timeout, &self.tls)
                        .use_protocol(redis::ProtocolVersion::RESP3)
                        .push_sender(tx)
                        .build()?;
                    let conn = client.get_async_connection().await?;
                    Ok(Subscription::cluster(conn, rx, self.timeout))
                }
                _ => {
                    // Watch for a new master before reading the current one, so that a change
                    // in between is not missed.
                    let changes = match &self.target {
                        Target::Sentinel(f) => Some(f.changes.subscribe()),
                        _ => None,
                    };
                    let server = self.server()?;
                    let info = server.client.get_connection_info();
                    let conn = direct::Conn::connect(info, self.tls.connector.as_ref()).await?;
                    Ok(Subscription::direct(conn, changes, self.timeout))
                }
            }
        };
        match tokio::time::timeout(self.timeout, connect).await {
            Ok(r) => r,
            Err(_) => Err(RedisError::Timeout("connecting for pub/sub")),
        }
    }
}

/// Where this node looks for Redis, for logs: URLs without their passwords.
pub fn describe(settings: &RedisSettings) -> String {
    let redact = |raw: &String| match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => raw.clone(),
    };
    let list = |urls: &[String]| urls.iter().map(redact).collect::<Vec<_>>().join(", ");
    match settings.mode {
        RedisMode::Standalone => redact(&settings.url),
        RedisMode::Sentinel => format!(
            "the master \"{}\" named by the sentinels {}",
            settings.master_name.as_deref().unwrap_or_default(),
            list(&settings.sentinels)
        ),
        RedisMode::Cluster => format!("the cluster of {}", list(&settings.nodes)),
    }
}

fn cluster_builder(seeds: &[String], timeout: Duration, tls: &Tls) -> ClusterClientBuilder {
    let builder = ClusterClientBuilder::new(seeds.to_vec())
        .connection_timeout(timeout)
        .response_timeout(timeout);
    match &tls.certificates {
        Some(certs) => builder.certs(certs.clone()),
        None => builder,
    }
}

/// A cluster pipeline must stay in one slot: one pipeline per slot, sent side by side, each
/// keeping its channels' order.
async fn publish_by_slot(
    conn: &ClusterConnection,
    batch: &[(&str, &[u8])],
) -> Result<Vec<i64>, RedisError> {
    let mut by_slot: HashMap<Slot, Vec<usize>> = HashMap::new();
    for (i, (channel, _)) in batch.iter().enumerate() {
        by_slot.entry(Slot::for_key(channel)).or_default().push(i);
    }
    let sends = by_slot.into_values().map(|indices| {
        let mut conn = conn.clone();
        async move {
            let mut pipe = redis::pipe();
            for &i in &indices {
                pipe.cmd("SPUBLISH").arg(batch[i].0).arg(batch[i].1);
            }
            let heard: Vec<i64> = pipe.query_async(&mut conn).await?;
            Ok::<_, RedisError>((indices, heard))
        }
    });
    let mut receivers = vec![0; batch.len()];
    for (indices, heard) in futures_util::future::try_join_all(sends).await? {
        for (i, n) in indices.into_iter().zip(heard) {
            receivers[i] = n;
        }
    }
    Ok(receivers)
}

/// Drops a connection that failed (or belongs to a demoted master).
pub fn discard(conn: &mut Option<Conn>) {
    conn.take();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_name_the_target_without_passwords() {
        let mut s = RedisSettings {
            url: "redis://app:s3cret@10.0.0.1:6379/2".into(),
            ..RedisSettings::default()
        };
        assert_eq!(describe(&s), "redis://app:***@10.0.0.1:6379/2");
        s.mode = RedisMode::Sentinel;
        s.sentinels = vec!["redis://10.0.0.2:26379".into()];
        s.master_name = Some("mymaster".into());
        assert_eq!(
            describe(&s),
            "the master \"mymaster\" named by the sentinels redis://10.0.0.2:26379"
        );
        s.mode = RedisMode::Cluster;
        s.nodes = vec!["redis://:pw@a:1".into(), "redis://b:2".into()];
        assert_eq!(describe(&s), "the cluster of redis://:***@a:1, redis://b:2");
    }
}
