//! The admin page and `/admin/api/state`, through a real gateway on a real Redis: never open,
//! the configured token or basic credentials only, and live figures (connections per route, the
//! node list, Channels topics with presence, drops by reason).

mod common;

use common::phx::Phx;
use common::*;
use serde_json::{Value, json};

const TOKEN: &str = "admin-test-token-0123456789";
const SECRET: &str = "admin-test-channels-secret-0123456789";

fn routes(admin: &str) -> String {
    format!(
        r#"
[routes."/echo".services.echo]
type = "redis"
request_channel = "echo.in"

[routes."/legacy".services.old]
type = "http"
url = "http://127.0.0.1:9/never"
polling_interval = "1s"

[admin]
{admin}
"#
    )
}

async fn get(gw: &Gateway, path: &str, auth: Option<&str>) -> (u16, String) {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
    http_request(gw.addr, &request).await
}

async fn state(gw: &Gateway) -> Value {
    let (status, body) = get(gw, "/admin/api/state", Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn route<'a>(state: &'a Value, path: &str) -> &'a Value {
    state["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == path)
        .unwrap_or_else(|| panic!("no route {path}: {state}"))
}

#[tokio::test]
async fn the_state_needs_the_token_and_shows_routes_nodes_and_drops() {
    let redis = Redis::start().await;
    let gw = Gateway::start(&redis, &routes(&format!("token = \"{TOKEN}\""))).await;

    // The page is static and carries no data; nothing it loads comes from elsewhere.
    let head = http_response(
        gw.addr,
        "GET /admin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_lowercase().contains("content-type: text/html"));
    assert!(head.contains("/admin/api/state"));
    for external in ["src=\"http", "href=\"http", "@import", "//cdn"] {
        assert!(!head.contains(external), "the page loads {external}");
    }

    // The data is never open: no credentials, or wrong ones, get 401 with the scheme to use.
    let refused = "refract_http_rejections_total{reason=\"unauthorized\"}";
    let head = http_response(
        gw.addr,
        "GET /admin/api/state HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(
        head.contains("www-authenticate: Bearer realm=\"refract admin\""),
        "{head}"
    );
    let (status, body) = get(
        &gw,
        "/admin/api/state",
        Some("Bearer wrong-token-0123456789"),
    )
    .await;
    assert_eq!(status, 401);
    assert!(!body.contains("/echo"), "a refusal shows nothing: {body}");
    assert_eq!(gw.metric(refused).await, 2);

    let s = state(&gw).await;
    assert_eq!(s["node"]["id"], gw.node_id.as_str());
    assert_eq!(s["node"]["ready"], true);
    assert_eq!(s["node"]["redis"]["mode"], "standalone");
    assert!(
        s["node"]["canary_round_trip_ms"].as_f64().unwrap() > 0.0,
        "{s}"
    );
    assert_eq!(route(&s, "/echo")["connections"], 0);
    assert_eq!(
        route(&s, "/echo")["services"],
        json!([{"name": "echo", "type": "redis", "request_channel": "echo.in"}])
    );
    let legacy = &route(&s, "/legacy")["services"][0];
    assert_eq!(legacy["type"], "http");
    assert_eq!(legacy["urls"][0]["url"], "http://127.0.0.1:9/never");
    assert_eq!(s["channels"], Value::Null);

    // A connection appears on its route, and goes when it closes.
    let client = gw.ws("/echo").await;
    eventually("the connection in the state", || async {
        (route(&state(&gw).await, "/echo")["connections"] == 1).then_some(())
    })
    .await;
    // This node is in the node list (its heartbeat), with that connection.
    let nodes = eventually("this node in the node list", || async {
        let s = state(&gw).await;
        let nodes = s["nodes"].as_array()?.clone();
        nodes
            .iter()
            .any(|n| n["node"] == gw.node_id.as_str() && n["connections"] == 1)
            .then_some(nodes)
    })
    .await;
    assert!(nodes.iter().all(|n| n["at"].as_u64().unwrap() > 0));
    drop(client);
    eventually("the connection gone from the state", || async {
        (route(&state(&gw).await, "/echo")["connections"] == 0).then_some(())
    })
    .await;

    // A bad service message is a drop with its reason.
    redis.publish(&gw.response_channel(), "not json").await;
    let drop = eventually("the dropped reply in the state", || async {
        let s = state(&gw).await;
        s["drops"]
            .as_array()?
            .iter()
            .find(|d| d["metric"] == "refract_replies_dropped_total")
            .cloned()
    })
    .await;
    assert_eq!(drop["labels"]["reason"], "invalid_json");
    assert_eq!(drop["value"], 1.0);
    gw.stop().await;
}

#[tokio::test]
async fn basic_credentials_are_asked_for_by_name() {
    let redis = Redis::start().await;
    let admin = "username = \"ops\"\npassword = \"correct horse battery staple\"";
    let gw = Gateway::start(&redis, &routes(admin)).await;
    let head = http_response(
        gw.addr,
        "GET /admin/api/state HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(
        head.contains("www-authenticate: Basic realm=\"refract admin\""),
        "{head}"
    );
    // base64("ops:correct horse battery staple")
    let good = "Basic b3BzOmNvcnJlY3QgaG9yc2UgYmF0dGVyeSBzdGFwbGU=";
    let (status, body) = get(&gw, "/admin/api/state", Some(good)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = get(&gw, "/admin/api/state", Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(status, 401, "a token is not what this node asks for");
    gw.stop().await;
}

#[tokio::test]
async fn channels_topics_show_members_here_and_presence() {
    let redis = Redis::start().await;
    let config = format!(
        "{}\n[channels]\njwt_secret = \"{SECRET}\"\n",
        routes(&format!("token = \"{TOKEN}\""))
    );
    let gw = Gateway::start(&redis, &config).await;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"id": "ann", "channel": "room:*", "exp": refract::auth::now_secs() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let mut socket = Phx::connect(&gw, "").await;
    socket.join_ok("room:lobby", &token).await;
    let topic = eventually("the topic in the state", || async {
        let s = state(&gw).await;
        s["channels"]["topics"]
            .as_array()?
            .iter()
            .find(|t| t["topic"] == "room:lobby" && t["presence"] == 1)
            .cloned()
    })
    .await;
    assert_eq!(topic["members_here"], 1);
    let s = state(&gw).await;
    assert_eq!(s["channels"]["sockets"], 1);
    assert_eq!(s["channels"]["topics_here"], 1);
    gw.stop().await;
}
