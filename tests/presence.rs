//! Presence across nodes, with two and three real gateway processes on one real Redis: joins
//! seen across nodes, a killed node's members leaving exactly once, a Redis restart losing and
//! duplicating nothing, and the admin topic.

mod common;

use std::time::Duration;

use common::phx::*;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const SECRET: &str = "presence-test-secret-0123456789abcdef";

fn config() -> String {
    format!(
        "\n[channels]\njwt_secret = \"{SECRET}\"\nidle_timeout = \"30s\"\n\
         [channels.presence]\nttl = \"1s\"\nrefresh_interval = \"250ms\"\nadmin_interval = \"250ms\"\n"
    )
}

fn token(claims: Value) -> String {
    let mut c = claims.as_object().unwrap().clone();
    c.insert("exp".into(), json!(refract::auth::now_secs() + 600));
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &c,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn node(redis: &Redis) -> Node {
    Node::start(&redis.url(), None, "", &config()).await
}

/// Joins `room` as `who`; returns the socket, its join_ref and its presence_state.
async fn member(n: &Node, who: &str, payload_extra: Value) -> (Phx, String, Value) {
    let mut s = Phx::connect(n, "").await;
    let mut payload = json!({"token": token(json!({"id": who, "channel": "room"}))});
    payload
        .as_object_mut()
        .unwrap()
        .extend(payload_extra.as_object().unwrap().clone());
    let (jr, reply) = s.join("room", payload).await;
    assert_eq!(reply[4]["status"], "ok", "{reply}");
    let state = s.recv_event("presence_state").await;
    (s, jr, state[4].clone())
}

/// Waits for the next presence_diff that mentions `key` in `side` ("joins"/"leaves").
async fn diff_for(s: &mut Phx, side: &str, key: &str) -> Value {
    loop {
        let f = s.recv_event("presence_diff").await;
        if f[4][side].get(key).is_some() {
            return f[4].clone();
        }
    }
}

#[tokio::test]
async fn members_on_one_node_see_joins_on_another_in_state_and_diffs() {
    let redis = Redis::start().await;
    let (a, b) = (node(&redis).await, node(&redis).await);
    let (mut xavier, _, state) = member(&a, "xavier", json!({})).await;
    assert!(state.get("xavier").is_some());
    let (_yvonne, _, state) = member(&b, "yvonne", json!({"meta": {"status": "away"}})).await;
    // The joiner on B is told about the member on A.
    assert_eq!(state["xavier"]["metas"].as_array().unwrap().len(), 1);
    assert_eq!(state["yvonne"]["metas"][0]["status"], "away");
    assert_ne!(
        state["xavier"]["metas"][0]["node"],
        state["yvonne"]["metas"][0]["node"]
    );
    // And A's member hears of the join on B.
    let diff = diff_for(&mut xavier, "joins", "yvonne").await;
    assert_eq!(diff["joins"]["yvonne"]["metas"][0]["status"], "away");

    // A meta over the size cap is refused.
    let mut s = Phx::connect(&a, "").await;
    let big = json!({"token": token(json!({"id": "z", "channel": "room"})), "meta": {"x": "y".repeat(2000)}});
    let (_, reply) = s.join("room", big).await;
    assert_eq!(reply[4]["response"]["reason"], "invalid meta");
}

#[tokio::test]
async fn a_killed_nodes_members_leave_exactly_once() {
    let redis = Redis::start().await;
    let (a, mut b, c) = (node(&redis).await, node(&redis).await, node(&redis).await);
    let (mut on_a, _, _) = member(&a, "alice", json!({})).await;
    let (mut on_c, _, _) = member(&c, "carol", json!({})).await;
    let (_on_b, _, _) = member(&b, "bob", json!({})).await;
    diff_for(&mut on_a, "joins", "bob").await;
    diff_for(&mut on_c, "joins", "bob").await;

    let killed_at = tokio::time::Instant::now();
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    let leave = diff_for(&mut on_a, "leaves", "bob").await;
    let took = killed_at.elapsed();
    assert_eq!(leave["leaves"]["bob"]["metas"].as_array().unwrap().len(), 1);
    diff_for(&mut on_c, "leaves", "bob").await;
    println!("presence: bob's leave reached alice {took:?} after kill -9 (ttl 1s, sweep 250ms)");

    // Published once: two survivors swept, one removed the entry. No second leave arrives
    // within several more sweeps.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let swept = a.metric("refract_channels_presence_swept_total").await
        + c.metric("refract_channels_presence_swept_total").await;
    assert_eq!(swept, 1, "exactly one node removed bob's entry");
    let hb = on_a.send(None, "phoenix", "heartbeat", json!({})).await;
    loop {
        let f = on_a.recv().await;
        assert!(
            f[4]["leaves"].get("bob").is_none(),
            "a second leave for bob: {f}"
        );
        if f[1] == json!(hb) {
            break;
        }
    }
    // A new member sees only the living.
    let (_, _, state) = member(&a, "dave", json!({})).await;
    let mut keys: Vec<&String> = state.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["alice", "carol", "dave"]);
}

#[tokio::test]
async fn a_redis_restart_neither_loses_nor_duplicates_members() {
    let mut redis = Redis::start().await;
    let (a, b) = (node(&redis).await, node(&redis).await);
    let (_x, _, _) = member(&a, "xavier", json!({})).await;
    let (_y, _, _) = member(&b, "yvonne", json!({})).await;

    redis.stop();
    redis.restart().await;
    a.wait_ready().await;
    b.wait_ready().await;
    // Each node writes its members back; a newcomer sees everyone, each once.
    let state = eventually("presence to be rebuilt", || async {
        let mut s = Phx::connect(&a, "").await;
        let (jr, reply) = s
            .join(
                "room",
                json!({"token": token(json!({"id": "w", "channel": "room"}))}),
            )
            .await;
        if reply[4]["status"] != "ok" {
            return None;
        }
        let state = s.recv_event("presence_state").await[4].clone();
        let _ = s.send(Some(&jr), "room", "phx_leave", json!({})).await;
        (state.get("xavier").is_some() && state.get("yvonne").is_some()).then_some(state)
    })
    .await;
    assert_eq!(state["xavier"]["metas"].as_array().unwrap().len(), 1);
    assert_eq!(state["yvonne"]["metas"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_admin_topic_reports_nodes_and_members() {
    let redis = Redis::start().await;
    let (a, b) = (node(&redis).await, node(&redis).await);
    let (_m, _, _) = member(&b, "someone", json!({})).await;
    let mut admin = Phx::connect(&a, "").await;
    let tok = token(json!({"id": "ops", "channel": "admin", "admin": true}));
    admin.join_ok("admin", &tok).await;
    // Stats come every admin_interval; each recv waits at most the harness deadline.
    let mut stats = Value::Null;
    for _ in 0..40 {
        stats = admin.recv_event("stats").await[4].clone();
        if stats["nodes"].as_array().unwrap().len() == 2 && connections(&stats) == 2 {
            break;
        }
    }
    // Both nodes, each with its one socket (the member on B, the admin on A).
    assert_eq!(stats["nodes"].as_array().unwrap().len(), 2, "{stats}");
    assert_eq!(connections(&stats), 2, "{stats}");
    assert_eq!(stats["topics"]["room"], 1);
}

fn connections(stats: &Value) -> u64 {
    stats["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["connections"].as_u64().unwrap())
        .sum()
}

#[tokio::test]
async fn a_node_restarted_under_the_same_id_clears_its_previous_members() {
    let redis = Redis::start().await;
    let observer_node = node(&redis).await;
    let mut a = Node::start(&redis.url(), Some("steady-id"), "", &config()).await;
    let (mut observer, _, _) = member(&observer_node, "watcher", json!({})).await;
    let (_ghost, _, _) = member(&a, "ghost", json!({})).await;
    diff_for(&mut observer, "joins", "ghost").await;

    // Killed and back under the same id before its liveness key could expire.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let addr = a.addr;
    let a = Node::start_at(&redis.url(), Some("steady-id"), addr, &config()).await;
    diff_for(&mut observer, "leaves", "ghost").await;
    let (_, _, state) = member(&a, "newcomer", json!({})).await;
    let mut keys: Vec<&String> = state.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["newcomer", "watcher"]);
}
