//! What the gateway keeps in Redis besides pub/sub, and the scripts that change it atomically.
//!
//! One server (standalone or the Sentinel master):
//! - `refract:presence:<topic>`: a hash, field = `phx_ref`, value = `{"key", "meta"}`;
//! - `refract:presence:topics`: the set of topics with entries;
//! - `refract:node:<node>`: each node's liveness key (its stats as the value), with a TTL the
//!   node keeps refreshing;
//! - `refract:channels:system:{leader,counter}`: the `system` clock's lease and count.
//!
//! A Cluster, where a script may touch one slot only:
//! - `refract:presence:{<topic>}`: the topic's hash, in the slot of its channel `to:{<topic>}`,
//!   so a change and its diff are still one script;
//! - `refract:{nodes}:alive`: a sorted set, node → the Redis time (ms) its liveness ends;
//! - `refract:{nodes}:stats`: a hash, node → its stats;
//! - `refract:{nodes}:topics:<node>`: the topics where a node has (or had) entries, written
//!   before its entries are, so the entries of a dead node are found without a scan;
//! - `refract:{system}:{leader,counter}`: the clock's lease and count.
//!
//! A presence change and its diff go out in one script, so a diff is published exactly when
//! the hash changed; a sweep of dead nodes' entries is one script per topic, so exactly one
//! surviving node publishes their leaves.

use crate::redis::client::{Redis, RedisError};

const TOPICS_KEY: &str = "refract:presence:topics";
const ALIVE_KEY: &str = "refract:{nodes}:alive";
const STATS_KEY: &str = "refract:{nodes}:stats";

fn hash_key(topic: &str, sharded: bool) -> String {
    if sharded {
        format!("refract:presence:{{{topic}}}")
    } else {
        format!("refract:presence:{topic}")
    }
}

fn node_topics_key(node: &str) -> String {
    format!("refract:{{nodes}}:topics:{node}")
}

/// The keys a presence script declares: the topic's hash, and (one server) the topic index.
fn presence_keys(redis: &Redis, topic: &str) -> Vec<String> {
    let mut keys = vec![hash_key(topic, redis.sharded())];
    if !redis.sharded() {
        keys.push(TOPICS_KEY.into());
    }
    keys
}

/// HSET the entry; with ARGV[6] = "1", publish the join diff (with ARGV[7]) if the field is new.
const JOIN: &str = r"
local added = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if KEYS[2] then redis.call('SADD', KEYS[2], ARGV[3]) end
if added == 1 and ARGV[6] == '1' then redis.call(ARGV[7], ARGV[4], ARGV[5]) end
return added";

/// HDEL the entry; publish the leave diff only if it was there.
const LEAVE: &str = r"
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
if removed == 1 then redis.call(ARGV[5], ARGV[2], ARGV[3]) end
if KEYS[2] and redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[4]) end
return removed";

/// For one topic: remove every entry whose node is named in ARGV[5..] (dead, or this node's
/// previous life at start-up) or, on one server, has no liveness key; publish their leaves in
/// one diff, `ARGV[3] .. json` on channel ARGV[2] with command ARGV[1].
const SWEEP: &str = r"
local named = {}
for i = 5, #ARGV do named[ARGV[i]] = true end
local all = redis.call('HGETALL', KEYS[1])
local leaves = {}
local removed = 0
for i = 1, #all, 2 do
  local ok, e = pcall(cjson.decode, all[i + 1])
  local node = ok and type(e) == 'table' and type(e.meta) == 'table' and e.meta.node
  if type(node) == 'string' and (named[node] or (KEYS[2] and redis.call('EXISTS', 'refract:node:' .. node) == 0)) then
    redis.call('HDEL', KEYS[1], all[i])
    removed = removed + 1
    leaves[e.key] = leaves[e.key] or {metas = {}}
    table.insert(leaves[e.key].metas, e.meta)
  end
end
if removed > 0 then
  redis.call(ARGV[1], ARGV[2], ARGV[3] .. cjson.encode({joins = {}, leaves = leaves}))
end
if KEYS[2] and redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[4]) end
return removed";

/// The clock's lease: whoever holds it (or takes it when free) bumps the counter; others get 0.
const CLOCK: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) or redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return redis.call('INCR', KEYS[2])
end
return 0";

/// Cluster liveness: the node's lease ends ARGV[3] ms after Redis's clock, not the node's.
const ALIVE: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return now";

/// Cluster: the nodes whose lease has ended (ARGV[1] = "dead") or not ("live", with stats).
const NODES: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
if ARGV[1] == 'dead' then return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now) end
local live = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
if #live == 0 then return {} end
return redis.call('HMGET', KEYS[2], unpack(live))";

/// Cluster: forgets a swept node (its lease, stats and topic index), unless it came back.
const FORGET: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local until_ms = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '0')
if until_ms >= now then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3])
return 1";

/// One membership's presence, and the diff to publish when it changes.
pub struct Change<'a> {
    pub node: &'a str,
    pub topic: &'a str,
    pub phx_ref: &'a str,
    /// The entry (`{"key", "meta"}`) to store; unused for a leave.
    pub entry: &'a str,
    /// The channel and message that carry the diff to the topic's members.
    pub diff_channel: &'a str,
    pub diff: &'a str,
}

/// Where a sweep publishes: the topic's diff channel, and what goes before the diff's JSON.
pub struct DiffTarget<'a> {
    pub channel: &'a str,
    pub prefix: &'a str,
}

/// Stores an entry, publishing the diff when it is new and `announce` is set; true when new.
/// In a cluster the topic goes into the node's index first, so a sweep can always find it.
pub async fn join(redis: &Redis, c: &Change<'_>, announce: bool) -> Result<bool, RedisError> {
    if redis.sharded() {
        index_topic(redis, c.node, c.topic).await?;
    }
    let flag = if announce { "1" } else { "0" };
    let args = [
        c.phx_ref,
        c.entry,
        c.topic,
        c.diff_channel,
        c.diff,
        flag,
        redis.publish_command(),
    ];
    let keys = presence_keys(redis, c.topic);
    let added: i64 = redis.eval(JOIN, &as_strs(&keys), &args).await?;
    Ok(added == 1)
}

/// Removes an entry, publishing the diff only if it was there.
pub async fn leave(redis: &Redis, c: &Change<'_>) -> Result<(), RedisError> {
    let args = [
        c.phx_ref,
        c.diff_channel,
        c.diff,
        c.topic,
        redis.publish_command(),
    ];
    let keys = presence_keys(redis, c.topic);
    let _: i64 = redis.eval(LEAVE, &as_strs(&keys), &args).await?;
    Ok(())
}

/// Every entry of a topic, across nodes: one read of one key.
pub async fn entries(redis: &Redis, topic: &str) -> Result<Vec<(String, String)>, RedisError> {
    let key = hash_key(topic, redis.sharded());
    redis.query(redis::cmd("HGETALL").arg(key)).await
}

/// Entries of a topic.
pub async fn count(redis: &Redis, topic: &str) -> Result<u64, RedisError> {
    let key = hash_key(topic, redis.sharded());
    redis.query(redis::cmd("HLEN").arg(key)).await
}

/// Topics with entries (one server), or where a live or unswept node has them (cluster).
pub async fn topics(redis: &Redis) -> Result<Vec<String>, RedisError> {
    if !redis.sharded() {
        return redis.query(redis::cmd("SMEMBERS").arg(TOPICS_KEY)).await;
    }
    let nodes: Vec<String> = redis
        .query(redis::cmd("ZRANGE").arg(ALIVE_KEY).arg(0).arg(-1))
        .await?;
    if nodes.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = nodes.iter().map(|n| node_topics_key(n)).collect();
    redis.query(redis::cmd("SUNION").arg(keys)).await
}

/// Cluster: the topics in `node`'s index.
pub async fn node_topics(redis: &Redis, node: &str) -> Result<Vec<String>, RedisError> {
    let key = node_topics_key(node);
    redis.query(redis::cmd("SMEMBERS").arg(key)).await
}

/// Cluster: puts `topic` into `node`'s index.
pub async fn index_topic(redis: &Redis, node: &str, topic: &str) -> Result<(), RedisError> {
    let key = node_topics_key(node);
    let _: i64 = redis.query(redis::cmd("SADD").arg(key).arg(topic)).await?;
    Ok(())
}

/// Cluster: takes `topic` out of `node`'s index.
pub async fn unindex_topic(redis: &Redis, node: &str, topic: &str) -> Result<(), RedisError> {
    let key = node_topics_key(node);
    let _: i64 = redis.query(redis::cmd("SREM").arg(key).arg(topic)).await?;
    Ok(())
}

/// Removes from one topic the entries of the `named` nodes (and, on one server, of nodes
/// without a liveness key) and publishes their leaves; returns how many were removed.
pub async fn sweep(
    redis: &Redis,
    topic: &str,
    diff: &DiffTarget<'_>,
    named: &[&str],
) -> Result<i64, RedisError> {
    let keys = presence_keys(redis, topic);
    let mut args = vec![redis.publish_command(), diff.channel, diff.prefix, topic];
    args.extend_from_slice(named);
    redis.eval(SWEEP, &as_strs(&keys), &args).await
}

/// Refreshes this node's liveness, with its stats as the value.
pub async fn set_alive(
    redis: &Redis,
    node: &str,
    stats: &str,
    ttl_ms: u64,
) -> Result<(), RedisError> {
    if redis.sharded() {
        let ttl = ttl_ms.to_string();
        let _: i64 = redis
            .eval(ALIVE, &[ALIVE_KEY, STATS_KEY], &[node, stats, &ttl])
            .await?;
        return Ok(());
    }
    let mut cmd = redis::cmd("SET");
    cmd.arg(format!("refract:node:{node}"))
        .arg(stats)
        .arg("PX")
        .arg(ttl_ms);
    redis.query(&cmd).await
}

/// Cluster: the nodes whose liveness has ended and whose entries may remain.
pub async fn dead_nodes(redis: &Redis) -> Result<Vec<String>, RedisError> {
    redis.eval(NODES, &[ALIVE_KEY, STATS_KEY], &["dead"]).await
}

/// Cluster: forgets a dead node once its entries are swept (not if it has come back).
pub async fn forget(redis: &Redis, node: &str) -> Result<(), RedisError> {
    let keys = [ALIVE_KEY, STATS_KEY, &node_topics_key(node)];
    let _: i64 = redis.eval(FORGET, &keys, &[node]).await?;
    Ok(())
}

/// The stats of every live node.
pub async fn live_nodes(redis: &Redis) -> Result<Vec<String>, RedisError> {
    if redis.sharded() {
        let stats: Vec<Option<String>> = redis
            .eval(NODES, &[ALIVE_KEY, STATS_KEY], &["live"])
            .await?;
        return Ok(stats.into_iter().flatten().collect());
    }
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor).arg("MATCH").arg("refract:node:*");
        let (next, found): (u64, Vec<String>) = redis.query(scan.arg("COUNT").arg(100)).await?;
        keys.extend(found);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let values: Vec<Option<String>> = redis.query(redis::cmd("MGET").arg(&keys)).await?;
    Ok(values.into_iter().flatten().collect())
}

/// The clock's next count if this node holds the lease (taking it if free), else 0.
pub async fn clock_tick(redis: &Redis, node: &str, lease_ms: u64) -> Result<u64, RedisError> {
    let keys = if redis.sharded() {
        ["refract:{system}:leader", "refract:{system}:counter"]
    } else {
        [
            "refract:channels:system:leader",
            "refract:channels:system:counter",
        ]
    };
    redis
        .eval(CLOCK, &keys, &[node, &lease_ms.to_string()])
        .await
}

fn as_strs(keys: &[String]) -> Vec<&str> {
    keys.iter().map(String::as_str).collect()
}
