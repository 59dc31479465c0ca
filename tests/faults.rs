//! Faults, each made real: Redis stopped and restarted, subscriptions killed, stuck clients,
//! limits, signals to real gateway processes, several nodes on one Redis, and a chaos run whose
//! every message is either delivered or counted.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

const LOST_REDIS: &str =
    "refract_events_lost_total{route=\"/quotes\",reason=\"redis_unavailable\"}";
const LOST_UNHEARD: &str = "refract_events_lost_total{route=\"/quotes\",reason=\"no_subscriber\"}";

#[tokio::test]
async fn a_redis_outage_keeps_clients_counts_losses_and_recovers() {
    let mut redis = Redis::start().await;
    let gw = Gateway::start(&redis, QUOTES).await;
    let mut input = redis.subscribe("input").await;
    let (mut client, id) = connect_and_identify(&gw, "/quotes", &mut input).await;

    redis.stop();
    eventually("readyz to turn 503", || async {
        (gw.get("/readyz").await.0 == 503).then_some(())
    })
    .await;
    for i in 0..5 {
        client.send(&format!("during-{i}")).await;
    }
    eventually("5 events counted as lost", || async {
        (gw.metric(LOST_REDIS).await == 5).then_some(())
    })
    .await;
    // New clients are turned away while the node cannot reach services.
    assert_eq!(
        refused_status(format!("ws://{}/quotes", gw.addr)).await,
        503
    );
    assert_eq!(
        gw.metric("refract_connections{route=\"/quotes\"}").await,
        1,
        "the client stays"
    );

    redis.restart().await;
    gw.wait_ready().await;
    assert!(gw.metric("refract_redis_subscriber_connects_total").await >= 2);
    let mut input = redis.subscribe("input").await;
    client.send("after").await;
    assert_eq!(input.next_for(&id).await["message"], "after");
    redis
        .publish(
            &gw.response_channel(),
            reply(&id, "quoteservice", "welcome back"),
        )
        .await;
    assert_eq!(client.recv_text().await, "welcome back");
    let (mut fresh, fresh_id) = connect_and_identify(&gw, "/quotes", &mut input).await;
    redis
        .publish(
            &gw.response_channel(),
            reply(&fresh_id, "quoteservice", "hi"),
        )
        .await;
    assert_eq!(fresh.recv_text().await, "hi");
    gw.stop().await;
}

#[tokio::test]
async fn a_killed_subscription_is_noticed_and_resubscribed() {
    let redis = Redis::start().await;
    let gw = Gateway::start(&redis, QUOTES).await;
    let mut input = redis.subscribe("input").await;
    let (mut client, id) = connect_and_identify(&gw, "/quotes", &mut input).await;
    assert_eq!(
        gw.metric("refract_redis_subscriber_connects_total").await,
        1
    );

    let mut c = redis.conn().await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(killed >= 1);
    eventually("the node to resubscribe", || async {
        (gw.metric("refract_redis_subscriber_connects_total").await >= 2).then_some(())
    })
    .await;
    gw.wait_ready().await;
    redis
        .publish(
            &gw.response_channel(),
            reply(&id, "quoteservice", "still here"),
        )
        .await;
    assert_eq!(client.recv_text().await, "still here");
    gw.stop().await;
}

#[tokio::test]
async fn a_subscription_that_delivers_nothing_is_caught_by_the_canary() {
    let redis = Redis::start().await;
    let proxy = FreezingProxy::start(redis.port).await;
    let gw = Gateway::start_unready(&proxy.url(), QUOTES, "").await;
    gw.wait_ready().await;
    let mut input = redis.subscribe("input").await;
    let (mut client, id) = connect_and_identify(&gw, "/quotes", &mut input).await;

    // The node's connections stay open, but Redis's words no longer reach it.
    proxy.freeze_current();
    eventually("the canary to fail and the node to resubscribe", || async {
        let failures = gw.metric("refract_canary_failures_total").await;
        let connects = gw.metric("refract_redis_subscriber_connects_total").await;
        (failures >= 1 && connects >= 2).then_some(())
    })
    .await;
    gw.wait_ready().await;
    redis
        .publish(
            &gw.response_channel(),
            reply(&id, "quoteservice", "through the new one"),
        )
        .await;
    assert_eq!(client.recv_text().await, "through the new one");
    gw.stop().await;
}

/// Connects to a node's /quotes and learns the client's id from its connect event.
async fn node_client(node: &Node, input: &mut Subscriber) -> (Client, String) {
    let (client, connected) = node.connect_identified("/quotes", input).await;
    (client, connected["id"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn a_stuck_client_is_closed_without_growing_memory_or_delaying_others() {
    let redis = Redis::start().await;
    let node = Node::start(
        &redis.url(),
        Some("stuck"),
        "outbound_queue_bytes = 262144\n",
        QUOTES,
    )
    .await;
    let mut input = redis.subscribe("input").await;
    let rc = "refract.responses.stuck";

    // Never read from this one.
    let (stuck, stuck_id) = node_client(&node, &mut input).await;
    let mut active = Vec::new();
    for _ in 0..99 {
        active.push(node_client(&node, &mut input).await);
    }
    let rss_before = node.rss_kib();

    // 40 MiB for the stuck client, interleaved with 20 small replies for each active one.
    let big = "x".repeat(64 * 1024);
    let mut conn = redis.conn().await;
    for round in 0..20 {
        let mut pipe = redis::pipe();
        for _ in 0..32 {
            pipe.publish(rc, reply(&stuck_id, "quoteservice", &big))
                .ignore();
        }
        for (_, id) in &active {
            pipe.publish(rc, reply(id, "quoteservice", &format!("r{round}")))
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await.unwrap();
    }
    for (client, _) in &mut active {
        for round in 0..20 {
            assert_eq!(client.recv_text().await, format!("r{round}"));
        }
    }
    assert_eq!(input.next_for(&stuck_id).await["type"], "disconnect");
    assert_eq!(
        node.metric("refract_connections_closed_total{route=\"/quotes\",reason=\"slow_client\"}")
            .await,
        1
    );
    assert!(
        node.metric("refract_replies_dropped_total{reason=\"slow_client\"}")
            .await
            >= 1
    );
    let growth = node.rss_kib().saturating_sub(rss_before);
    assert!(
        growth < 16 * 1024,
        "RSS grew {growth} KiB while 40 MiB went to a stuck client"
    );
    drop(stuck);
}

/// A client that stops reading, with queue limits too large to notice: once the kernel's
/// buffers are full a write waits, and after `write_timeout` the client is closed as stuck, its
/// service hears the disconnect, and another client goes on being answered.
#[tokio::test]
async fn a_write_that_waits_past_write_timeout_closes_the_client() {
    let redis = Redis::start().await;
    let server = "write_timeout = \"300ms\"\noutbound_queue = 100000\n\
                  outbound_queue_bytes = 1073741824\n";
    let node = Node::start(&redis.url(), Some("wt"), server, QUOTES).await;
    let mut input = redis.subscribe("input").await;
    let rc = "refract.responses.wt";
    let (stuck, stuck_id) = node_client(&node, &mut input).await;
    let (mut other, other_id) = node_client(&node, &mut input).await;
    let closed = "refract_connections_closed_total{route=\"/quotes\",reason=\"write_timeout\"}";

    // 2 MiB a round until the stuck client is closed (the kernel holds some MiB first).
    let big = "x".repeat(64 * 1024);
    let mut conn = redis.conn().await;
    let mut rounds = 0;
    while node.metric(closed).await == 0 {
        rounds += 1;
        assert!(
            rounds <= 200,
            "400 MiB sent and the stuck client is still open"
        );
        let mut pipe = redis::pipe();
        for _ in 0..32 {
            pipe.publish(rc, reply(&stuck_id, "quoteservice", &big))
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await.unwrap();
    }
    loop {
        let v = input.next_json().await;
        if v["type"] == "disconnect" && v["id"] == stuck_id.as_str() {
            break;
        }
    }
    redis
        .publish(rc, reply(&other_id, "quoteservice", "still here"))
        .await;
    assert_eq!(other.recv_text().await, "still here");
    drop(stuck);
}

#[tokio::test]
async fn frames_over_the_limits_close_with_the_right_codes() {
    let redis = Redis::start().await;
    let routes = format!(
        "{QUOTES}\n[routes.\"/small\"]\nmax_connections = 1\nmax_message_size = 1024\n\
         [routes.\"/small\".services.s]\ntype = \"redis\"\nrequest_channel = \"small.in\"\n"
    );
    let gw = Gateway::start(&redis, &routes).await;
    let mut small_in = redis.subscribe("small.in").await;
    let mut input = redis.subscribe("input").await;

    // Per-route connection limit: 503 before the upgrade.
    let (mut small, small_id) = connect_and_identify(&gw, "/small", &mut small_in).await;
    assert_eq!(refused_status(format!("ws://{}/small", gw.addr)).await, 503);
    // Other routes are not affected by it.
    let (_q, _) = connect_and_identify(&gw, "/quotes", &mut input).await;

    // Too large for the route: 1009, and services hear the disconnect.
    small.send(&"y".repeat(2000)).await;
    assert_eq!(small.recv_close().await.0, 1009);
    assert_eq!(small_in.next_for(&small_id).await["type"], "disconnect");

    // Text that is not UTF-8: 1007.
    let (mut bad, bad_id) = connect_and_identify(&gw, "/quotes", &mut input).await;
    let frame = Frame::message(vec![0xff, 0xfe, 0xfd], OpCode::Data(Data::Text), true);
    bad.ws.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(bad.recv_close().await.0, 1007);
    assert_eq!(input.next_for(&bad_id).await["type"], "disconnect");
    gw.stop().await;
}

#[tokio::test]
async fn rate_limits_close_with_1008_or_drop_and_count() {
    let redis = Redis::start().await;
    let routes = "
        [routes.\"/strict\"]
        rate_limit = { per_second = 0.5, burst = 3 }
        [routes.\"/strict\".services.s]
        type = \"redis\"
        request_channel = \"strict.in\"
        [routes.\"/lenient\"]
        rate_limit = { per_second = 0.5, burst = 3, action = \"drop\" }
        [routes.\"/lenient\".services.s]
        type = \"redis\"
        request_channel = \"lenient.in\"
    ";
    let gw = Gateway::start(&redis, routes).await;

    let mut strict_in = redis.subscribe("strict.in").await;
    let (mut strict, id) = connect_and_identify(&gw, "/strict", &mut strict_in).await;
    for i in 0..10 {
        strict.send(&format!("s{i}")).await;
    }
    assert_eq!(strict.recv_close().await, (1008, "rate limit".to_string()));
    for i in 0..3 {
        assert_eq!(strict_in.next_for(&id).await["message"], format!("s{i}"));
    }
    assert_eq!(strict_in.next_for(&id).await["type"], "disconnect");

    let mut lenient_in = redis.subscribe("lenient.in").await;
    let (mut lenient, id) = connect_and_identify(&gw, "/lenient", &mut lenient_in).await;
    for i in 0..10 {
        lenient.send(&format!("l{i}")).await;
    }
    eventually("7 messages dropped", || async {
        (gw.metric("refract_events_lost_total{route=\"/lenient\",reason=\"rate_limited\"}")
            .await
            == 7)
            .then_some(())
    })
    .await;
    for i in 0..3 {
        assert_eq!(lenient_in.next_for(&id).await["message"], format!("l{i}"));
    }
    // Still connected.
    redis
        .publish(&gw.response_channel(), reply(&id, "s", "still open"))
        .await;
    assert_eq!(lenient.recv_text().await, "still open");
    // Messages over the limit have their own counter, by what was done with them.
    let limited = |route: &str, action: &str| {
        format!("refract_messages_rate_limited_total{{route=\"{route}\",action=\"{action}\"}}")
    };
    assert_eq!(gw.metric(&limited("/lenient", "drop")).await, 7);
    assert_eq!(gw.metric(&limited("/lenient", "close")).await, 0);
    assert_eq!(gw.metric(&limited("/strict", "close")).await, 1);
    gw.stop().await;
}

#[tokio::test]
async fn a_silent_peer_is_closed_after_the_idle_timeout_and_a_live_one_is_kept() {
    let redis = Redis::start().await;
    let gw = Gateway::start_unready(
        &redis.url(),
        QUOTES,
        "ping_interval = \"100ms\"\nidle_timeout = \"400ms\"\n",
    )
    .await;
    gw.wait_ready().await;
    let mut input = redis.subscribe("input").await;

    // A peer that never reads never answers pings: as good as gone.
    let (silent, silent_id) = connect_and_identify(&gw, "/quotes", &mut input).await;
    // A live peer keeps reading (and so answers pings) but never sends anything itself.
    let (live, live_id) = connect_and_identify(&gw, "/quotes", &mut input).await;
    let got = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let sink = got.clone();
    let reader = tokio::spawn(async move {
        let mut live = live;
        while let Some(Ok(m)) = live.ws.next().await {
            if let Message::Text(t) = m {
                sink.lock().await.push(t.to_string());
            }
        }
    });

    assert_eq!(input.next_for(&silent_id).await["type"], "disconnect");
    assert_eq!(
        gw.metric("refract_connections_closed_total{route=\"/quotes\",reason=\"idle_timeout\"}")
            .await,
        1
    );
    // Well past several idle timeouts, the live peer is still there.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    redis
        .publish(
            &gw.response_channel(),
            reply(&live_id, "quoteservice", "alive"),
        )
        .await;
    eventually("the live peer to get a reply", || async {
        got.lock()
            .await
            .contains(&"alive".to_string())
            .then_some(())
    })
    .await;
    reader.abort();
    drop(silent);
    gw.stop().await;
}

#[tokio::test]
async fn sigterm_drains_every_client_and_a_second_signal_exits_at_once() {
    let redis = Redis::start().await;
    let node = Node::start(&redis.url(), Some("drain"), "", QUOTES).await;
    let mut input = redis.subscribe("input").await;
    let mut clients = Vec::new();
    for _ in 0..30 {
        clients.push(node_client(&node, &mut input).await);
    }
    node.signal("TERM");
    let mut ids: HashSet<String> = clients.iter().map(|(_, id)| id.clone()).collect();
    for (client, _) in &mut clients {
        assert_eq!(
            client.recv_close().await,
            (1001, "server shutting down".to_string())
        );
    }
    while !ids.is_empty() {
        let v = input.next_json().await;
        if v["type"] == "disconnect" {
            ids.remove(v["id"].as_str().unwrap());
        }
    }
    assert_eq!(node.wait_exit().await, Some(0));

    // A shutdown stuck behind a hanging HTTP service (grace 60 s) ends at the second signal.
    let hanging =
        common::http_server::HttpServer::start(|_| common::http_server::Answer::Hang).await;
    let routes = format!(
        "[routes.\"/slow\".services.stuck]\ntype = \"http\"\nurl = \"{}\"\ntimeout = \"60s\"\n",
        hanging.url("/")
    );
    let node = Node::start(
        &redis.url(),
        Some("stuck-drain"),
        "shutdown_grace = \"60s\"\n",
        &routes,
    )
    .await;
    let mut c = node.ws("/slow").await;
    c.send("into the void").await;
    node.signal("TERM");
    assert_eq!(c.recv_close().await.0, 1001);
    node.signal("TERM");
    assert_eq!(node.wait_exit().await, Some(130));
}

#[tokio::test]
async fn two_nodes_on_one_redis_are_one_system() {
    let redis = Redis::start().await;
    let a = Node::start(&redis.url(), None, "", QUOTES).await;
    let b = Node::start(&redis.url(), None, "", QUOTES).await;

    // One echo service answers whichever node each client is on.
    let url = redis.url();
    let mut seen = redis.subscribe("input").await;
    let (subscribed, echo_ready) = tokio::sync::oneshot::channel();
    let echo = tokio::spawn(async move {
        let client = redis::Client::open(url).unwrap();
        let mut publish = client.get_multiplexed_async_connection().await.unwrap();
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub.subscribe("input").await.unwrap();
        subscribed.send(()).unwrap();
        let mut stream = pubsub.into_on_message();
        while let Some(msg) = stream.next().await {
            let v: Value = serde_json::from_slice(msg.get_payload_bytes()).unwrap();
            if v["type"] == "message" {
                let r = json!({"id": v["id"], "service": "quoteservice",
                               "message": format!("echo:{}", v["message"].as_str().unwrap())});
                let _: i64 = redis::cmd("PUBLISH")
                    .arg(v["responseChannel"].as_str().unwrap())
                    .arg(r.to_string())
                    .query_async(&mut publish)
                    .await
                    .unwrap();
            }
        }
    });

    // Messages sent before the echo service subscribes would reach nobody.
    echo_ready.await.unwrap();
    let (mut on_a, id_a) = node_client(&a, &mut seen).await;
    let (mut on_b, id_b) = node_client(&b, &mut seen).await;
    for i in 0..20 {
        on_a.send(&format!("a{i}")).await;
        on_b.send(&format!("b{i}")).await;
    }
    for i in 0..20 {
        assert_eq!(on_a.recv_text().await, format!("echo:a{i}"));
        assert_eq!(on_b.recv_text().await, format!("echo:b{i}"));
    }

    // Stopping B tells services about its client and leaves A alone.
    b.signal("TERM");
    assert_eq!(on_b.recv_close().await.0, 1001);
    seen.next_event(&id_b, "disconnect").await;
    assert_eq!(b.wait_exit().await, Some(0));
    on_a.send("still").await;
    assert_eq!(on_a.recv_text().await, "echo:still");
    assert_eq!(a.metric("refract_connections{route=\"/quotes\"}").await, 1);
    echo.abort();
    // A is untouched: no disconnect was published for its client.
    while let Some(raw) = seen.try_next() {
        let v: Value = serde_json::from_slice(&raw).unwrap();
        assert!(
            !(v["id"] == id_a.as_str() && v["type"] == "disconnect"),
            "A's client was dropped"
        );
    }
}

#[tokio::test]
async fn every_message_of_a_chaos_run_is_delivered_or_counted() {
    let mut redis = Redis::start().await;
    let gw = Gateway::start(&redis, QUOTES).await;
    let mut svc = ResilientSubscriber::start(redis.url(), "input");
    svc.wait_subscribed(1).await;
    let mut input = redis.subscribe("input").await;
    let (client, _) = connect_and_identify(&gw, "/quotes", &mut input).await;
    drop(input);

    const SENT: u64 = 3000;
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let sender = tokio::spawn(async move {
        let mut client = client;
        for i in 0..SENT {
            client.send(&i.to_string()).await;
            counter.fetch_add(1, Ordering::SeqCst);
            // Pace the stream so the restarts land in the middle of it.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        client
    });

    for round in 1..=2u64 {
        let at = SENT * round / 3;
        eventually("the stream to reach the next restart", || async {
            (sent.load(Ordering::SeqCst) >= at).then_some(())
        })
        .await;
        redis.stop();
        eventually("losses while Redis is down", || async {
            (gw.metric(LOST_REDIS).await > 0).then_some(())
        })
        .await;
        redis.restart().await;
        gw.wait_ready().await;
        svc.wait_subscribed(round + 1).await;
    }
    let _client = sender.await.unwrap();

    let mut delivered = HashSet::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    let (delivered, lost) = loop {
        while let Some(raw) = svc.try_next() {
            let v: Value = serde_json::from_slice(&raw).unwrap();
            if v["type"] == "message" {
                let n: u64 = v["message"].as_str().unwrap().parse().unwrap();
                assert!(
                    n < SENT && delivered.insert(n),
                    "duplicate or unknown message {n}"
                );
            }
        }
        let lost = gw.metric(LOST_REDIS).await + gw.metric(LOST_UNHEARD).await;
        let seen = delivered.len() as u64;
        if seen + lost == SENT {
            break (seen, lost);
        }
        // A PUBLISH Redis has executed but not yet flushed (to the service, or its reply to the
        // gateway) at the instant it is SIGKILLed has a fate nobody can report: at most one per
        // restart each way in practice; allow two per restart, and never more.
        let off = (SENT as i64 - (seen + lost) as i64).unsigned_abs();
        if tokio::time::Instant::now() >= deadline {
            assert!(
                off <= 4,
                "sent {SENT}, delivered {seen}, counted lost {lost}: {off} unaccounted"
            );
            break (seen, lost);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(lost > 0, "the restarts must have cost something");
    println!(
        "chaos: sent {SENT}, delivered {delivered}, counted lost {lost}, unaccounted {}",
        SENT as i64 - (delivered + lost) as i64
    );
    gw.stop().await;
}
