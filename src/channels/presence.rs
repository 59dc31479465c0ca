//! Presence across nodes, in the shape phoenix.js's `Presence` expects. The truth lives in
//! Redis ([`crate::redis::store`]); this module says what goes into it, turns it into
//! `presence_state` and `presence_diff`, and runs the node's presence worker: liveness, sweeps
//! of dead nodes' entries, re-writing this node's entries after Redis recovers, and the `admin`
//! topic's stats.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use crate::Gateway;
use crate::channels::endpoint::Channels;
use crate::ids::ConnectionId;
use crate::phoenix::{Topic, names};
use crate::redis::store::{self, Change, DiffTarget};
use crate::worker::Part;

/// A membership's presence reference: unique across nodes, sockets and rejoins.
pub fn phx_ref(gw: &Gateway, conn: &ConnectionId, join_ref: &str) -> String {
    format!("{}:{conn}:{join_ref}", gw.node)
}

/// The channel and message that carry `diff` to `topic`'s members, in this Redis mode.
fn diff_message(gw: &Gateway, topic: &str, diff: &str) -> (String, String) {
    let (channel, message) = names::to(topic, "presence_diff", diff.as_bytes(), gw.redis.sharded());
    (
        channel,
        String::from_utf8(message).expect("a str and a str"),
    )
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

/// Records a join in Redis. With `announce`, the join diff is published in the same script when
/// the entry is new. `None` if Redis did not take it, else whether the entry was new.
pub async fn join(
    gw: &Gateway,
    topic: &Topic,
    phx_ref: &str,
    key: &str,
    meta: &str,
    announce: bool,
) -> Option<bool> {
    let (channel, message) = diff_message(gw, topic.as_str(), &diff(key, meta, true));
    let change = Change {
        node: gw.node.as_str(),
        topic: topic.as_str(),
        phx_ref,
        entry: &entry(key, meta),
        diff_channel: &channel,
        diff: &message,
    };
    store::join(&gw.redis, &change, announce).await.ok()
}

/// Records a leave; the diff goes out only if the entry was still there.
pub async fn leave(gw: &Gateway, topic: &Topic, phx_ref: &str, key: &str, meta: &str) {
    let (channel, message) = diff_message(gw, topic.as_str(), &diff(key, meta, false));
    let change = Change {
        node: gw.node.as_str(),
        topic: topic.as_str(),
        phx_ref,
        entry: "",
        diff_channel: &channel,
        diff: &message,
    };
    if let Err(e) = store::leave(&gw.redis, &change).await {
        tracing::debug!(error = %e, topic = %topic, "presence leave not recorded");
    }
}

/// The whole membership of a topic across nodes, `{key: {"metas": [...]}}`, at most `max`
/// metas. `None` if Redis could not be read.
pub async fn state(gw: &Gateway, topic: &Topic, max: usize) -> Option<String> {
    let fields = store::entries(&gw.redis, topic.as_str()).await.ok()?;
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
    // The node's first time ready is its start, not a recovery: nothing was joined before it.
    let mut seen_recoveries = gw.publisher.recoveries().max(1);
    let mut admin_due = tokio::time::Instant::now();
    // Topics of this node's cluster index that had no local member at the last tick.
    let mut quiet = HashSet::new();
    // Before this node takes joins: alive (so no other node sweeps what it is about to write),
    // then clear what a previous process with the same id left.
    loop {
        if alive(&gw, &ch).await && sweep(&gw, true).await {
            gw.set_ready(Part::Presence, true);
            break;
        }
        tokio::select! {
            _ = gw.shutdown.cancelled() => return,
            _ = tokio::time::sleep(p.refresh_interval) => {}
        }
    }
    let admin = Topic::new("admin").expect("a valid topic");
    loop {
        tokio::select! {
            _ = gw.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !alive(&gw, &ch).await {
            continue;
        }
        let recoveries = gw.publisher.recoveries();
        if recoveries > seen_recoveries {
            seen_recoveries = recoveries;
            rewrite_local(&gw, &ch).await;
        }
        sweep(&gw, false).await;
        if gw.redis.sharded() {
            quiet = prune_index(&gw, &ch, quiet).await;
        }
        if ch.hub.has_topic(admin.as_str()) && tokio::time::Instant::now() >= admin_due {
            admin_due = tokio::time::Instant::now() + p.admin_interval;
            if let Some(stats) = cluster_stats(&gw).await {
                ch.hub.deliver(admin.as_str(), "stats", stats.as_bytes());
            }
        }
    }
}

/// Refreshes this node's liveness, with its stats; false if Redis did not take it.
async fn alive(gw: &Gateway, ch: &Channels) -> bool {
    let ttl_ms = ch.settings.presence.ttl.as_millis() as u64;
    let stats = gw.stats();
    let node = gw.node.as_str();
    store::set_alive(&gw.redis, node, &stats, ttl_ms)
        .await
        .is_ok()
}

/// Removes dead nodes' entries; with `own_past`, also every entry of this node id (at start-up,
/// before any join, those are a previous process's: it may have been killed and restarted
/// faster than its liveness expires). Returns false if Redis could not be read.
async fn sweep(gw: &Gateway, own_past: bool) -> bool {
    let own: &[&str] = if own_past { &[gw.node.as_str()] } else { &[] };
    if !gw.redis.sharded() {
        let Ok(topics) = store::topics(&gw.redis).await else {
            return false;
        };
        for topic in topics {
            sweep_topic(gw, &topic, own).await;
        }
        return true;
    }
    // A cluster: the dead are named by their ended leases; their indexes say where to look.
    let Ok(mut dead) = store::dead_nodes(&gw.redis).await else {
        return false;
    };
    dead.retain(|n| n != gw.node.as_str());
    let mut named: Vec<&str> = dead.iter().map(String::as_str).collect();
    named.extend_from_slice(own);
    let mut topics = BTreeSet::new();
    for node in &named {
        let Ok(found) = store::node_topics(&gw.redis, node).await else {
            return false;
        };
        topics.extend(found);
    }
    for topic in &topics {
        if !sweep_topic(gw, topic, &named).await {
            return false;
        }
    }
    for node in &dead {
        let _ = store::forget(&gw.redis, node).await;
    }
    if own_past {
        // This process's index starts empty: its previous life's entries are gone.
        for topic in &topics {
            let _ = store::unindex_topic(&gw.redis, gw.node.as_str(), topic).await;
        }
    }
    true
}

/// One topic's sweep: the `named` nodes' entries (and, on one server, those of nodes without
/// a liveness key) removed, their leaves published. False if Redis did not run it.
async fn sweep_topic(gw: &Gateway, topic: &str, named: &[&str]) -> bool {
    let (channel, prefix) = diff_message(gw, topic, "");
    let target = DiffTarget {
        channel: &channel,
        prefix: &prefix,
    };
    match store::sweep(&gw.redis, topic, &target, named).await {
        Ok(n) if n > 0 => {
            gw.metrics.channels.presence_swept.inc_by(n as u64);
            tracing::info!(topic = %topic, removed = n, "removed presence entries of dead nodes");
            true
        }
        Ok(_) => true,
        Err(_) => false,
    }
}

/// Cluster: takes out of this node's index the topics that have had no local member for a whole
/// tick (`quiet`, from the last one), so a long-lived node's index does not grow without bound.
/// A join racing the removal is put back: the hub is checked again after the SREM. Returns the
/// topics quiet now.
async fn prune_index(gw: &Gateway, ch: &Channels, quiet: HashSet<String>) -> HashSet<String> {
    let node = gw.node.as_str();
    let Ok(indexed) = store::node_topics(&gw.redis, node).await else {
        return quiet;
    };
    let mut now_quiet = HashSet::new();
    for topic in indexed {
        if ch.hub.has_topic(&topic) {
            continue;
        }
        if !quiet.contains(&topic) {
            now_quiet.insert(topic);
            continue;
        }
        if store::unindex_topic(&gw.redis, node, &topic).await.is_ok() && ch.hub.has_topic(&topic) {
            let _ = store::index_topic(&gw.redis, node, &topic).await;
        }
    }
    now_quiet
}

/// After Redis comes back (possibly empty), this node's memberships are written again; any that
/// were missing are announced as joins.
async fn rewrite_local(gw: &Gateway, ch: &Channels) {
    let (mut written, mut missing) = (0, 0);
    for (topic, members) in ch.hub.snapshot() {
        for m in members {
            let phx_ref = phx_ref(gw, &m.conn, &m.join_ref);
            written += 1;
            if join(gw, &topic, &phx_ref, &m.key, &m.meta, true).await == Some(true) {
                missing += 1;
            }
        }
    }
    if written > 0 {
        tracing::info!(
            written,
            missing,
            "presence entries re-written after Redis recovered"
        );
    }
}

/// Nodes, connection counts and topic membership, for the `admin` topic.
pub async fn cluster_stats(gw: &Gateway) -> Option<String> {
    let redis = &gw.redis;
    let nodes: Vec<serde_json::Value> = store::live_nodes(redis)
        .await
        .ok()?
        .iter()
        .filter_map(|s| serde_json::from_str(s).ok())
        .collect();
    let mut counts = serde_json::Map::new();
    for t in store::topics(redis).await.ok()? {
        let n = store::count(redis, &t).await.ok()?;
        counts.insert(t, n.into());
    }
    Some(serde_json::json!({"nodes": nodes, "topics": counts}).to_string())
}
