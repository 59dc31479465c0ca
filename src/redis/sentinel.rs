//! Sentinel mode: which server is the master, and following it through a failover.
//!
//! The sentinels are asked for the master of `redis.master_name` at start, every
//! `redis.canary_interval`, and at once when one of them announces `+switch-master`. A server
//! they name becomes the node's master only once it answers `ROLE` as a master (a sentinel can
//! lag behind a failover). Following it ([`crate::redis::client::Redis::follow_master`]) ends every subscription and
//! publishing connection made for the old one, so the node stops writing to it before the
//! sentinels demote it; until the subscription and its canary are back, the node is not ready.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubStream};

use crate::Gateway;
use crate::config::RedisSettings;
use crate::log::LogLimiter;
use crate::redis::error::RedisError;

pub async fn run(gw: Arc<Gateway>) {
    let settings = &gw.settings.redis;
    let mut sentinels: Vec<Link> = settings
        .sentinels
        .iter()
        .filter_map(|url| gw.redis.tls().client(url).ok())
        .map(|client| Link { client, conn: None })
        .collect();
    let log = LogLimiter::new(Duration::from_secs(5));
    let mut switches: Option<PubSubStream> = None;
    loop {
        if let Err(e) = check(&gw, &mut sentinels).await
            && log.allow()
        {
            tracing::warn!(error = %e, "cannot find the Redis master through the sentinels");
        }
        if switches.is_none() {
            switches = watch_switches(&sentinels, settings.command_timeout).await;
        }
        let announced = async {
            match &mut switches {
                Some(s) => s.next().await.is_some(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = gw.shutdown.cancelled() => return,
            _ = tokio::time::sleep(settings.canary_interval) => {}
            heard = announced => if !heard { switches = None },
        }
    }
}

/// A server (a sentinel), and the connection kept to it between polls, made again after a
/// failure.
struct Link {
    client: redis::Client,
    conn: Option<MultiplexedConnection>,
}

impl Link {
    async fn query<T: redis::FromRedisValue>(
        &mut self,
        cmd: &redis::Cmd,
        timeout: Duration,
    ) -> Result<T, RedisError> {
        let client = &self.client;
        let conn = &mut self.conn;
        let run = async {
            if conn.is_none() {
                *conn = Some(client.get_multiplexed_async_connection().await?);
            }
            let c = conn.as_mut().expect("just made");
            Ok::<T, RedisError>(cmd.query_async(c).await?)
        };
        let result = tokio::time::timeout(timeout, run)
            .await
            .unwrap_or(Err(RedisError::Timeout("asking a sentinel or the master")));
        if result.is_err() {
            self.conn = None;
        }
        result
    }
}

/// Asks the sentinels for the master and follows it if it is new and really a master.
async fn check(gw: &Gateway, sentinels: &mut [Link]) -> Result<(), RedisError> {
    let settings = &gw.settings.redis;
    let (host, port) = named_master(sentinels, settings).await?;
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let previous = gw.redis.master();
    if previous.as_deref() == Some(addr.as_str()) {
        return Ok(());
    }
    let url = master_url(&addr, settings);
    let client = gw.redis.tls().client(&url)?;
    if !is_master(client, settings.command_timeout).await? {
        tracing::info!(%addr, "the sentinels name a master that does not answer as one yet");
        return Ok(());
    }
    gw.redis.follow_master(&url, &addr)?;
    gw.metrics.set_master(&addr);
    match previous {
        Some(old) => {
            gw.metrics.master_changes.inc();
            tracing::warn!(%old, new = %addr, "Redis failed over; following the new master");
        }
        None => tracing::info!(master = %addr, "found the Redis master through the sentinels"),
    }
    Ok(())
}

/// The first answer of `SENTINEL get-master-addr-by-name`, asking the sentinels in turn.
async fn named_master(
    sentinels: &mut [Link],
    settings: &RedisSettings,
) -> Result<(String, u16), RedisError> {
    let name = settings.master_name.as_deref().unwrap_or_default();
    let mut cmd = redis::cmd("SENTINEL");
    cmd.arg("get-master-addr-by-name").arg(name);
    let mut last = RedisError::NoMaster;
    for sentinel in sentinels {
        match sentinel
            .query::<Option<(String, u16)>>(&cmd, settings.command_timeout)
            .await
        {
            Ok(Some(addr)) => return Ok(addr),
            Ok(None) => {}
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// `redis://[user:password@]addr` (`rediss://` when the sentinels are), with the configured
/// credentials.
fn master_url(addr: &str, settings: &RedisSettings) -> String {
    let scheme = if settings.tls() { "rediss" } else { "redis" };
    let mut url = url::Url::parse(&format!("{scheme}://{addr}")).expect("host:port makes a URL");
    if let Some(user) = &settings.username {
        let _ = url.set_username(user);
    }
    if let Some(password) = &settings.password {
        let _ = url.set_password(Some(password));
    }
    url.to_string()
}

/// Whether the server answers `ROLE` as a master (one connection, made for the question).
async fn is_master(client: redis::Client, timeout: Duration) -> Result<bool, RedisError> {
    let mut link = Link { client, conn: None };
    let role: Vec<redis::Value> = link.query(&redis::cmd("ROLE"), timeout).await?;
    Ok(matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master"))
}

/// A subscription to `+switch-master` on the first sentinel that takes it.
async fn watch_switches(sentinels: &[Link], timeout: Duration) -> Option<PubSubStream> {
    for sentinel in sentinels {
        let subscribed = async {
            let mut pubsub = sentinel.client.get_async_pubsub().await.ok()?;
            pubsub.subscribe("+switch-master").await.ok()?;
            Some(pubsub.into_on_message())
        };
        if let Ok(Some(stream)) = tokio::time::timeout(timeout, subscribed).await {
            return Some(stream);
        }
    }
    None
}
