//! Redis over TLS: a gateway whose `[redis]` URL is `rediss://` reaches a real `redis-server`
//! TLS port, trusting a test CA and presenting a client certificate, and events and replies
//! flow through it.

mod common;

use common::tls::TestCerts;
use common::*;

const ROUTE: &str = r#"
[routes."/echo".services.echo]
type = "redis"
request_channel = "echo.in"
"#;

#[tokio::test]
async fn a_route_round_trips_through_redis_over_tls_with_a_client_certificate() {
    let certs = TestCerts::generate();
    let tls_port = free_port();
    let redis = Redis::start_tls(&certs, tls_port).await;
    let keys = format!(
        "url = \"rediss://127.0.0.1:{tls_port}\"\n{}",
        certs.redis_keys()
    );
    let gw = Gateway::start_with_redis(&keys, ROUTE, "").await;
    // Ready means its canary went out and came back over the TLS connections.
    gw.wait_ready().await;

    // The service is on the server's plain port: the same server, so the same pub/sub.
    let mut service = redis.subscribe("echo.in").await;
    let mut client = gw.ws("/echo").await;
    client.send("over tls").await;
    let event = loop {
        let event = service.next_json().await;
        if event["type"] == "message" {
            break event;
        }
    };
    assert_eq!(event["message"], "over tls");
    let channel = event["responseChannel"].as_str().unwrap().to_string();
    let heard = redis
        .publish(
            &channel,
            reply(event["id"].as_str().unwrap(), "echo", "back"),
        )
        .await;
    assert_eq!(heard, 1);
    assert_eq!(client.recv_text().await, "back");

    // Every connection the gateway holds is on the TLS port.
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    let on_tls = clients
        .lines()
        .filter(|l| l.contains(&format!("laddr=127.0.0.1:{tls_port}")))
        .count();
    assert!(on_tls >= 2, "publisher and subscriber over TLS: {clients}");
    gw.stop().await;
}

/// A server whose certificate the gateway's CA did not sign: the gateway refuses the handshake
/// (the server logs the client's `unknown ca` alert) and is not ready.
#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused() {
    let certs = TestCerts::generate();
    let strangers = TestCerts::generate();
    let tls_port = free_port();
    let _redis = Redis::start_tls(&certs, tls_port).await;
    let keys = format!(
        "url = \"rediss://127.0.0.1:{tls_port}\"\n{}",
        strangers.redis_keys()
    );
    let gw = Gateway::start_with_redis(&keys, ROUTE, "").await;
    eventually("the server to log the gateway's refusal", || async {
        certs.server_log().contains("unknown ca").then_some(())
    })
    .await;
    assert_eq!(gw.get("/readyz").await.0, 503);
    gw.stop().await;
}
