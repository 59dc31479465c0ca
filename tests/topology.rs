//! The topology harness proven against real processes: a 3-master Redis Cluster with sharded
//! pub/sub, and a master + replica under three sentinels failing over. A test binary of its own,
//! so these slower tests run apart from the rest.

mod common;

use std::time::{Duration, Instant};

use common::topology::*;

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
