//! Channels fan-out: N Phoenix sockets join one topic; one `PUBLISH to:<topic>:tick` is timed
//! from the publish to the last socket's frame. With `--sharded` the gateway is in a Redis Cluster
//! and the tick is `SPUBLISH to:{<topic>} tick:<payload>`; with `--burst` each round is that many
//! ticks in one pipeline, enough messages for Redis's CPU per message to be measurable.
//!
//! With `--raw` the server is [`crate::rawfanout`] instead (the fan-out ceiling): no token, no
//! join, and the tick is the frame's text sent on its control connection; the clients and the
//! timing are the same, and so is the text each socket receives.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message;

use crate::common;

#[derive(clap::Args)]
pub struct Args {
    /// The gateway's HTTP address, e.g. 127.0.0.1:8080 (token endpoint and socket).
    #[arg(long)]
    addr: String,
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    #[arg(long)]
    redis: String,
    #[arg(long, default_value = "fan")]
    topic: String,
    /// `--redis` is a seed of a Redis Cluster, and ticks go out as sharded messages.
    #[arg(long)]
    sharded: bool,
    /// Ticks per round, pipelined; a round ends when every socket has all of them. Keep it
    /// below the gateway's `channels.outbound_queue` (1024), or sockets are closed as slow.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    burst: u32,
    /// Pause before each round, in milliseconds.
    #[arg(long, default_value_t = 300)]
    pause_ms: u64,
    /// The fan-out ceiling: `--addr` is a `refract-bench rawfanout` server and this its control
    /// address; `--redis` is not used.
    #[arg(long, value_name = "CONTROL_ADDR")]
    raw: Option<String>,
    /// Shell command run once every socket has joined, before the first round.
    #[arg(long)]
    exec_before: Option<String>,
    /// Shell command run after the last round, before the sockets close.
    #[arg(long)]
    exec_after: Option<String>,
}

/// What a reader reports instead of a round when its socket closes: a round can no longer
/// complete, and waiting for its deadline would only hide why.
const CLOSED: u64 = u64::MAX;

/// The publishing connection: to the server, or to the cluster node owning the topic's slot.
enum Publisher {
    Server(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
    /// The ceiling's control connection: each tick is the frame's text, length-prefixed.
    Raw(tokio::net::TcpStream),
}

impl Publisher {
    async fn connect(a: &Args) -> anyhow::Result<Self> {
        Ok(if let Some(control) = &a.raw {
            let s = tokio::net::TcpStream::connect(control).await?;
            s.set_nodelay(true)?;
            Self::Raw(s)
        } else if a.sharded {
            let client = redis::cluster::ClusterClient::new(vec![a.redis.as_str()])?;
            Self::Cluster(client.get_async_connection().await?)
        } else {
            let client = redis::Client::open(a.redis.as_str())?;
            Self::Server(client.get_multiplexed_async_connection().await?)
        })
    }

    /// One round's ticks as one pipeline (all to one channel, hence one slot).
    async fn ticks(&mut self, topic: &str, payload: &str, burst: u32) -> anyhow::Result<()> {
        if let Self::Raw(s) = self {
            // What refract sends for `PUBLISH to:<topic>:tick <payload>` (phoenix::push).
            let text = format!("[null,null,{},\"tick\",{payload}]", json!(topic));
            let mut buf = Vec::new();
            for _ in 0..burst {
                buf.extend_from_slice(&u32::try_from(text.len())?.to_be_bytes());
                buf.extend_from_slice(text.as_bytes());
            }
            return Ok(s.write_all(&buf).await?);
        }
        let mut pipe = redis::pipe();
        for _ in 0..burst {
            match self {
                Self::Server(_) => pipe
                    .cmd("PUBLISH")
                    .arg(format!("to:{topic}:tick"))
                    .arg(payload),
                Self::Raw(_) => unreachable!("handled above"),
                Self::Cluster(_) => pipe
                    .cmd("SPUBLISH")
                    .arg(format!("to:{{{topic}}}"))
                    .arg(format!("tick:{payload}")),
            }
            .ignore();
        }
        match self {
            Self::Server(c) => pipe.query_async::<()>(c).await?,
            Self::Cluster(c) => pipe.query_async::<()>(c).await?,
            Self::Raw(_) => unreachable!("handled above"),
        }
        Ok(())
    }
}

/// `POST /token` (the endpoint must be open) for a token covering the topic.
pub async fn token(addr: &str, topic: &str) -> anyhow::Result<String> {
    let body = json!({"channel": topic, "id": "bench"}).to_string();
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!(
        "POST /token HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    let json = out.split_once("\r\n\r\n").context("no HTTP body")?.1;
    let v: Value = serde_json::from_str(json).context("token answer")?;
    Ok(v["token"].as_str().context("no token")?.to_owned())
}

pub async fn run(a: Args) -> anyhow::Result<Value> {
    let raw = a.raw.is_some();
    let tok = if raw {
        String::new()
    } else {
        token(&a.addr, &a.topic).await?
    };
    let url = format!("ws://{}/socket/websocket?vsn=2.0.0", a.addr);
    let limit = Arc::new(Semaphore::new(200));
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Instant)>();
    let started = Instant::now();
    let mut joins = Vec::with_capacity(a.conns);
    for _ in 0..a.conns {
        let (url, limit, tok, topic, tx) = (
            url.clone(),
            limit.clone(),
            tok.clone(),
            a.topic.clone(),
            tx.clone(),
        );
        joins.push(tokio::spawn(async move {
            let mut ws = common::connect_limited(&url, &limit, Duration::from_secs(30)).await?;
            if !raw {
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
            }
            // Joined: report each tick's round as it arrives.
            tokio::spawn(async move {
                while let Ok(Some(text)) = common::next_text(&mut ws).await {
                    let Ok(v) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    if v[3] == "tick" {
                        let _ = tx.send((v[4]["r"].as_u64().unwrap_or(0), Instant::now()));
                    }
                }
                let _ = tx.send((CLOSED, Instant::now()));
            });
            anyhow::Ok(())
        }));
    }
    for j in joins {
        j.await??;
    }
    let joined_in = started.elapsed();
    let mut publisher = Publisher::connect(&a).await?;
    if let Publisher::Raw(s) = &mut publisher {
        // An empty tick asks the server for its count of sockets: all of them before round 1.
        let mut held = 0;
        for _ in 0..100 {
            let mut n = [0u8; 4];
            s.write_all(&0u32.to_be_bytes()).await?;
            s.read_exact(&mut n).await?;
            held = u32::from_be_bytes(n) as usize;
            if held == a.conns {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if held != a.conns {
            bail!("the raw server holds {held} sockets, not {}", a.conns);
        }
    }
    common::hook(a.exec_before.as_deref()).await?;
    let frames = a.conns * a.burst as usize;
    let mut rounds = Vec::new();
    for r in 1..=u64::from(a.rounds) {
        tokio::time::sleep(Duration::from_millis(a.pause_ms)).await;
        let t0 = Instant::now();
        let payload = json!({"r": r, "pad": "x".repeat(64)}).to_string();
        publisher.ticks(&a.topic, &payload, a.burst).await?;
        let mut got = 0usize;
        let mut last = t0;
        let deadline = t0 + Duration::from_secs(60);
        while got < frames {
            let (round, at) = tokio::time::timeout_at(deadline.into(), rx.recv())
                .await
                .context("fan-out round timed out")?
                .context("readers ended")?;
            if round == CLOSED {
                bail!("a socket closed during round {r} (the gateway closes slow clients)");
            }
            if round == r {
                got += 1;
                last = last.max(at);
            }
        }
        let took = last - t0;
        rounds.push(json!({
            "publish_to_last_ms": common::millis(took),
            "frames_per_s": (frames as f64 / took.as_secs_f64()).round(),
        }));
    }
    common::hook(a.exec_after.as_deref()).await?;
    let mut fps: Vec<f64> = rounds
        .iter()
        .map(|r| r["frames_per_s"].as_f64().unwrap())
        .collect();
    fps.sort_by(|x, y| x.total_cmp(y));
    let mut ms: Vec<f64> = rounds
        .iter()
        .map(|r| r["publish_to_last_ms"].as_f64().unwrap())
        .collect();
    ms.sort_by(|x, y| x.total_cmp(y));
    Ok(json!({
        "scenario": if raw { "raw_fanout" } else { "channels_fanout" },
        "conns": a.conns,
        "sharded": a.sharded,
        "burst": a.burst,
        "published": u64::from(a.rounds) * u64::from(a.burst),
        "joined_in_ms": common::millis(joined_in),
        "median_frames_per_s": fps[fps.len() / 2],
        "median_publish_to_last_ms": ms[ms.len() / 2],
        "rounds": rounds,
    }))
}
