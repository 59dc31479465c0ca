//! Mass disconnect: N Phoenix sockets join one topic, then all close at once; timed from the
//! first close to the gateway's `refract_channels_joined` gauge back to 0 and (with presence on)
//! the topic's presence hash in Redis empty.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::SinkExt;
use redis::AsyncCommands;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::{chfanout, common, idle};

#[derive(clap::Args)]
pub struct Args {
    /// The gateway's HTTP address (token endpoint, socket and /metrics).
    #[arg(long)]
    addr: String,
    #[arg(long, default_value_t = 10_000)]
    conns: usize,
    /// The gateway's Redis (standalone): the presence hash is read there.
    #[arg(long)]
    redis: String,
    #[arg(long, default_value = "mass")]
    topic: String,
    /// The gateway tracks presence: wait for, and then time, the presence hash too.
    #[arg(long)]
    presence: bool,
    /// How long the cleanup may take before the run fails, in seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

async fn joined(addr: &str) -> anyhow::Result<f64> {
    idle::scrape(&format!("{addr}/metrics"), "refract_channels_joined ")
        .await
        .context("reading the gateway's /metrics")
}

async fn hlen(redis: &mut redis::aio::MultiplexedConnection, hash: &str) -> anyhow::Result<usize> {
    redis.hlen(hash).await.context("HLEN of the presence hash")
}

pub async fn run(a: Args) -> anyhow::Result<Value> {
    let tok = chfanout::token(&a.addr, &a.topic).await?;
    let url = format!("ws://{}/socket/websocket?vsn=2.0.0", a.addr);
    let limit = Arc::new(Semaphore::new(200));
    let (close_tx, close_rx) = watch::channel(false);
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel::<Instant>();
    let started = Instant::now();
    let mut joins = Vec::with_capacity(a.conns);
    for _ in 0..a.conns {
        let (url, limit, tok, topic) = (url.clone(), limit.clone(), tok.clone(), a.topic.clone());
        let (mut close, closed) = (close_rx.clone(), closed_tx.clone());
        joins.push(tokio::spawn(async move {
            let mut ws = common::connect_limited(&url, &limit, Duration::from_secs(30)).await?;
            let join = json!(["1", "1", topic, "phx_join", {"token": tok}]).to_string();
            ws.send(Message::text(join)).await?;
            loop {
                let text = common::next_text(&mut ws)
                    .await?
                    .context("closed while joining")?;
                if text.contains("phx_reply") {
                    if !text.contains("\"ok\"") {
                        bail!("join refused: {text}");
                    }
                    break;
                }
            }
            // Joined: drain what arrives (presence diffs) until told to close, then close and
            // read to the end of the closing handshake.
            tokio::spawn(async move {
                tokio::select! {
                    _ = async { while let Ok(Some(_)) = common::next_text(&mut ws).await {} } => {}
                    _ = async { let _ = close.wait_for(|c| *c).await; } => {
                        let _ = ws.close(None).await;
                        while let Ok(Some(_)) = common::next_text(&mut ws).await {}
                    }
                }
                let _ = closed.send(Instant::now());
            });
            anyhow::Ok(())
        }));
    }
    drop(closed_tx);
    for j in joins {
        j.await??;
    }
    let joined_in = started.elapsed();

    let client = redis::Client::open(a.redis.as_str())?;
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .context("connecting to Redis")?;
    let hash = format!("refract:presence:{}", a.topic);
    // Everything in place before the close: the gauge (and the hash) at N.
    let want = a.conns as f64;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut gauge, mut entries) = (0.0, 0usize);
    while Instant::now() < deadline {
        gauge = joined(&a.addr).await?;
        entries = hlen(&mut redis, &hash).await?;
        if gauge == want && (!a.presence || entries == a.conns) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if gauge != want || (a.presence && entries != a.conns) {
        bail!("before the close: {gauge} joined, {entries} presence entries, not {want}");
    }

    let t0 = Instant::now();
    close_tx.send_replace(true);
    let deadline = t0 + Duration::from_secs(a.timeout);
    let (mut members_clean, mut presence_clean) = (None, None);
    let (mut closed, mut last_closed) = (0usize, t0);
    while members_clean.is_none() || presence_clean.is_none() {
        if Instant::now() > deadline {
            bail!(
                "not clean after {} s: {} joined, {} presence entries",
                a.timeout,
                joined(&a.addr).await?,
                hlen(&mut redis, &hash).await?
            );
        }
        while let Ok(at) = closed_rx.try_recv() {
            closed += 1;
            last_closed = last_closed.max(at);
        }
        if members_clean.is_none() && joined(&a.addr).await? == 0.0 {
            members_clean = Some(t0.elapsed());
        }
        if presence_clean.is_none() && (!a.presence || hlen(&mut redis, &hash).await? == 0) {
            presence_clean = Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (members, presence) = (members_clean.unwrap(), presence_clean.unwrap());
    while let Ok(Some(at)) = tokio::time::timeout(Duration::from_secs(5), closed_rx.recv()).await {
        closed += 1;
        last_closed = last_closed.max(at);
    }
    Ok(json!({
        "scenario": "mass_disconnect",
        "conns": a.conns,
        "presence": a.presence,
        "joined_in_ms": common::millis(joined_in),
        "presence_entries_before": entries,
        "members_clean_ms": common::millis(members),
        "presence_clean_ms": a.presence.then(|| common::millis(presence)),
        "clean_ms": common::millis(members.max(presence)),
        "clients_closed": closed,
        "clients_closed_ms": common::millis(last_closed - t0),
    }))
}
