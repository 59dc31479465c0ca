//! What the gateway keeps in Redis besides pub/sub, and the scripts that change it atomically:
//!
//! - `refract:presence:<topic>`: a hash, field = `phx_ref`, value = `{"key", "meta"}`;
//! - `refract:presence:topics`: the set of topics with entries;
//! - `refract:node:<node>`: each node's liveness key (its stats as the value), with a TTL the
//!   node keeps refreshing;
//! - `refract:channels:system:{leader,counter}`: the `system` clock's lease and count.
//!
//! A presence change and its diff go out in one script, so a diff is published exactly when
//! the hash changed; a sweep of a dead node's entries is one script per topic, so exactly one
//! surviving node publishes their leaves.

use crate::redis::client::{Redis, RedisError};

pub const TOPICS_KEY: &str = "refract:presence:topics";

pub fn hash_key(topic: &str) -> String {
    format!("refract:presence:{topic}")
}

pub fn node_key(node: &str) -> String {
    format!("refract:node:{node}")
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

/// The clock's lease: whoever holds it (or takes it when free) bumps the counter; others get 0.
const CLOCK: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) or redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return redis.call('INCR', KEYS[2])
end
return 0";

/// One membership's presence, and the diff to publish when it changes.
pub struct Change<'a> {
    pub topic: &'a str,
    pub phx_ref: &'a str,
    /// The entry (`{"key", "meta"}`) to store; unused for a leave.
    pub entry: &'a str,
    pub diff_channel: &'a str,
    pub diff: &'a str,
}

/// Stores an entry, publishing the diff when it is new and `announce` is set; true when new.
pub async fn join(redis: &Redis, c: &Change<'_>, announce: bool) -> Result<bool, RedisError> {
    let flag = if announce { "1" } else { "0" };
    let args = [c.phx_ref, c.entry, c.topic, c.diff_channel, c.diff, flag];
    let added: i64 = redis
        .eval(JOIN, &[&hash_key(c.topic), TOPICS_KEY], &args)
        .await?;
    Ok(added == 1)
}

/// Removes an entry, publishing the diff only if it was there.
pub async fn leave(redis: &Redis, c: &Change<'_>) -> Result<(), RedisError> {
    let args = [c.phx_ref, c.diff_channel, c.diff, c.topic];
    let _: i64 = redis
        .eval(LEAVE, &[&hash_key(c.topic), TOPICS_KEY], &args)
        .await?;
    Ok(())
}

/// Every entry of a topic, across nodes.
pub async fn entries(redis: &Redis, topic: &str) -> Result<Vec<(String, String)>, RedisError> {
    redis
        .query(redis::cmd("HGETALL").arg(hash_key(topic)))
        .await
}

/// Topics with entries.
pub async fn topics(redis: &Redis) -> Result<Vec<String>, RedisError> {
    redis.query(redis::cmd("SMEMBERS").arg(TOPICS_KEY)).await
}

/// Entries of a topic.
pub async fn count(redis: &Redis, topic: &str) -> Result<u64, RedisError> {
    redis.query(redis::cmd("HLEN").arg(hash_key(topic))).await
}

/// Removes the entries of dead nodes (and of `own_past`, if not empty) from one topic and
/// publishes their leaves on `diff_channel`; returns how many were removed.
pub async fn sweep(
    redis: &Redis,
    topic: &str,
    diff_channel: &str,
    own_past: &str,
) -> Result<i64, RedisError> {
    let keys = [&*hash_key(topic), TOPICS_KEY];
    redis
        .eval(SWEEP, &keys, &[diff_channel, topic, own_past])
        .await
}

/// Refreshes this node's liveness key, with its stats as the value.
pub async fn set_alive(
    redis: &Redis,
    node: &str,
    stats: &str,
    ttl_ms: u64,
) -> Result<(), RedisError> {
    let mut cmd = redis::cmd("SET");
    cmd.arg(node_key(node)).arg(stats).arg("PX").arg(ttl_ms);
    redis.query(&cmd).await
}

/// The stats of every live node.
pub async fn live_nodes(redis: &Redis) -> Result<Vec<String>, RedisError> {
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
    let keys = [
        "refract:channels:system:leader",
        "refract:channels:system:counter",
    ];
    redis
        .eval(CLOCK, &keys, &[node, &lease_ms.to_string()])
        .await
}
