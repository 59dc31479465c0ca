//! Hostile handshakes through real sockets: a request sent a byte at a time, a megabyte of
//! headers, thousands of sockets that never send a byte, and one address opening connections
//! too fast. Each is cut off by its limit and counted by reason, while clients that are already
//! connected keep their round trips.

mod common;

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ROUTE: &str = r#"
[routes."/echo".services.echo]
type = "redis"
request_channel = "echo.in"
"#;

fn refused(reason: &str) -> String {
    format!("refract_handshakes_refused_total{{reason=\"{reason}\"}}")
}

/// One GET, or `None` if the gateway closed the connection (as it does past a limit).
async fn try_get(gw: &Gateway, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(gw.addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text.split_once("\r\n\r\n")?.1.to_string()))
}

/// A refusal counter, or `None` (and one more in `turned_away`) if the request was refused.
async fn counted_read(gw: &Gateway, reason: &str, turned_away: &AtomicU64) -> Option<u64> {
    let value = try_metric(gw, &refused(reason)).await;
    if value.is_none() {
        turned_away.fetch_add(1, Relaxed);
    }
    value
}

async fn try_metric(gw: &Gateway, prefix: &str) -> Option<u64> {
    let (_, body) = try_get(gw, "/metrics").await?;
    body.lines()
        .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
}

/// `n` clients on `/echo`, each identified by the id of its first message.
async fn clients(gw: &Gateway, service: &mut Subscriber, n: usize) -> Vec<(Client, String)> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut c = gw.ws("/echo").await;
        c.send(&format!("hello {i}")).await;
        let id = loop {
            let e = service.next_json().await;
            if e["type"] == "message" && e["message"] == format!("hello {i}") {
                break e["id"].as_str().unwrap().to_string();
            }
        };
        out.push((c, id));
    }
    out
}

/// One round trip for every client: the service answers each by its id.
async fn round_trips(redis: &Redis, gw: &Gateway, clients: &mut [(Client, String)], tag: &str) {
    for (c, id) in clients.iter_mut() {
        redis
            .publish(
                &gw.response_channel(),
                reply(id, "echo", &format!("{tag} {id}")),
            )
            .await;
        assert_eq!(c.recv_text().await, format!("{tag} {id}"));
    }
}

#[tokio::test]
async fn a_slow_request_and_a_huge_one_are_cut_off_while_clients_keep_working() {
    let redis = Redis::start().await;
    let gw = Gateway::start_with_redis(
        &format!("url = \"{}\"", redis.url()),
        ROUTE,
        "handshake_timeout = \"1s\"\nmax_header_size = 16384\n",
    )
    .await;
    gw.wait_ready().await;
    let mut service = redis.subscribe("echo.in").await;
    let mut good = clients(&gw, &mut service, 100).await;

    // Slowloris: a byte every 100 ms never finishes the head within the timeout.
    let started = Instant::now();
    let mut slow = TcpStream::connect(gw.addr).await.unwrap();
    let request = b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n";
    let mut closed_after = None;
    for &b in request.iter().cycle().take(200) {
        if slow.write_all(&[b]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 64];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(100), slow.read(&mut buf)).await
        {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let closed_after = closed_after.expect("the slow request was cut off");
    assert!(closed_after < Duration::from_secs(5), "{closed_after:?}");
    round_trips(&redis, &gw, &mut good, "during slowloris").await;
    eventually("the timeout counted", || async {
        (gw.metric(&refused("timeout")).await >= 1).then_some(())
    })
    .await;

    // A megabyte of headers: 431, counted.
    let mut huge = TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let _ = huge.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, huge.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");
    assert_eq!(gw.metric(&refused("headers_too_large")).await, 1);
    round_trips(&redis, &gw, &mut good, "after the big head").await;
    gw.stop().await;
}

/// 5,000 sockets that never send a byte, against `max_pending_handshakes = 1000`: the rest are
/// closed at accept, the thousand after the handshake timeout (3 s); connected clients keep going,
/// and new clients get in once the flood is gone.
#[tokio::test]
async fn thousands_of_silent_sockets_are_bounded_and_expire() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let redis = Redis::start().await;
    let gw = Gateway::start_with_redis(
        &format!("url = \"{}\"", redis.url()),
        ROUTE,
        // Long enough that the flood is in before the first places expire, on a busy machine too.
        "handshake_timeout = \"3s\"\nmax_pending_handshakes = 1000\n",
    )
    .await;
    gw.wait_ready().await;
    let mut service = redis.subscribe("echo.in").await;
    let mut good = clients(&gw, &mut service, 100).await;

    let mut silent = Vec::new();
    for _ in 0..5000 {
        if let Ok(s) = TcpStream::connect(gw.addr).await {
            silent.push(s);
        }
    }
    assert_eq!(silent.len(), 5000);
    round_trips(&redis, &gw, &mut good, "during the flood").await;
    // This test's own metrics requests may be turned away while the places are full: those
    // are counted too, so they are counted here, and left out.
    let turned_away = AtomicU64::new(0);
    let (pending, timeout) =
        eventually_within(Duration::from_secs(30), "the flood cut off", || async {
            let pending = counted_read(&gw, "too_many_pending", &turned_away).await?;
            let timeout = counted_read(&gw, "timeout", &turned_away).await?;
            let pending = pending.saturating_sub(turned_away.load(Relaxed));
            (pending + timeout >= 5000).then_some((pending, timeout))
        })
        .await;
    // Every place is taken and held until it times out (a few may have gone to this test's
    // own metrics requests); the rest are closed at accept, except those that found a place
    // freed by a timeout while the flood was still coming in. Never more than the places at
    // once: most of the flood was refused.
    assert!(
        timeout >= 500,
        "{pending} closed at accept, {timeout} timed out"
    );
    assert!(
        pending >= 2000,
        "{pending} closed at accept, {timeout} timed out"
    );
    println!("5000 silent sockets: {pending} closed at accept, {timeout} timed out after 3 s");
    round_trips(&redis, &gw, &mut good, "after the flood").await;
    drop(silent);
    let mut late = clients(&gw, &mut service, 1).await;
    round_trips(&redis, &gw, &mut late, "a newcomer").await;
    gw.stop().await;
}

/// One address over `handshakes_per_ip_per_second`: the connections past the bucket are
/// closed at accept and counted.
#[tokio::test]
async fn an_address_opening_connections_too_fast_is_refused() {
    let redis = Redis::start().await;
    let gw = Gateway::start_with_redis(
        &format!("url = \"{}\"", redis.url()),
        ROUTE,
        "handshakes_per_ip_per_second = 5\n",
    )
    .await;
    // Readiness is polled over HTTP from the same address: wait for it, then a second for the
    // bucket to fill again (a refill over time: nothing to poll for).
    gw.wait_ready().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut answered = 0;
    for _ in 0..20 {
        if try_get(&gw, "/healthz")
            .await
            .is_some_and(|(s, _)| s == 200)
        {
            answered += 1;
        }
    }
    assert!((5..=7).contains(&answered), "{answered} of 20 answered");
    let limited = eventually("the refusals counted", || async {
        try_metric(&gw, &refused("rate_limited")).await
    })
    .await;
    assert!(limited >= 13, "{limited}");
}
