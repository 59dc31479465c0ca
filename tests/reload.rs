//! Config reload: a real SIGHUP to a real gateway process, which reads its file again. Routes
//! added, changed and removed take effect for new connections; clients of a removed route are
//! closed with 1001 and their services hear them go; every other client stays. A bad file is
//! refused with the one-line error `refract check` gives, counted, and the config in force stays.

mod common;

use common::*;

const RELOADS_OK: &str = "refract_config_reloads_total{result=\"ok\"}";
const RELOADS_REFUSED: &str = "refract_config_reloads_total{result=\"error\"}";

fn route(path: &str, channel: &str) -> String {
    format!("[routes.\"{path}\".services.svc]\ntype = \"redis\"\nrequest_channel = \"{channel}\"\n")
}

async fn reload(node: &Node, metric: &str, times: u64) {
    node.signal("HUP");
    eventually("the reload to be counted", || async {
        (node.metric(metric).await == times).then_some(())
    })
    .await;
}

#[tokio::test]
async fn sighup_puts_added_changed_and_removed_routes_in_force_for_new_connections() {
    let redis = Redis::start().await;
    let (mut input, mut input2) = (
        redis.subscribe("input").await,
        redis.subscribe("input2").await,
    );
    let (mut old, mut new) = (redis.subscribe("old").await, redis.subscribe("new").await);
    let routes = route("/quotes", "input") + &route("/old", "old");
    let node = Node::start(&redis.url(), Some("reload"), "", &routes).await;
    let (mut stays, connected) = node.connect_identified("/quotes", &mut input).await;
    let (stays_id, responses) = (
        connected["id"].clone(),
        connected["responseChannel"].clone(),
    );
    let (mut leaves, gone) = node.connect_identified("/old", &mut old).await;

    // /quotes now publishes to input2; /new is added; /old is removed.
    node.rewrite_routes(&(route("/quotes", "input2") + &route("/new", "new")));
    reload(&node, RELOADS_OK, 1).await;

    assert_eq!(leaves.recv_close().await, (1001, "route removed".into()));
    let bye = old
        .next_event(gone["id"].as_str().unwrap(), "disconnect")
        .await;
    assert_eq!(bye["route"], "/old");
    let closed = "refract_connections_closed_total{route=\"/old\",reason=\"route_removed\"}";
    assert_eq!(node.metric(closed).await, 1);
    assert_eq!(node.metric("refract_connections{route=\"/old\"}").await, 0);

    // The client already on /quotes keeps the route it came in on, and its replies.
    stays.send("still here").await;
    let heard = input.next_for(stays_id.as_str().unwrap()).await;
    assert_eq!(heard["message"], "still here");
    let answer = reply(stays_id.as_str().unwrap(), "svc", "answer");
    redis.publish(responses.as_str().unwrap(), answer).await;
    assert_eq!(stays.recv_text().await, "answer");

    // New clients meet the new table.
    let (_quotes, c) = node.connect_identified("/quotes", &mut input2).await;
    assert_eq!(c["route"], "/quotes");
    let (_fresh, c) = node.connect_identified("/new", &mut new).await;
    assert_eq!(c["route"], "/new");
    assert_eq!(refused_status(format!("ws://{}/old", node.addr)).await, 404);
    assert_eq!(
        node.metric("refract_connections{route=\"/quotes\"}").await,
        2
    );
}

#[tokio::test]
async fn a_bad_config_on_sighup_is_refused_and_the_one_in_force_stays() {
    let redis = Redis::start().await;
    let mut input = redis.subscribe("input").await;
    let mut node = Node::start(&redis.url(), None, "", &route("/quotes", "input")).await;
    let (mut client, connected) = node.connect_identified("/quotes", &mut input).await;
    let id = connected["id"].as_str().unwrap().to_string();

    node.rewrite_routes(&format!(
        "{}max_conections = 5\n",
        route("/quotes", "elsewhere")
    ));
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_refract"))
        .arg("check")
        .arg("--config")
        .arg(node.config_path())
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(64));
    let stderr = String::from_utf8(check.stderr).unwrap();
    let error = stderr.trim().strip_prefix("refract: ").unwrap();
    assert!(error.contains("max_conections"), "{error}");
    reload(&node, RELOADS_REFUSED, 1).await;
    assert!(node.log().contains(error), "the log says {:?}", node.log());
    assert_eq!(node.metric(RELOADS_OK).await, 0);

    // Nothing changed: the client stays, and new clients get the old route.
    client.send("after").await;
    assert_eq!(input.next_for(&id).await["message"], "after");
    let (_again, c) = node.connect_identified("/quotes", &mut input).await;
    assert_eq!(c["route"], "/quotes");

    // A good file later is taken.
    node.rewrite_routes(&route("/quotes", "input"));
    reload(&node, RELOADS_OK, 1).await;
    assert!(node.child.try_wait().unwrap().is_none(), "the node runs");
}

/// A SIGHUP with no change at all is a reload that changes nothing: no client is closed.
#[tokio::test]
async fn a_reload_of_the_same_file_closes_nobody() {
    let redis = Redis::start().await;
    let mut input = redis.subscribe("input").await;
    let node = Node::start(&redis.url(), None, "", &route("/quotes", "input")).await;
    let (mut client, connected) = node.connect_identified("/quotes", &mut input).await;
    reload(&node, RELOADS_OK, 1).await;
    reload(&node, RELOADS_OK, 2).await;
    client.send("after two reloads").await;
    let id = connected["id"].as_str().unwrap();
    assert_eq!(input.next_for(id).await["message"], "after two reloads");
    assert_eq!(
        node.metric("refract_connections{route=\"/quotes\"}").await,
        1
    );
    let lost = "refract_connections_closed_total{route=\"/quotes\",reason=\"route_removed\"}";
    assert_eq!(node.metric(lost).await, 0);
}
