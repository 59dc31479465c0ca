//! The topology harness proven against real processes: a 3-master Redis Cluster with sharded
//! pub/sub, and a master + replica under three sentinels failing over. A test binary of its own,
//! so these slower tests run apart from the rest.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::topology::*;
use futures_util::StreamExt;

/// `err` is `MOVED <slot> 127.0.0.1:<owner>`.
fn assert_moved(err: &redis::RedisError, slot: u16, owner: u16) {
    assert_eq!(err.code(), Some("MOVED"), "{err}");
    let addr = format!("127.0.0.1:{owner}");
    assert_eq!(err.redirect_node(), Some((addr.as_str(), slot)), "{err}");
}

/// The cluster routes a shard channel and a key to their owner, and refuses them elsewhere.
#[tokio::test]
async fn cluster_delivers_sharded_pubsub_on_the_owning_shard_and_moves_keys() {
    let t = Instant::now();
    let cluster = Cluster::start(3).await;
    eprintln!("cluster of 3 ready in {:?}", t.elapsed());
    assert_eq!(cluster.seeds().len(), 3);
    for seed in cluster.seeds() {
        assert!(seed.starts_with("redis://127.0.0.1:"), "{seed}");
    }

    // Sharded pub/sub: SSUBSCRIBE on the owner, SPUBLISH there, the message arrives.
    let channel = "refract:{n:topology}:reply";
    let owner = cluster.owner_of(channel).await;
    let mut sub = RawSubscriber::connect(owner);
    sub.ssubscribe(channel).await;
    let receivers: i64 = query(owner, redis::cmd("SPUBLISH").arg(channel).arg("hello"))
        .await
        .expect("SPUBLISH on the owner");
    assert_eq!(receivers, 1);
    assert_eq!(sub.next().await, ["smessage", channel, "hello"]);

    // Another node refuses the same channel with MOVED to the owner.
    let other = cluster.non_owner_of(channel).await;
    let mut c = conn(other).await;
    let err = redis::cmd("SPUBLISH")
        .arg(channel)
        .arg("elsewhere")
        .query_async::<i64>(&mut c)
        .await
        .expect_err("SPUBLISH on a non-owner");
    assert_moved(&err, cluster.slot_of(channel).await, owner);

    // Keys: written on the owner, MOVED (with the slot and the owner) everywhere else.
    let key = "refract:topology:key";
    let slot = cluster.slot_of(key).await;
    let key_owner = cluster.owner_of(key).await;
    let mut c = conn(key_owner).await;
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg("v")
        .query_async(&mut c)
        .await
        .unwrap();
    let mut refused = 0;
    for port in cluster.live_ports().into_iter().filter(|&p| p != key_owner) {
        let mut c = conn(port).await;
        let err = redis::cmd("GET")
            .arg(key)
            .query_async::<Option<String>>(&mut c)
            .await
            .expect_err("GET on a non-owner");
        assert_moved(&err, slot, key_owner);
        refused += 1;
    }
    assert_eq!(refused, 2);
    eprintln!("cluster test done in {:?}", t.elapsed());
}

/// `kill` really takes a node away: it stops answering, and with no replica to take over its
/// slots the others declare the cluster failed.
#[tokio::test]
async fn cluster_kill_takes_a_shard_down() {
    let t = Instant::now();
    let mut cluster = Cluster::start(3).await;
    let victim = cluster.owner_of("some-key").await;
    cluster.kill(victim);
    assert!(
        try_conn(victim).await.is_none(),
        "killed node still answers"
    );
    assert_eq!(cluster.seeds().len(), 2);
    for port in cluster.live_ports() {
        eventually_within(
            Duration::from_secs(15),
            "the survivors to mark the cluster failed",
            || async move {
                let info: String = query(port, redis::cmd("CLUSTER").arg("INFO")).await?;
                (info_field(&info, "cluster_state") == Some("fail")).then_some(())
            },
        )
        .await;
    }
    eprintln!("cluster kill test done in {:?}", t.elapsed());
}

/// The sentinels name the master; after a failover they name the former replica, which takes
/// writes and has the data, and the old master follows it as a read-only replica.
#[tokio::test]
async fn sentinel_failover_promotes_the_replica_and_demotes_the_master() {
    let t = Instant::now();
    let sentinels = Sentinels::start().await;
    eprintln!("sentinels ready in {:?}", t.elapsed());
    assert_eq!(sentinels.sentinel_urls().len(), 3);

    let old = sentinels.master_port().await;
    assert_eq!(
        old, sentinels.data_ports[0],
        "the first data node starts as master"
    );
    for &s in &sentinels.sentinel_ports {
        assert_eq!(Sentinels::master_named_by(s).await, Some(old));
    }
    let replica = sentinels.other(old);

    // Something written before the failover must survive it.
    let mut c = conn(old).await;
    let _: () = redis::cmd("SET")
        .arg("before")
        .arg("1")
        .query_async(&mut c)
        .await
        .unwrap();
    eventually_within(
        Duration::from_secs(10),
        "the replica to copy the key",
        || async {
            query::<Option<String>>(replica, redis::cmd("GET").arg("before"))
                .await
                .flatten()
        },
    )
    .await;

    let f = Instant::now();
    let new = sentinels.failover().await;
    eprintln!("failover in {:?}", f.elapsed());
    assert_eq!(new, replica);
    assert_eq!(sentinels.master_port().await, new);

    let mut c = conn(new).await;
    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("2")
        .query_async(&mut c)
        .await
        .expect("the new master takes writes");
    let before: Option<String> = redis::cmd("GET")
        .arg("before")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(before.as_deref(), Some("1"));

    // The old master is reconfigured as a replica of the new one, and refuses writes. Sentinel
    // takes its time here: it demotes a node that still says master only 8 s after adding it as
    // a replica, on its next INFO (every 10 s): 10-18 s after the switch, ~11 s measured.
    eventually_within(
        Duration::from_secs(25),
        "the old master to follow the new one",
        || async move {
            let info = info(old, "replication").await?;
            (info_field(&info, "role") == Some("slave")
                && info_field(&info, "master_port") == Some(new.to_string().as_str())
                && info_field(&info, "master_link_status") == Some("up"))
            .then_some(())
        },
    )
    .await;
    eprintln!("old master demoted {:?} after the failover", f.elapsed());
    let mut c = conn(old).await;
    let err = redis::cmd("SET")
        .arg("on-old")
        .arg("x")
        .query_async::<()>(&mut c)
        .await
        .expect_err("a replica refuses writes");
    assert_eq!(err.code(), Some("READONLY"), "{err}");
    eprintln!("sentinel test done in {:?}", t.elapsed());
}

const STREAM_ROUTE: &str = r#"
[routes."/stream".services.counter]
type = "redis"
request_channel = "input"
"#;
const LOST_REDIS: &str =
    "refract_events_lost_total{route=\"/stream\",reason=\"redis_unavailable\"}";
const LOST_UNHEARD: &str = "refract_events_lost_total{route=\"/stream\",reason=\"no_subscriber\"}";
const LOST_SHUTDOWN: &str = "refract_events_lost_total{route=\"/stream\",reason=\"shutdown\"}";

/// The numbers of the `message` events heard on `input` on `port`, kept in `heard`; reconnects
/// until the task is aborted (a subscriber on a replica hears the master's publishes too).
fn listen(port: u16, heard: Heard) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let subscribed = async {
                let client = redis::Client::open(url(port)).ok()?;
                let mut pubsub = client.get_async_pubsub().await.ok()?;
                pubsub.subscribe("input").await.ok()?;
                Some(pubsub)
            };
            if let Ok(Some(mut pubsub)) =
                tokio::time::timeout(Duration::from_secs(2), subscribed).await
            {
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    let event: serde_json::Value =
                        serde_json::from_slice(msg.get_payload_bytes()).unwrap();
                    if event["type"] == "message" {
                        let n = event["message"].as_str().unwrap().parse().unwrap();
                        heard.lock().unwrap().push((n, Instant::now()));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// The numbers one listener heard, each with when.
type Heard = Arc<Mutex<Vec<(u64, Instant)>>>;

fn numbers(heard: &Heard) -> HashSet<u64> {
    heard.lock().unwrap().iter().map(|(n, _)| *n).collect()
}

/// From now on, polls `gw`'s `/readyz` every 20 ms: when it first turned 503, and when it was
/// 200 again after that.
type Gap = Arc<Mutex<(Option<Duration>, Option<Duration>)>>;

fn watch_readiness(gw: &common::Gateway) -> (Gap, tokio::task::JoinHandle<()>) {
    let (addr, since) = (gw.addr, Instant::now());
    let gap: Gap = Default::default();
    let out = gap.clone();
    let task = tokio::spawn(async move {
        let request = "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        loop {
            let status = common::http_request(addr, request).await.0;
            let done = {
                let mut g = gap.lock().unwrap();
                match (status, g.0) {
                    (503, None) => g.0 = Some(since.elapsed()),
                    (200, Some(_)) => g.1 = Some(since.elapsed()),
                    _ => {}
                }
                g.1.is_some()
            };
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (out, task)
}

/// Polls `ROLE` on `port` until it answers as a replica; the instant it was first seen so.
fn watch_demotion(port: u16) -> (Arc<Mutex<Option<Instant>>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(None));
    let out = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let role: Option<Vec<redis::Value>> = query(port, &redis::cmd("ROLE")).await;
            let is_replica = matches!(role.as_deref().and_then(<[_]>::first),
                Some(redis::Value::BulkString(b)) if b.as_slice() == b"slave");
            if is_replica {
                *seen.lock().unwrap() = Some(Instant::now());
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (out, task)
}

/// Sends a numbered stream through a gateway in sentinel mode while `fault` happens to the
/// master; then every number is delivered or counted as lost, the node is ready again by
/// itself, it follows the new master, and a message after the fault is delivered.
async fn stream_through_a_failover(kill: bool) {
    const SENT: u64 = 150;
    let mut sentinels = Sentinels::start().await;
    let keys = sentinel_keys(&sentinels);
    let gw = common::Gateway::start_with_redis(&keys, STREAM_ROUTE, "").await;
    gw.wait_ready().await;
    let old = sentinels.master_port().await;
    let new = sentinels.other(old);
    let old_master = format!("refract_redis_master{{address=\"127.0.0.1:{old}\"}}");
    assert_eq!(gw.metric(&old_master).await, 1);

    let (on_old, on_new): (Heard, Heard) = Default::default();
    let listeners = [listen(old, on_old.clone()), listen(new, on_new.clone())];
    let (demoted, watcher) = watch_demotion(old);
    for port in [old, new] {
        eventually_within(
            Duration::from_secs(10),
            "the listeners to subscribe",
            || async move {
                let (_, n): (String, i64) =
                    query(port, redis::cmd("PUBSUB").arg("NUMSUB").arg("input")).await?;
                (n >= 1).then_some(())
            },
        )
        .await;
    }
    let mut client = gw.ws("/stream").await;
    let mut readiness = None;
    for n in 0..SENT {
        if n == SENT / 3 {
            readiness = Some(watch_readiness(&gw));
            if kill {
                sentinels.kill_master().await;
            } else {
                // The stream goes on while the sentinels switch.
                assert_eq!(sentinels.start_failover().await, new);
            }
        }
        client.send(&n.to_string()).await;
        // A stream over time, not a burst: the fault lands in the middle of it.
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    sentinels.wait_master(new).await;
    gw.wait_ready().await;
    // A switch can be quicker than the watcher's polls; a kill never is.
    let (gap, ready_watch) = readiness.unwrap();
    let gap = eventually_within(Duration::from_secs(10), "the readiness gap", || {
        let g = *gap.lock().unwrap();
        async move {
            match g {
                (Some(from), Some(to)) => Some(Some((from, to))),
                (None, _) if !kill => Some(None),
                _ => None,
            }
        }
    })
    .await;
    ready_watch.abort();
    let gap = match gap {
        Some((from, to)) => format!("503 from {from:?} to {to:?} after the fault"),
        None => "never seen 503".into(),
    };

    let (delivered, lost) = eventually_within(
        Duration::from_secs(20),
        "every number delivered or counted as lost",
        || async {
            let delivered = (&numbers(&on_old) | &numbers(&on_new)).len() as u64;
            let lost = gw.metric(LOST_REDIS).await
                + gw.metric(LOST_UNHEARD).await
                + gw.metric(LOST_SHUTDOWN).await;
            (delivered + lost == SENT).then_some((delivered, lost))
        },
    )
    .await;
    eprintln!(
        "{} failover: sent {SENT}, delivered {delivered}, counted lost {lost}; /readyz {gap}",
        if kill { "SIGKILL" } else { "SENTINEL" },
    );
    assert!(
        delivered > SENT / 3,
        "the stream went on after the failover"
    );
    assert_eq!(gw.metric("refract_redis_master_changes_total").await, 1);
    let new_master = format!("refract_redis_master{{address=\"127.0.0.1:{new}\"}}");
    assert_eq!(gw.metric(&new_master).await, 1);
    assert!(!gw.get("/metrics").await.1.contains(&old_master));

    // After the failover, the stream reaches the new master.
    client.send(&SENT.to_string()).await;
    eventually_within(
        Duration::from_secs(10),
        "a message after the failover",
        || async { numbers(&on_new).contains(&SENT).then_some(()) },
    )
    .await;
    if !kill {
        // No publish lands on the old master once it is a replica: everything heard there
        // since came by replication from the new master, so it was heard there too.
        let demoted = eventually_within(Duration::from_secs(20), "the old master demoted", || {
            let at = *demoted.lock().unwrap();
            async move { at }
        })
        .await;
        let on_new = numbers(&on_new);
        let stray: Vec<u64> = on_old
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, at)| *at > demoted && !on_new.contains(n))
            .map(|(n, _)| *n)
            .collect();
        assert!(
            stray.is_empty(),
            "published on the demoted master: {stray:?}"
        );
        let only_old = numbers(&on_old).difference(&on_new).count();
        eprintln!("heard only on the old master (before its demotion): {only_old}");
    }
    watcher.abort();
    for l in listeners {
        l.abort();
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_numbered_stream_survives_a_sentinel_failover() {
    stream_through_a_failover(false).await;
}

#[tokio::test]
async fn a_numbered_stream_survives_the_master_being_killed() {
    stream_through_a_failover(true).await;
}

/// `nodes = [...]` for a gateway in cluster mode.
fn cluster_keys(cluster: &Cluster) -> String {
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("\"{s}\"")).collect();
    format!("mode = \"cluster\"\nnodes = [{}]", seeds.join(", "))
}

/// Node ids whose response channels are owned by `n` different shards.
async fn ids_on_different_shards(cluster: &Cluster, n: usize) -> Vec<String> {
    let mut owners = HashSet::new();
    let mut ids = Vec::new();
    for i in 0.. {
        let id = format!("shard-{i}");
        if owners.insert(cluster.owner_of(&format!("refract.responses.{id}")).await) {
            ids.push(id);
        }
        if ids.len() == n {
            return ids;
        }
    }
    unreachable!()
}

/// The next `message` event on a sharded subscription.
async fn next_message_event(sub: &mut RawSubscriber) -> serde_json::Value {
    loop {
        let push = sub.next().await;
        if push[0] == "smessage" {
            let event: serde_json::Value = serde_json::from_str(&push[2]).unwrap();
            if event["type"] == "message" {
                return event;
            }
        }
    }
}

/// Prism through a 3-master cluster: two gateway nodes whose response channels live on different
/// shards each carry a round trip over sharded pub/sub, and a reply sent with plain PUBLISH does
/// not arrive (services must SPUBLISH).
#[tokio::test]
async fn prism_round_trips_through_the_cluster_from_nodes_on_different_shards() {
    let cluster = Cluster::start(3).await;
    let keys = cluster_keys(&cluster);
    let ids = ids_on_different_shards(&cluster, 2).await;
    let input_owner = cluster.owner_of("input").await;
    let mut service = RawSubscriber::connect(input_owner);
    service.ssubscribe("input").await;
    let mut nodes = Vec::new();
    for id in &ids {
        let gw = common::Gateway::start_node(id, &keys, STREAM_ROUTE, "").await;
        gw.wait_ready().await;
        let client = gw.ws("/stream").await;
        nodes.push((id, gw, client));
    }
    for (id, _, client) in &mut nodes {
        client.send(&format!("hello from {id}")).await;
        let event = next_message_event(&mut service).await;
        assert_eq!(event["message"], format!("hello from {id}"));
        let channel = event["responseChannel"].as_str().unwrap().to_string();
        assert_eq!(channel, format!("refract.responses.{id}"));
        let owner = cluster.owner_of(&channel).await;
        let conn_id = event["id"].as_str().unwrap();
        let unsharded = common::reply(conn_id, "counter", "published");
        let heard: i64 = query(owner, redis::cmd("PUBLISH").arg(&channel).arg(unsharded))
            .await
            .unwrap();
        assert_eq!(
            heard, 0,
            "a plain PUBLISH does not reach a sharded subscriber"
        );
        let answer = common::reply(conn_id, "counter", &format!("hi {id}"));
        let heard: i64 = query(owner, redis::cmd("SPUBLISH").arg(&channel).arg(answer))
            .await
            .unwrap();
        assert_eq!(heard, 1);
        assert_eq!(client.recv_text().await, format!("hi {id}"));
    }
    for (_, gw, _) in nodes {
        gw.stop().await;
    }
}

/// In cluster mode, a response-channel subscription killed on its shard (`CLIENT KILL` of the
/// pub/sub connection only) is noticed: the node subscribes again from a fresh connection, is
/// ready again by itself, and replies reach the client.
#[tokio::test]
async fn a_killed_sharded_subscription_is_noticed_and_made_again() {
    let cluster = Cluster::start(3).await;
    let gw = common::Gateway::start_with_redis(&cluster_keys(&cluster), STREAM_ROUTE, "").await;
    gw.wait_ready().await;
    let owner = cluster.owner_of(&gw.response_channel()).await;
    kill_subscriptions_and_await_their_return(&gw, owner).await;

    sharded_round_trip(&cluster, &gw, owner, "still here").await;
    gw.stop().await;
}

/// A slot migration of the node's response channel by `redis-cli --cluster reshard`: the cluster
/// unsubscribes it, the node counts a `slot_moved` resubscription, is ready again through the new
/// owner, and replies published there reach the client.
#[tokio::test]
async fn a_response_channel_resharded_away_is_followed_to_the_new_owner() {
    let cluster = Cluster::start(3).await;
    // reshard takes a master's lowest slots first: a node id whose channel is in one of those.
    let mut firsts = HashSet::new();
    for port in cluster.live_ports() {
        firsts.insert(cluster.first_slot_of(port).await);
    }
    let id = (0..)
        .map(|i| format!("reshard-{i}"))
        .find(|id| firsts.contains(&key_slot(&format!("refract.responses.{id}"))))
        .unwrap();
    let gw = common::Gateway::start_node(&id, &cluster_keys(&cluster), STREAM_ROUTE, "").await;
    gw.wait_ready().await;
    let channel = gw.response_channel();
    assert_eq!(cluster.slot_of(&channel).await, key_slot(&channel));
    let before = cluster.owner_of(&channel).await;
    let after = cluster.non_owner_of(&channel).await;
    cluster.reshard(before, after, 1).await;
    assert_eq!(cluster.owner_of(&channel).await, after);
    let moved = "refract_redis_resubscriptions_total{reason=\"slot_moved\"}";
    eventually_within(
        Duration::from_secs(15),
        "the node to follow the slot",
        || async { (gw.metric(moved).await >= 1).then_some(()) },
    )
    .await;
    gw.wait_ready().await;
    sharded_round_trip(&cluster, &gw, after, "moved with it").await;
    gw.stop().await;
}

/// A cluster master SIGKILLed: its replica is promoted, the node's subscription follows the
/// slot to it, `/readyz` is 503 in the gap and 200 again by itself, and replies published on the
/// promoted replica reach the client.
#[tokio::test]
async fn a_killed_cluster_master_is_replaced_by_its_replica_and_followed() {
    let mut cluster = Cluster::start_with_replicas(3, 1).await;
    let gw = common::Gateway::start_with_redis(&cluster_keys(&cluster), STREAM_ROUTE, "").await;
    gw.wait_ready().await;
    let channel = gw.response_channel();
    let master = cluster.owner_of(&channel).await;
    let replica = cluster.replica_of(master).await;
    let (gap, watcher) = watch_readiness(&gw);
    cluster.kill(master);
    cluster.wait_owner(replica).await;
    // /readyz shows the gap, and ends it by itself.
    let gap = eventually_within(Duration::from_secs(20), "the readiness gap", || {
        let g = *gap.lock().unwrap();
        async move { Some((g.0?, g.1?)) }
    })
    .await;
    watcher.abort();
    eprintln!(
        "cluster master SIGKILL: /readyz 503 from {:?} to {:?} after the kill ({:?} not ready)",
        gap.0,
        gap.1,
        gap.1 - gap.0
    );
    assert_eq!(cluster.owner_of(&channel).await, replica);
    sharded_round_trip(&cluster, &gw, replica, "after the failover").await;
    gw.stop().await;
}

/// A message from a new client on `gw`'s `/stream`, heard by a service over SSUBSCRIBE, answered
/// with SPUBLISH on `owner` (which must hold the node's subscription), and the answer received.
async fn sharded_round_trip(cluster: &Cluster, gw: &common::Gateway, owner: u16, text: &str) {
    let mut service = RawSubscriber::connect(cluster.owner_of("input").await);
    service.ssubscribe("input").await;
    let mut client = gw.ws("/stream").await;
    client.send(&format!("before {text}")).await;
    let event = next_message_event(&mut service).await;
    let answer = common::reply(event["id"].as_str().unwrap(), "counter", text);
    let channel = gw.response_channel();
    let heard: i64 = query(owner, redis::cmd("SPUBLISH").arg(&channel).arg(answer))
        .await
        .unwrap();
    assert_eq!(heard, 1, "the node's subscription is on {owner}");
    assert_eq!(client.recv_text().await, text);
}

const CHANNELS_SECRET: &str = "topology-channels-secret-0123456789";

/// Channels through the cluster (presence off here; the presence test is below): members of one
/// topic on two nodes on different shards each get what a service SPUBLISHes to `to:{<topic>}`,
/// and a client push arrives on `from:{<topic>}:<event>`.
#[tokio::test]
async fn channels_deliver_through_the_cluster_to_members_on_two_nodes() {
    let cluster = Cluster::start(3).await;
    let keys = cluster_keys(&cluster);
    let channels = format!(
        "[channels]\njwt_secret = \"{CHANNELS_SECRET}\"\n[channels.presence]\nenabled = false\n"
    );
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"id": "ann", "channel": "room:lobby",
                            "exp": refract::auth::now_secs() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(CHANNELS_SECRET.as_bytes()),
    )
    .unwrap();
    let mut members = Vec::new();
    for id in ids_on_different_shards(&cluster, 2).await {
        let gw = common::Gateway::start_node(&id, &keys, &channels, "").await;
        gw.wait_ready().await;
        let mut socket = common::phx::Phx::connect(&gw, "").await;
        let join_ref = socket.join_ok("room:lobby", &token).await;
        members.push((gw, socket, join_ref));
    }
    let topic_owner = cluster.owner_of("to:{room:lobby}").await;
    // Both nodes' bridges subscribe after the join's reply; wait until both are there.
    eventually_within(
        Duration::from_secs(10),
        "both bridges to subscribe",
        || async {
            let (_, n): (String, i64) = query(
                topic_owner,
                redis::cmd("PUBSUB")
                    .arg("SHARDNUMSUB")
                    .arg("to:{room:lobby}"),
            )
            .await?;
            (n == 2).then_some(())
        },
    )
    .await;
    let heard: i64 = query(
        topic_owner,
        redis::cmd("SPUBLISH")
            .arg("to:{room:lobby}")
            .arg(r#"new_msg:{"body":"hello"}"#),
    )
    .await
    .unwrap();
    assert_eq!(heard, 2);
    for (_, socket, join_ref) in &mut members {
        let frame = socket.recv_event("new_msg").await;
        let expected =
            serde_json::json!([join_ref, null, "room:lobby", "new_msg", {"body": "hello"}]);
        assert_eq!(frame, expected);
    }

    let push_channel = "from:{room:lobby}:shout";
    let mut service = RawSubscriber::connect(cluster.owner_of(push_channel).await);
    service.ssubscribe(push_channel).await;
    let (_, socket, join_ref) = &mut members[0];
    let jr = join_ref.clone();
    socket
        .send(
            Some(&jr),
            "room:lobby",
            "shout",
            serde_json::json!({"n": 1}),
        )
        .await;
    let push = service.next().await;
    assert_eq!(push[0], "smessage");
    assert_eq!(push[1], push_channel);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&push[2]).unwrap()["n"],
        1
    );
    for (gw, _, _) in members {
        gw.stop().await;
    }
}

fn channels_token(claims: serde_json::Value) -> String {
    let mut c = claims.as_object().unwrap().clone();
    c.insert("exp".into(), (refract::auth::now_secs() + 600).into());
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &c,
        &jsonwebtoken::EncodingKey::from_secret(CHANNELS_SECRET.as_bytes()),
    )
    .unwrap()
}

/// Waits for the next presence_diff that mentions `key` in `side` ("joins"/"leaves").
async fn presence_diff_for(s: &mut common::phx::Phx, side: &str, key: &str) -> serde_json::Value {
    loop {
        let f = s.recv_event("presence_diff").await;
        if f[4][side].get(key).is_some() {
            return f[4].clone();
        }
    }
}

/// Presence through the cluster, with members on three gateway processes (two of them with
/// response channels on different shards): state and diffs across nodes, a SIGKILLed node's
/// member leaving exactly once, the dead node forgotten, the admin topic's stats and the system
/// clock, and a node's index of topics pruned after its last member leaves.
#[tokio::test]
async fn presence_the_admin_topic_and_the_clock_work_through_the_cluster() {
    let cluster = Cluster::start(3).await;
    let keys = cluster_keys(&cluster);
    let channels = format!(
        "[channels]\njwt_secret = \"{CHANNELS_SECRET}\"\n\
         [channels.presence]\nttl = \"1s\"\nrefresh_interval = \"250ms\"\nadmin_interval = \"250ms\"\n\
         [channels.system]\ndatetime_interval = \"200ms\"\n"
    );
    let ids = ids_on_different_shards(&cluster, 2).await;
    let start = |id: String| {
        let (keys, channels) = (keys.clone(), channels.clone());
        async move { common::Node::start_with_redis(&keys, Some(&id), "", &channels).await }
    };
    let (a, b) = (start(ids[0].clone()).await, start(ids[1].clone()).await);
    let mut c = start("doomed".into()).await;
    let topic = "room:lobby";
    let member = |who: &str| channels_token(serde_json::json!({"id": who, "channel": "room:*"}));

    let mut alice = common::phx::Phx::connect(&a, "").await;
    alice.join_ok(topic, &member("alice")).await;
    let mut bob = common::phx::Phx::connect(&b, "").await;
    let (bob_ref, reply) = bob
        .join(topic, serde_json::json!({"token": member("bob")}))
        .await;
    assert_eq!(reply[4]["status"], "ok", "{reply}");
    let state = bob.recv_event("presence_state").await;
    assert_eq!(
        state[4]["alice"]["metas"][0]["node"],
        ids[0].as_str(),
        "{state}"
    );
    assert_eq!(
        state[4]["bob"]["metas"][0]["node"],
        ids[1].as_str(),
        "{state}"
    );
    presence_diff_for(&mut alice, "joins", "bob").await;
    let mut carol = common::phx::Phx::connect(&c, "").await;
    carol.join_ok(topic, &member("carol")).await;
    presence_diff_for(&mut alice, "joins", "carol").await;
    presence_diff_for(&mut bob, "joins", "carol").await;
    // The topic's entries are one hash, in the slot of the topic's channel.
    let hash = format!("refract:presence:{{{topic}}}");
    let owner = cluster.owner_of(&format!("to:{{{topic}}}")).await;
    assert_eq!(cluster.owner_of(&hash).await, owner);
    let entries: Option<i64> = query(owner, redis::cmd("HLEN").arg(&hash)).await;
    assert_eq!(entries, Some(3));

    c.child.kill().unwrap();
    c.child.wait().unwrap();
    let leave = presence_diff_for(&mut alice, "leaves", "carol").await;
    assert_eq!(
        leave["leaves"]["carol"]["metas"].as_array().unwrap().len(),
        1
    );
    presence_diff_for(&mut bob, "leaves", "carol").await;
    let nodes_owner = cluster.owner_of("refract:{nodes}:alive").await;
    eventually_within(
        Duration::from_secs(10),
        "the dead node forgotten",
        || async {
            let score: Option<Option<f64>> = query(
                nodes_owner,
                redis::cmd("ZSCORE")
                    .arg("refract:{nodes}:alive")
                    .arg("doomed"),
            )
            .await;
            (score?.is_none()).then_some(())
        },
    )
    .await;
    let swept = a.metric("refract_channels_presence_swept_total").await
        + b.metric("refract_channels_presence_swept_total").await;
    assert_eq!(swept, 1, "exactly one node removed carol's entry");
    let entries: Option<i64> = query(owner, redis::cmd("HLEN").arg(&hash)).await;
    assert_eq!(entries, Some(2));

    // The admin topic: both live nodes, and the topic's members.
    let mut admin = common::phx::Phx::connect(&a, "").await;
    let ops = channels_token(serde_json::json!({"id": "ops", "channel": "admin", "admin": true}));
    admin.join_ok("admin", &ops).await;
    let mut stats = serde_json::Value::Null;
    for _ in 0..40 {
        stats = admin.recv_event("stats").await[4].clone();
        if stats["nodes"].as_array().unwrap().len() == 2 && stats["topics"][topic] == 2 {
            break;
        }
    }
    assert_eq!(stats["nodes"].as_array().unwrap().len(), 2, "{stats}");
    assert_eq!(stats["topics"][topic], 2, "{stats}");

    // One clock for the whole system: successive counts, whichever node holds the lease.
    let mut clock = common::phx::Phx::connect(&b, "").await;
    let system = channels_token(serde_json::json!({"id": "t", "channel": "system"}));
    clock.join_ok("system", &system).await;
    let first = clock.recv_event("datetime").await[4]["counter"]
        .as_u64()
        .unwrap();
    let second = clock.recv_event("datetime").await[4]["counter"]
        .as_u64()
        .unwrap();
    assert!(second > first, "{first} then {second}");

    // Bob leaves: his entry goes, and his node's index lets go of the topic after a tick.
    bob.send(Some(&bob_ref), topic, "phx_leave", serde_json::json!({}))
        .await;
    presence_diff_for(&mut alice, "leaves", "bob").await;
    let index = format!("refract:{{nodes}}:topics:{}", ids[1]);
    eventually_within(
        Duration::from_secs(10),
        "bob's node to unindex the topic",
        || async {
            let member: Option<bool> =
                query(nodes_owner, redis::cmd("SISMEMBER").arg(&index).arg(topic)).await;
            (!member?).then_some(())
        },
    )
    .await;
}

/// In sentinel mode, the node's subscription killed on the master (`CLIENT KILL` of pub/sub
/// connections only) is noticed and made again; the node is ready again by itself.
#[tokio::test]
async fn a_killed_subscription_on_the_sentinel_master_is_noticed() {
    let sentinels = Sentinels::start().await;
    let keys = sentinel_keys(&sentinels);
    let gw = common::Gateway::start_with_redis(&keys, STREAM_ROUTE, "").await;
    gw.wait_ready().await;
    kill_subscriptions_and_await_their_return(&gw, sentinels.master_port().await).await;
    assert_eq!(gw.metric("refract_redis_master_changes_total").await, 0);
    gw.stop().await;
}

/// `mode = "sentinel"` and its keys for a gateway watching `sentinels`.
fn sentinel_keys(sentinels: &Sentinels) -> String {
    let list: Vec<String> = sentinels
        .sentinel_urls()
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect();
    format!(
        "mode = \"sentinel\"\nsentinels = [{}]\nmaster_name = \"{SENTINEL_MASTER}\"",
        list.join(", ")
    )
}

/// Kills the pub/sub connections on `port` (the node's subscription among them) and waits for
/// the node to subscribe again and be ready by itself.
async fn kill_subscriptions_and_await_their_return(gw: &common::Gateway, port: u16) {
    let connects = "refract_redis_subscriber_connects_total";
    assert_eq!(gw.metric(connects).await, 1);
    let kill = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .clone();
    let killed: i64 = query(port, &kill).await.unwrap();
    assert!(killed >= 1, "the node's subscription was on {port}");
    eventually_within(
        Duration::from_secs(15),
        "the node to subscribe again",
        || async { (gw.metric(connects).await >= 2).then_some(()) },
    )
    .await;
    gw.wait_ready().await;
}
