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

/// A TLS client trusting `ca` (PEM file).
fn connector(ca: &std::path::Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn tls_connect(gw: &Gateway, ca: &std::path::Path) -> std::io::Result<TlsStream> {
    let tcp = tokio::net::TcpStream::connect(gw.addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    connector(ca).connect(name, tcp).await
}

/// One HTTPS GET; the status and body.
async fn https_get(
    gw: &Gateway,
    ca: &std::path::Path,
    path: &str,
) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tls_connect(gw, ca).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

async fn metric(gw: &Gateway, ca: &std::path::Path, prefix: &str) -> u64 {
    let (_, body) = https_get(gw, ca, "/metrics").await.unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix}"))
}

fn tls_server(dir: &std::path::Path, reload: &str) -> String {
    format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nreload_interval = \"{reload}\"\n",
        dir.join("server.crt").display(),
        dir.join("server.key").display()
    )
}

/// The certificate and key of `certs`, copied where a gateway reads them.
fn install(certs: &TestCerts, dir: &std::path::Path) {
    for f in ["server.crt", "server.key"] {
        // Written aside and renamed, as a deploy would: never a half-written file.
        let tmp = dir.join(format!("{f}.new"));
        std::fs::copy(certs.path(f), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join(f)).unwrap();
    }
}

async fn echo_round_trip<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    redis: &Redis,
    service: &mut Subscriber,
    text: &str,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text(text)).await.unwrap();
    let event = loop {
        let e = service.next_json().await;
        if e["type"] == "message" {
            break e;
        }
    };
    assert_eq!(event["message"], text);
    let channel = event["responseChannel"].as_str().unwrap().to_string();
    redis
        .publish(
            &channel,
            reply(
                event["id"].as_str().unwrap(),
                "echo",
                &format!("re: {text}"),
            ),
        )
        .await;
    let frame = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(frame.into_text().unwrap().as_str(), format!("re: {text}"));
}

/// `[server.tls]`: `wss://` and `https://` on the one port, verified against the test CA; a
/// plain-text client gets no answer and is counted.
#[tokio::test]
async fn the_listener_speaks_wss_and_https() {
    let certs = TestCerts::generate();
    let redis = Redis::start().await;
    let gw = Gateway::start_with_redis(
        &format!("url = \"{}\"", redis.url()),
        ROUTE,
        &tls_server(certs.path("").as_path(), "10s"),
    )
    .await;
    let ca = certs.path("ca.crt");
    eventually("/readyz over https to be 200", || async {
        (https_get(&gw, &ca, "/readyz").await.ok()?.0 == 200).then_some(())
    })
    .await;
    let mut service = redis.subscribe("echo.in").await;
    let tls = tls_connect(&gw, &ca).await.unwrap();
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("wss://127.0.0.1:{}/echo", gw.addr.port()), tls)
            .await
            .unwrap();
    echo_round_trip(&mut ws, &redis, &mut service, "over wss").await;

    // Plain HTTP on the TLS port is a failed handshake, counted.
    let failures = "refract_tls_handshake_failures_total";
    let before = metric(&gw, &ca, failures).await;
    let _ = http_request(
        gw.addr,
        "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    eventually("the failed handshake counted", || async {
        (metric(&gw, &ca, failures).await == before + 1).then_some(())
    })
    .await;
    gw.stop().await;
}

/// Redis and a gateway whose listener uses the certificate in `dir` (checked every `reload`),
/// once it answers `/readyz` over https trusting `ca`.
async fn tls_gateway(
    dir: &std::path::Path,
    reload: &str,
    ca: &std::path::Path,
) -> (Redis, Gateway) {
    let redis = Redis::start().await;
    let redis_keys = format!("url = \"{}\"", redis.url());
    let gw = Gateway::start_with_redis(&redis_keys, ROUTE, &tls_server(dir, reload)).await;
    eventually("/readyz over https to be 200", || async {
        (https_get(&gw, ca, "/readyz").await.ok()?.0 == 200).then_some(())
    })
    .await;
    (redis, gw)
}

/// A certificate replaced on disk is picked up for new connections (the change is seen every
/// `reload_interval`); a connection made before keeps working; a pair that does not load is
/// refused, counted, and the previous certificate stays in use.
#[tokio::test]
async fn a_replaced_certificate_is_used_for_new_connections() {
    let (first, second) = (TestCerts::generate(), TestCerts::generate());
    let dir = tempfile::tempdir().unwrap();
    install(&first, dir.path());
    let (ca1, ca2) = (first.path("ca.crt"), second.path("ca.crt"));
    let (redis, gw) = tls_gateway(dir.path(), "100ms", &ca1).await;
    let mut service = redis.subscribe("echo.in").await;
    let tls = tls_connect(&gw, &ca1).await.unwrap();
    let url = format!("wss://127.0.0.1:{}/echo", gw.addr.port());
    let (mut before, _) = tokio_tungstenite::client_async(&url, tls).await.unwrap();
    assert!(
        tls_connect(&gw, &ca2).await.is_err(),
        "not yet the second certificate"
    );

    install(&second, dir.path());
    eventually("the second certificate in use", || async {
        https_get(&gw, &ca2, "/healthz").await.ok().map(drop)
    })
    .await;
    assert!(
        tls_connect(&gw, &ca1).await.is_err(),
        "the first certificate is gone"
    );
    // At least one: a SIGHUP from the test beside this one reloads too.
    assert!(metric(&gw, &ca2, "refract_tls_reloads_total{result=\"ok\"}").await >= 1);
    echo_round_trip(&mut before, &redis, &mut service, "made before the reload").await;

    // A key that is not a key: refused, counted, the second certificate still served.
    std::fs::write(dir.path().join("server.key"), "not a key").unwrap();
    eventually("the broken reload counted", || async {
        (metric(&gw, &ca2, "refract_tls_reloads_total{result=\"error\"}").await >= 1).then_some(())
    })
    .await;
    assert_eq!(https_get(&gw, &ca2, "/healthz").await.unwrap().0, 200);
    gw.stop().await;
}

/// SIGHUP reloads at once, whatever `reload_interval` says.
#[tokio::test]
async fn sighup_reloads_the_certificate_at_once() {
    let (first, second) = (TestCerts::generate(), TestCerts::generate());
    let dir = tempfile::tempdir().unwrap();
    install(&first, dir.path());
    let (_redis, gw) = tls_gateway(dir.path(), "1h", &first.path("ca.crt")).await;
    install(&second, dir.path());
    // The gateway's reload worker handles SIGHUP (it was installed before the port took
    // connections); sent to this test process, which is the gateway's.
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let ca2 = second.path("ca.crt");
    eventually("the second certificate after SIGHUP", || async {
        https_get(&gw, &ca2, "/healthz").await.ok().map(drop)
    })
    .await;
    gw.stop().await;
}
