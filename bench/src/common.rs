//! What the scenarios share: the Prism JSON shapes, client payloads, WebSocket connects,
//! latency summaries and process memory.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An event as a Prism gateway publishes it to services (the seed's field names and order).
#[derive(Serialize)]
pub struct EventOut<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub route: &'a str,
    #[serde(rename = "remoteAddress")]
    pub remote_address: &'a str,
    #[serde(rename = "remotePort")]
    pub remote_port: u16,
    pub message: &'a str,
    #[serde(rename = "responseChannel")]
    pub response_channel: &'a str,
}

/// The fields of an event a service needs; anything else is ignored.
#[derive(Deserialize)]
pub struct EventIn<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub route: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub message: Option<Cow<'a, str>>,
    #[serde(default)]
    pub binary: bool,
    #[serde(rename = "responseChannel", borrow, default)]
    pub response_channel: Option<Cow<'a, str>>,
}

/// A service's answer to one client.
#[derive(Serialize)]
pub struct ReplyOut<'a> {
    pub id: &'a str,
    pub service: &'a str,
    pub message: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub binary: bool,
}

#[derive(Deserialize)]
pub struct ReplyIn<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow)]
    pub message: Cow<'a, str>,
}

/// A 22-character id, the same length as refract's connection ids, so JSON sizes match.
pub fn random_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..22)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// The text a virtual client sends: unique per client and sequence number, padded to `size`.
pub fn payload(client: usize, seq: u64, size: usize) -> String {
    let mut s = format!("{client}:{seq}:");
    while s.len() < size {
        s.push('x');
    }
    s
}

/// Opens one WebSocket with small buffers (thousands are held at once) and Nagle off.
pub async fn connect(url: &str) -> anyhow::Result<Ws> {
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    Ok(ws)
}

/// Connects, at most `concurrency` handshakes at a time (a burst of SYNs larger than the
/// listen backlog only measures retransmission timers).
pub async fn connect_limited(
    url: &str,
    limit: &Arc<Semaphore>,
    timeout: Duration,
) -> anyhow::Result<Ws> {
    let _permit = limit.acquire().await?;
    match tokio::time::timeout(timeout, connect(url)).await {
        Ok(r) => r,
        Err(_) => bail!("connect timed out after {timeout:?}"),
    }
}

/// Reads until a text frame arrives; `None` when the connection ends.
pub async fn next_text(ws: &mut Ws) -> anyhow::Result<Option<String>> {
    while let Some(frame) = ws.next().await {
        match frame? {
            Message::Text(t) => return Ok(Some(t.as_str().to_owned())),
            Message::Close(_) => return Ok(None),
            _ => {}
        }
    }
    Ok(None)
}

pub fn histogram() -> Histogram<u64> {
    // Microseconds, 1 us to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

#[derive(Serialize)]
pub struct Latency {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

pub fn summarize(h: &Histogram<u64>) -> Latency {
    Latency {
        count: h.len(),
        mean_us: (h.mean() * 10.0).round() / 10.0,
        p50_us: h.value_at_quantile(0.50),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
    }
}

/// Memory of a process from `/proc/<pid>/status`, in KiB.
#[derive(Serialize, Clone, Copy, Default)]
pub struct Rss {
    pub vm_rss_kib: u64,
    pub rss_anon_kib: u64,
    pub rss_file_kib: u64,
}

pub fn rss(pid: u32) -> anyhow::Result<Rss> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Ok(Rss {
        vm_rss_kib: field("VmRSS:"),
        rss_anon_kib: field("RssAnon:"),
        rss_file_kib: field("RssFile:"),
    })
}

/// Subscribes to `channel` and returns the message stream.
pub async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> anyhow::Result<redis::aio::PubSubStream> {
    let mut pubsub = client
        .get_async_pubsub()
        .await
        .context("connecting to Redis")?;
    pubsub.subscribe(channel).await.context("subscribing")?;
    Ok(pubsub.into_on_message())
}

pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    // Linux reports clock ticks of 1/100 s (USER_HZ) on every architecture it supports.
    Some((utime + stime) / 100.0)
}

/// Runs a shell command to completion (e.g. `callgrind_control -z <pid>`), so that a run can
/// bracket exactly the phase it measures; a command that fails fails the run.
pub async fn hook(cmd: Option<&str>) -> anyhow::Result<()> {
    let Some(cmd) = cmd else { return Ok(()) };
    let owned = cmd.to_owned();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(&owned)
            .stdout(std::process::Stdio::null())
            .status()
    })
    .await?
    .with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
