//! Presence across nodes. The truth lives in Redis:
//!
//! - `refract:presence:<topic>`: a hash, field = `phx_ref`, value = `{"key", "meta"}`;
//! - `refract:presence:topics`: the set of topics with entries;
//! - `refract:node:<node>`: each node's liveness key (its stats as the value), with a TTL the
//!   node keeps refreshing.
//!
//! Joins and leaves change the hash and publish `to:<topic>:presence_diff` in one script, so a
//! diff goes out exactly when the hash changed. Every node sweeps: entries of a node whose
//! liveness key has expired are removed, and their leaves published, by one atomic script, so
//! exactly one survivor publishes them. After Redis comes back, each node writes its entries
//! again (publishing joins for any that were missing).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::Gateway;
use crate::channels::Channels;

pub const TOPICS_KEY: &str = "refract:presence:topics";

pub fn hash_key(topic: &str) -> String {
    format!("refract:presence:{topic}")
}

pub fn node_key(node: &str) -> String {
    format!("refract:node:{node}")
}

fn diff_channel(topic: &str) -> String {
    format!("to:{topic}:presence_diff")
}

/// `{"joins": {key: {"metas": [meta]}}, "leaves": {}}` (or the other way round).
pub fn diff(key: &str, meta: &str, join: bool) -> String {
    let entry = format!(
        "{{{}:{{\"metas\":[{meta}]}}}}",
        serde_json::to_string(key).expect("str")
    );
    if join {
        format!("{{\"joins\":{entry},\"leaves\":{{}}}}")
    } else {
        format!("{{\"joins\":{{}},\"leaves\":{entry}}}")
    }
}

fn entry(key: &str, meta: &str) -> String {
    format!(
        "{{\"key\":{},\"meta\":{meta}}}",
        serde_json::to_string(key).expect("str")
    )
}

/// HSET the entry; with ARGV[6] = "1", publish the join diff if the field is new.
const JOIN: &str = r"
local added = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
if added == 1 and ARGV[6] == '1' then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return added";

/// HDEL the entry; publish the leave diff only if it was there.
const LEAVE: &str = r"
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
if removed == 1 then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[4]) end
return removed";

/// For one topic: remove every entry whose node is dead (no liveness key), or is ARGV[3] (this
/// node's previous life, at start-up), and publish their leaves in one diff.
const SWEEP: &str = r"
local all = redis.call('HGETALL', KEYS[1])
local leaves = {}
local removed = 0
for i = 1, #all, 2 do
  local ok, e = pcall(cjson.decode, all[i + 1])
  local node = ok and type(e) == 'table' and type(e.meta) == 'table' and e.meta.node
  if type(node) == 'string' and (node == ARGV[3] or redis.call('EXISTS', 'refract:node:' .. node) == 0) then
    redis.call('HDEL', KEYS[1], all[i])
    removed = removed + 1
    leaves[e.key] = leaves[e.key] or {metas = {}}
    table.insert(leaves[e.key].metas, e.meta)
  end
end
if removed > 0 then
  redis.call('PUBLISH', ARGV[1], cjson.encode({joins = {}, leaves = leaves}))
end
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[2]) end
return removed";

async fn eval(gw: &Gateway, script: &str, keys: &[&str], args: &[&str]) -> Option<i64> {
    let run = async {
        let mut conn = gw.publisher.pool().get().await.ok()?;
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script).arg(keys.len());
        for k in keys {
            cmd.arg(*k);
        }
        for a in args {
            cmd.arg(*a);
        }
        cmd.query_async::<i64>(&mut conn).await.ok()
    };
    tokio::time::timeout(gw.settings.redis.command_timeout, run)
        .await
        .ok()
        .flatten()
}

/// Records a join in Redis. With `announce`, the join diff is published in the same script when
/// the entry is new. `None` if Redis did not take it, else whether the entry was new.
pub async fn join(
    gw: &Gateway,
    topic: &str,
    phx_ref: &str,
    key: &str,
    meta: &str,
    announce: bool,
) -> Option<bool> {
    let hash = hash_key(topic);
    let flag = if announce { "1" } else { "0" };
    let args = [
        phx_ref,
        &entry(key, meta),
        topic,
        &diff_channel(topic),
        &diff(key, meta, true),
        flag,
    ];
    eval(gw, JOIN, &[&hash, TOPICS_KEY], &args)
        .await
        .map(|added| added == 1)
}

/// Records a leave; the diff goes out only if the entry was still there.
pub async fn leave(gw: &Gateway, topic: &str, phx_ref: &str, key: &str, meta: &str) {
    let hash = hash_key(topic);
    let args = [
        phx_ref,
        &diff_channel(topic),
        &diff(key, meta, false),
        topic,
    ];
    eval(gw, LEAVE, &[&hash, TOPICS_KEY], &args).await;
}

/// The whole membership of a topic across nodes, `{key: {"metas": [...]}}`, at most `max`
/// metas. `None` if Redis could not be read.
pub async fn state(gw: &Gateway, topic: &str, max: usize) -> Option<String> {
    let read = async {
        let mut conn = gw.publisher.pool().get().await.ok()?;
        redis::cmd("HGETALL")
            .arg(hash_key(topic))
            .query_async::<Vec<(String, String)>>(&mut conn)
            .await
            .ok()
    };
    let fields = tokio::time::timeout(gw.settings.redis.command_timeout, read)
        .await
        .ok()
        .flatten()?;
    let mut by_key: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for (_, value) in fields.into_iter().take(max) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&value) else {
            continue;
        };
        if let (Some(key), Some(meta)) = (v["key"].as_str(), v.get("meta")) {
            by_key.entry(key.to_owned()).or_default().push(meta.clone());
        }
    }
    let state: serde_json::Map<String, serde_json::Value> = by_key
        .into_iter()
        .map(|(k, metas)| (k, serde_json::json!({ "metas": metas })))
        .collect();
    Some(serde_json::Value::Object(state).to_string())
}

/// The node's presence worker: refreshes its liveness key (with its stats), sweeps dead nodes'
/// entries, re-writes its own entries after Redis recovers, and feeds the `admin` topic.
pub async fn run(gw: Arc<Gateway>, ch: Arc<Channels>) {
    let p = &ch.settings.presence;
    let mut tick = tokio::time::interval(p.refresh_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen_recoveries = gw.publisher.recoveries();
    let mut admin_due = tokio::time::Instant::now();
    // Before this node takes joins: clear what a previous process with the same id left.
    loop {
        if sweep(&gw, true).await {
            ch.presence_ready
                .store(true, std::sync::atomic::Ordering::Release);
            break;
        }
        tokio::select! {
            _ = gw.shutdown.cancelled() => return,
            _ = tokio::time::sleep(p.refresh_interval) => {}
        }
    }
    loop {
        tokio::select! {
            _ = gw.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let stats = node_stats(&gw);
        let alive = async {
            let mut conn = gw.publisher.pool().get().await.ok()?;
            redis::cmd("SET")
                .arg(node_key(gw.node.as_str()))
                .arg(stats)
                .arg("PX")
                .arg(p.ttl.as_millis() as u64)
                .query_async::<()>(&mut conn)
                .await
                .ok()
        };
        if tokio::time::timeout(gw.settings.redis.command_timeout, alive)
            .await
            .ok()
            .flatten()
            .is_none()
        {
            continue;
        }
        let recoveries = gw.publisher.recoveries();
        if recoveries != seen_recoveries {
            seen_recoveries = recoveries;
            rewrite_local(&gw, &ch).await;
        }
        sweep(&gw, false).await;
        if ch.hub.has_topic("admin") && tokio::time::Instant::now() >= admin_due {
            admin_due = tokio::time::Instant::now() + ch.settings.presence.admin_interval;
            if let Some(stats) = cluster_stats(&gw).await {
                ch.hub.deliver("admin", "stats", stats.as_bytes());
            }
        }
    }
}

/// What this node tells the others about itself (the value of its liveness key).
fn node_stats(gw: &Gateway) -> String {
    let routes: i64 = gw.metrics.routes.iter().map(|r| r.connections.get()).sum();
    let sockets = gw.metrics.channels.sockets.get();
    serde_json::json!({"node": gw.node.as_str(), "connections": routes + sockets,
                       "route_connections": routes, "sockets": sockets})
    .to_string()
}

/// Removes dead nodes' entries; with `own_past`, also every entry of this node id (at start-up,
/// before any join, those are a previous process's: it may have been killed and restarted
/// faster than its liveness key expires). Returns false if Redis could not be read.
async fn sweep(gw: &Gateway, own_past: bool) -> bool {
    let topics = async {
        let mut conn = gw.publisher.pool().get().await.ok()?;
        redis::cmd("SMEMBERS")
            .arg(TOPICS_KEY)
            .query_async::<Vec<String>>(&mut conn)
            .await
            .ok()
    };
    let Some(topics) = tokio::time::timeout(gw.settings.redis.command_timeout, topics)
        .await
        .ok()
        .flatten()
    else {
        return false;
    };
    let mine = if own_past { gw.node.as_str() } else { "" };
    for topic in topics {
        let hash = hash_key(&topic);
        let channel = diff_channel(&topic);
        let removed = eval(gw, SWEEP, &[&hash, TOPICS_KEY], &[&channel, &topic, mine]).await;
        if let Some(n) = removed.filter(|n| *n > 0) {
            gw.metrics.channels.presence_swept.inc_by(n as u64);
            tracing::info!(topic = %topic, removed = n, "removed presence entries of dead nodes");
        }
    }
    true
}

/// After Redis comes back (possibly empty), this node's memberships are written again; any that
/// were missing are announced as joins.
async fn rewrite_local(gw: &Gateway, ch: &Channels) {
    let mut n = 0;
    for (topic, members) in ch.hub.snapshot() {
        for m in members {
            let phx_ref = crate::channels::socket::phx_ref(gw, &m.conn, &m.join_ref);
            if join(gw, &topic, &phx_ref, &m.key, &m.meta, true).await == Some(true) {
                n += 1;
            }
        }
    }
    tracing::info!(
        entries = n,
        "presence entries re-written after Redis recovered"
    );
}

/// Nodes, connection counts and topic membership, for the `admin` topic.
pub async fn cluster_stats(gw: &Gateway) -> Option<String> {
    let read = async {
        let mut conn = gw.publisher.pool().get().await.ok()?;
        let mut node_keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg("refract:node:*")
                .arg("COUNT")
                .arg(100)
                .query_async(&mut conn)
                .await
                .ok()?;
            node_keys.extend(keys);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let nodes: Vec<Option<String>> = if node_keys.is_empty() {
            Vec::new()
        } else {
            redis::cmd("MGET")
                .arg(&node_keys)
                .query_async(&mut conn)
                .await
                .ok()?
        };
        let topics: Vec<String> = redis::cmd("SMEMBERS")
            .arg(TOPICS_KEY)
            .query_async(&mut conn)
            .await
            .ok()?;
        let mut counts = serde_json::Map::new();
        for t in topics {
            let n: u64 = redis::cmd("HLEN")
                .arg(hash_key(&t))
                .query_async(&mut conn)
                .await
                .ok()?;
            counts.insert(t, n.into());
        }
        let nodes: Vec<serde_json::Value> = nodes
            .into_iter()
            .flatten()
            .filter_map(|s| serde_json::from_str(&s).ok())
            .collect();
        Some(serde_json::json!({"nodes": nodes, "topics": counts}).to_string())
    };
    tokio::time::timeout(gw.settings.redis.command_timeout, read)
        .await
        .ok()
        .flatten()
}
