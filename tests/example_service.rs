//! The documented example backend (docs/examples/quotes_service.py) against the real gateway,
//! configured from routes.example.toml's routes.

mod common;

use common::example::Example;
use common::topology::Cluster;
use common::*;
use serde_json::Value;

/// The `[routes...]` part of the shipped example config, with the HTTP example's port moved to
/// `news_port`.
fn example_routes(news_port: u16) -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/routes.example.toml"))
        .unwrap();
    let start = text.find("[routes.").expect("example has routes");
    assert!(text.contains("127.0.0.1:9000/news"));
    text[start..].replace("127.0.0.1:9000", &format!("127.0.0.1:{news_port}"))
}

async fn next_kind(client: &mut Client, skip_ticks: bool) -> Value {
    loop {
        let v: Value = serde_json::from_str(&client.recv_text().await).unwrap();
        if !(skip_ticks && v["kind"] == "tick") {
            return v;
        }
    }
}

#[tokio::test]
async fn the_python_quotes_example_serves_the_example_route() {
    let redis = Redis::start().await;
    let url = redis.url();
    let service = Example::start(
        "quotes_service.py",
        &["--redis-url", &url, "--interval", "0.2"],
        "quotes_service ready",
    )
    .await;

    let gw = Gateway::start(&redis, &example_routes(free_port())).await;
    let mut client = gw.ws("/quotes").await;
    let welcome = next_kind(&mut client, true).await;
    assert_eq!(welcome["kind"], "welcome");

    client.send("ACME").await;
    let quote = next_kind(&mut client, true).await;
    assert_eq!(
        (quote["kind"].as_str(), quote["symbol"].as_str()),
        (Some("quote"), Some("ACME"))
    );
    assert!(quote["price"].is_number());

    client.send("chart GLOBEX").await;
    let chart = next_kind(&mut client, true).await;
    assert_eq!(chart["kind"], "chart");
    assert_eq!(chart["points"].as_array().unwrap().len(), 5);

    // The service pushes ticks on its own timer, through the gateway, to this client.
    let tick = next_kind(&mut client, false).await;
    assert!(tick["kind"] == "tick" || tick["kind"] == "quote", "{tick}");
    loop {
        if next_kind(&mut client, false).await["kind"] == "tick" {
            break;
        }
    }

    client.send("bye").await;
    assert_eq!(next_kind(&mut client, true).await["kind"], "bye");
    // Ticks already queued may arrive before the close; the close itself is normal.
    assert_eq!(client.recv_close_after_text().await, 1000);
    service.stop().await;
    gw.stop().await;
}

#[tokio::test]
async fn the_python_news_example_answers_events_and_polls() {
    let redis = Redis::start().await;
    let port = free_port();
    let service = Example::start(
        "news_service.py",
        &["--port", &port.to_string()],
        "news_service ready",
    )
    .await;

    // The example's polling_interval is 2 s; keep it, the test awaits what it needs.
    let gw = Gateway::start(&redis, &example_routes(port)).await;
    let mut client = gw.ws("/news").await;
    assert_eq!(next_kind(&mut client, false).await["kind"], "welcome");
    // As a terminal client sends it: the line with its newline.
    client.send("tech\n").await;
    assert_eq!(next_kind(&mut client, false).await["kind"], "following");
    // Polls carry the last message ("tech"), and each brings the next headline.
    let headline = next_kind(&mut client, false).await;
    assert_eq!(
        (headline["kind"].as_str(), headline["topic"].as_str()),
        (Some("headline"), Some("tech"))
    );
    client.send("bye\n").await;
    assert_eq!(client.recv_close_after_text().await, 1000);
    service.stop().await;
    gw.stop().await;
}

/// The routes of docs/examples/refract-cluster.toml, the config docker-compose.yml's cluster
/// profile mounts, after checking that the file is valid as it is and in cluster mode.
fn compose_cluster_routes() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/examples/refract-cluster.toml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let settings = refract::Settings::from_toml(&text).expect("refract-cluster.toml is valid");
    assert_eq!(settings.redis.mode, refract::config::RedisMode::Cluster);
    let start = text
        .find("[routes.")
        .expect("the cluster example has routes");
    text[start..].to_string()
}

/// The `[redis]` keys of a gateway in cluster mode, seeded with every node of `cluster`.
fn cluster_keys(cluster: &Cluster) -> String {
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("\"{s}\"")).collect();
    format!("mode = \"cluster\"\nnodes = [{}]", seeds.join(", "))
}

#[tokio::test]
async fn the_python_quotes_example_serves_the_example_route_through_a_cluster() {
    let cluster = Cluster::start(3).await;
    let seeds = cluster.seeds().join(",");
    let service = Example::start(
        "quotes_service.py",
        &["--cluster", &seeds, "--interval", "0.2"],
        "quotes_service ready",
    )
    .await;

    // A node whose response channel is owned by another master than the request channel, so
    // every request and its reply cross two shards.
    let request_owner = cluster.owner_of("input").await;
    let mut node_id = String::new();
    for n in 0.. {
        node_id = format!("quotes-{n}");
        let owner = cluster
            .owner_of(&format!("refract.responses.{node_id}"))
            .await;
        if owner != request_owner {
            break;
        }
    }
    let routes = compose_cluster_routes();
    let gw = Gateway::start_node(&node_id, &cluster_keys(&cluster), &routes, "").await;
    assert_ne!(
        cluster.owner_of(&gw.response_channel()).await,
        request_owner
    );
    gw.wait_ready().await;

    let mut client = gw.ws("/quotes").await;
    let welcome = next_kind(&mut client, true).await;
    assert_eq!(welcome["kind"], "welcome");

    client.send("ACME").await;
    let quote = next_kind(&mut client, true).await;
    assert_eq!(
        (quote["kind"].as_str(), quote["symbol"].as_str()),
        (Some("quote"), Some("ACME"))
    );
    assert!(quote["price"].is_number());

    client.send("chart GLOBEX").await;
    let chart = next_kind(&mut client, true).await;
    assert_eq!(chart["kind"], "chart");
    assert_eq!(chart["points"].as_array().unwrap().len(), 5);

    // Ticks come on the service's own timer, SPUBLISHed to the gateway's response channel.
    loop {
        if next_kind(&mut client, false).await["kind"] == "tick" {
            break;
        }
    }

    client.send("bye").await;
    assert_eq!(next_kind(&mut client, true).await["kind"], "bye");
    assert_eq!(client.recv_close_after_text().await, 1000);
    service.stop().await;
    gw.stop().await;
}

/// The README's tour as typed, with the client it names: `refract client` on `/quotes` and
/// `/news` against both examples (lines go out as typed, answers come back on stdout).
#[tokio::test]
async fn the_readme_tour_works_in_refract_client() {
    use std::process::Stdio;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

    let redis = Redis::start().await;
    let url = redis.url();
    let quotes = Example::start(
        "quotes_service.py",
        &["--redis-url", &url],
        "quotes_service ready",
    )
    .await;
    let port = free_port();
    let news = Example::start(
        "news_service.py",
        &["--port", &port.to_string()],
        "news_service ready",
    )
    .await;
    let gw = Gateway::start(&redis, &example_routes(port)).await;
    // Types `lines` into `refract client` on `path`, waiting after each for an answer whose
    // `kind` is the one given; returns the client's exit status once its input ends.
    let tour = |path: &'static str, steps: Vec<(&'static str, &'static str)>| {
        let url = format!("ws://{}{path}", gw.addr);
        async move {
            let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_refract"))
                .arg("client")
                .arg(url)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
            for (line, kind) in steps {
                stdin.write_all(line.as_bytes()).await.unwrap();
                loop {
                    let text = tokio::time::timeout(WAIT, out.next_line())
                        .await
                        .expect("an answer in time")
                        .unwrap()
                        .unwrap_or_else(|| panic!("{path}: output ended waiting for {kind}"));
                    let v: Value = serde_json::from_str(&text).unwrap();
                    if v["kind"] == kind {
                        break;
                    }
                }
            }
            drop(stdin);
            tokio::time::timeout(WAIT, child.wait())
                .await
                .unwrap()
                .unwrap()
        }
    };
    let quotes_tour = vec![
        ("", "welcome"),
        ("ACME\n", "quote"),
        ("chart ACME\n", "chart"),
        ("bye\n", "bye"),
    ];
    assert!(tour("/quotes", quotes_tour).await.success());
    let news_tour = vec![("", "welcome"), ("tech\n", "following"), ("", "headline")];
    assert!(tour("/news", news_tour).await.success());
    quotes.stop().await;
    news.stop().await;
    gw.stop().await;
}
