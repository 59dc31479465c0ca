//! The ceiling: the echo round trip with no gateway. Virtual clients (tasks) PUBLISH the same
//! `message` events a gateway would, straight to Redis; one subscriber on a fixed response
//! channel routes each reply to its client by id. Same closed loop and window as [`crate::ws`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::AsyncCommands;
use tokio::sync::{mpsc, watch};

use crate::common::{self, EventOut, ReplyIn};
use crate::ws::{ClientResult, REQUEST_TIMEOUT, Window, report};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "redis://127.0.0.1:6380")]
    redis: String,
    /// The echo service's request channel.
    #[arg(long, default_value = "echo.in")]
    channel: String,
    #[arg(long, default_value_t = 100)]
    conns: usize,
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Multiplexed publishing connections (refract's default `redis.publishers` is 2).
    #[arg(long, default_value_t = 2)]
    publishers: usize,
}

pub async fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let setup_start = Instant::now();
    let client = redis::Client::open(args.redis.as_str())?;
    let reply_channel = format!("bench.ceiling.{}", common::random_id());
    let mut replies = common::subscribe(&client, &reply_channel).await?;
    let mut publishers = Vec::with_capacity(args.publishers);
    for _ in 0..args.publishers.max(1) {
        publishers.push(client.get_multiplexed_async_connection().await?);
    }

    let ids: Vec<String> = (0..args.conns).map(|_| common::random_id()).collect();
    let mut inboxes = Vec::with_capacity(args.conns);
    let mut by_id = HashMap::with_capacity(args.conns);
    let mut receivers = Vec::with_capacity(args.conns);
    for (i, id) in ids.iter().enumerate() {
        let (tx, rx) = mpsc::channel::<String>(16);
        inboxes.push(tx);
        receivers.push(rx);
        by_id.insert(id.clone(), i);
    }
    // The one subscriber: decode, find the client by id, hand over the text.
    let router = tokio::spawn(async move {
        let mut unknown = 0u64;
        while let Some(msg) = replies.next().await {
            let Ok(reply) = serde_json::from_slice::<ReplyIn<'_>>(msg.get_payload_bytes()) else {
                unknown += 1;
                continue;
            };
            match by_id.get(reply.id.as_ref()) {
                Some(&i) => {
                    let _ = inboxes[i].try_send(reply.message.into_owned());
                }
                None => unknown += 1,
            }
        }
        unknown
    });

    let (window_tx, window_rx) = watch::channel(None::<Window>);
    let reply_channel: Arc<str> = reply_channel.into();
    let request_channel: Arc<str> = args.channel.as_str().into();
    let mut tasks = Vec::with_capacity(args.conns);
    for (client, (id, mut inbox)) in ids.into_iter().zip(receivers).enumerate() {
        let mut conn = publishers[client % publishers.len()].clone();
        let mut window = window_rx.clone();
        let reply_channel = reply_channel.clone();
        let request_channel = request_channel.clone();
        let size = args.size;
        // A plausible client port, as a gateway would report it.
        let port = 40_000 + (client % 20_000) as u16;
        tasks.push(tokio::spawn(async move {
            let mut result = ClientResult::default();
            let Ok(w) = window.wait_for(Option::is_some).await.map(|w| w.unwrap()) else {
                return result;
            };
            let mut seq = 0u64;
            while Instant::now() < w.end {
                seq += 1;
                let text = common::payload(client, seq, size);
                let sent = Instant::now();
                // The work a gateway does per client frame: encode the event, publish it.
                let event = serde_json::to_vec(&EventOut {
                    id: &id,
                    kind: "message",
                    route: "/echo",
                    remote_address: "127.0.0.1",
                    remote_port: port,
                    message: &text,
                    response_channel: &reply_channel,
                })
                .expect("serializable");
                let publish = conn.publish::<_, _, i64>(&*request_channel, event);
                let wait = async {
                    loop {
                        match inbox.recv().await {
                            Some(t) if t == text => return true,
                            Some(_) => result.stale += 1,
                            None => return false,
                        }
                    }
                };
                let (published, answered) =
                    tokio::join!(publish, tokio::time::timeout(REQUEST_TIMEOUT, wait));
                if let Err(e) = published {
                    result.error = Some(format!("publish: {e}"));
                    return result;
                }
                match answered {
                    Ok(true) => result.record(&w, sent, Instant::now()),
                    Ok(false) => {
                        result.error = Some("router ended".into());
                        return result;
                    }
                    Err(_) => result.timeouts += 1,
                }
            }
            result
        }));
    }
    let setup = setup_start.elapsed();
    let warm_end = Instant::now() + Duration::from_secs_f64(args.warmup);
    window_tx.send_replace(Some(Window {
        warm_end,
        end: warm_end + Duration::from_secs_f64(args.duration),
    }));
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        results.push(t.await?);
    }
    router.abort();
    Ok(report("ceiling", args.conns, args.duration, results, setup))
}
