//! The documented example backend (docs/examples/quotes_service.py) against the real gateway,
//! configured from routes.example.toml's routes.

mod common;

use common::example::Example;
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
    client.send("tech").await;
    assert_eq!(next_kind(&mut client, false).await["kind"], "following");
    // Polls carry the last message ("tech"), and each brings the next headline.
    let headline = next_kind(&mut client, false).await;
    assert_eq!(
        (headline["kind"].as_str(), headline["topic"].as_str()),
        (Some("headline"), Some("tech"))
    );
    client.send("bye").await;
    assert_eq!(client.recv_close_after_text().await, 1000);
    service.stop().await;
    gw.stop().await;
}
