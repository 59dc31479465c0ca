//! Config reload under load: N clients on a route that the reload removes, a few on a route that
//! it keeps (and changes), then the config file is rewritten and the gateway sent SIGHUP. Timed
//! from the signal to (a) every client of the removed route holding its 1001 close frame, (b) the
//! removed route's service having heard every `disconnect`, and (c) the gateway's
//! `refract_config_reloads_total{result="ok"}` counting the reload; then the kept route's clients
//! are checked: none closed, each still answered through the response channel, each still heard.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{self, EventIn, ReplyOut};

#[derive(clap::Args)]
pub struct Args {
    /// The gateway's HTTP address (its routes and /metrics).
    #[arg(long)]
    addr: String,
    /// The gateway's process id: SIGHUP goes there (and its CPU is read from /proc).
    #[arg(long)]
    gateway_pid: u32,
    /// The config file the gateway runs with; the reload replaces it.
    #[arg(long)]
    config: std::path::PathBuf,
    /// The config to put in its place before the signal: `--remove` gone, `--keep` still there.
    #[arg(long)]
    new_config: std::path::PathBuf,
    /// The gateway's Redis (standalone): both routes' request and response channels.
    #[arg(long)]
    redis: String,
    /// Clients on the route the reload removes.
    #[arg(long, default_value_t = 5_000)]
    conns: usize,
    /// Clients on the route the reload keeps.
    #[arg(long, default_value_t = 100)]
    keep_conns: usize,
    #[arg(long, default_value = "/gone")]
    remove: String,
    #[arg(long, default_value = "gone.in")]
    remove_channel: String,
    #[arg(long, default_value = "/keep")]
    keep: String,
    #[arg(long, default_value = "keep.in")]
    keep_channel: String,
    /// The kept route's service, named in the replies sent to its clients.
    #[arg(long, default_value = "keep")]
    keep_service: String,
    /// The gateway's log (its stderr): the time of its `config reloaded` line, written just
    /// after the counter moves, times (c) more finely than /metrics (which a busy gateway
    /// answers late). Optional.
    #[arg(long)]
    gateway_log: Option<std::path::PathBuf>,
    /// Handshakes at once: under the gateway's listen backlog (128, tokio's), so that no SYN
    /// waits out a 1 s retransmission (the connects are not what is measured).
    #[arg(long, default_value_t = 100)]
    connect_concurrency: usize,
    /// How long each phase (connecting, the reload, the checks after it) may take, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

/// What the test service, subscribed to both request channels, has heard.
#[derive(Default)]
struct Heard {
    /// The removed route's connections announced.
    gone_connects: HashSet<String>,
    /// Its disconnects: distinct ids, with when each first arrived, and repeats.
    gone_disconnects: HashSet<String>,
    gone_disconnect_times: Vec<Instant>,
    gone_disconnect_repeats: usize,
    /// The kept route's connections, with their response channel.
    keep_connects: Vec<(String, String)>,
    keep_disconnects: usize,
    /// `message` events from the kept route's clients, by text prefix.
    keep_messages: BTreeMap<String, usize>,
}

/// How one client of the removed route ended: its close frame's code (`None`: a close frame
/// without one), or the connection ending without a close frame (`ended`).
struct Ended {
    at: Instant,
    code: Option<u16>,
    close_frame: bool,
}

/// What a client of the kept route reports.
enum KeepSaw {
    Reply(String),
    Ended,
}

pub async fn run(a: Args, nofile: u64) -> anyhow::Result<Value> {
    // Both sides of every socket are on this machine, but each process has its own limit.
    let sockets = (a.conns + a.keep_conns + 64) as u64;
    if sockets > nofile {
        bail!(
            "{} + {} sockets need about {sockets} open files, the limit is {nofile}",
            a.conns,
            a.keep_conns
        );
    }
    let phase = Duration::from_secs(a.timeout);
    let metrics = format!("{}/metrics", a.addr);
    let gone_gauge = format!("refract_connections{{route=\"{}\"}} ", a.remove);
    let keep_gauge = format!("refract_connections{{route=\"{}\"}} ", a.keep);
    let reload_ok = "refract_config_reloads_total{result=\"ok\"} ";
    let reload_err = "refract_config_reloads_total{result=\"error\"} ";
    let removed_closed = format!(
        "refract_connections_closed_total{{route=\"{}\",reason=\"route_removed\"}} ",
        a.remove
    );

    // The service: subscribed to both request channels before anyone connects.
    let client = redis::Client::open(a.redis.as_str())?;
    let mut pubsub = client
        .get_async_pubsub()
        .await
        .context("connecting to Redis")?;
    pubsub
        .subscribe(&[a.remove_channel.as_str(), a.keep_channel.as_str()])
        .await
        .context("subscribing")?;
    let heard = Arc::new(Mutex::new(Heard::default()));
    {
        let (heard, remove, keep) = (heard.clone(), a.remove.clone(), a.keep.clone());
        let mut events = pubsub.into_on_message();
        tokio::spawn(async move {
            while let Some(msg) = events.next().await {
                let at = Instant::now();
                let Ok(e) = serde_json::from_slice::<EventIn<'_>>(msg.get_payload_bytes()) else {
                    continue;
                };
                let route = e.route.as_deref().unwrap_or_default();
                let mut h = heard.lock().unwrap();
                match (e.kind.as_ref(), route) {
                    ("connect", r) if r == remove => {
                        h.gone_connects.insert(e.id.into_owned());
                    }
                    ("disconnect", r) if r == remove => {
                        if h.gone_disconnects.insert(e.id.into_owned()) {
                            h.gone_disconnect_times.push(at);
                        } else {
                            h.gone_disconnect_repeats += 1;
                        }
                    }
                    ("connect", r) if r == keep => {
                        let rc = e.response_channel.unwrap_or_default().into_owned();
                        h.keep_connects.push((e.id.into_owned(), rc));
                    }
                    ("disconnect", r) if r == keep => h.keep_disconnects += 1,
                    ("message", r) if r == keep => {
                        let text = e.message.unwrap_or_default();
                        let prefix = text.split(':').next().unwrap_or_default().to_owned();
                        *h.keep_messages.entry(prefix).or_default() += 1;
                    }
                    _ => {}
                }
            }
        });
    }
    let reloads_before = scrape(&metrics, &[reload_ok, reload_err]).await?;

    // The kept route's clients: report replies and their end; send one text when told to.
    let limit = Arc::new(Semaphore::new(a.connect_concurrency));
    let connect_timeout = Duration::from_secs(30);
    let url = |path: &str| format!("ws://{}{path}", a.addr);
    let (keep_tx, mut keep_rx) = mpsc::unbounded_channel::<KeepSaw>();
    let (send_tx, send_rx) = watch::channel(None::<String>);
    let started = Instant::now();
    let mut connects = Vec::with_capacity(a.keep_conns + a.conns);
    for i in 0..a.keep_conns {
        let (url, limit, saw, mut send) = (
            url(&a.keep),
            limit.clone(),
            keep_tx.clone(),
            send_rx.clone(),
        );
        connects.push(tokio::spawn(async move {
            let mut ws = common::connect_limited(&url, &limit, connect_timeout).await?;
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        frame = ws.next() => match frame {
                            Some(Ok(Message::Text(t))) => {
                                let _ = saw.send(KeepSaw::Reply(t.as_str().to_owned()));
                            }
                            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                            Some(Ok(_)) => {}
                        },
                        Ok(()) = send.changed() => {
                            let text = send.borrow_and_update().clone();
                            if let Some(prefix) = text {
                                let _ = ws.send(Message::text(format!("{prefix}:{i}"))).await;
                            }
                        }
                    }
                }
                let _ = saw.send(KeepSaw::Ended);
            });
            anyhow::Ok(())
        }));
    }
    // The removed route's clients: each reports how it ended.
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<Ended>();
    for _ in 0..a.conns {
        let (url, limit, ended) = (url(&a.remove), limit.clone(), ended_tx.clone());
        connects.push(tokio::spawn(async move {
            let mut ws = common::connect_limited(&url, &limit, connect_timeout).await?;
            tokio::spawn(async move {
                let (mut code, mut close_frame, mut at) = (None, false, None);
                while let Some(frame) = ws.next().await {
                    match frame {
                        Ok(Message::Close(c)) => {
                            // The first close frame is the gateway's; read on to the handshake's end.
                            if !close_frame {
                                at = Some(Instant::now());
                                code = c.map(|c| u16::from(c.code));
                                close_frame = true;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                let at = at.unwrap_or_else(Instant::now);
                let _ = ended.send(Ended {
                    at,
                    code,
                    close_frame,
                });
            });
            anyhow::Ok(())
        }));
    }
    drop((keep_tx, ended_tx));
    let mut connect_errors = Vec::new();
    for c in connects {
        if let Err(e) = c.await? {
            connect_errors.push(format!("{e:#}"));
        }
    }
    if !connect_errors.is_empty() {
        bail!(
            "{} connects failed, the first: {}",
            connect_errors.len(),
            connect_errors[0]
        );
    }
    let connected_in = started.elapsed();

    // Everything in place before the signal: both gauges, and every connect heard.
    let deadline = Instant::now() + phase;
    let (want_gone, want_keep) = (a.conns as f64, a.keep_conns as f64);
    loop {
        let g = scrape(&metrics, &[&gone_gauge, &keep_gauge]).await?;
        let (gc, kc) = {
            let h = heard.lock().unwrap();
            (h.gone_connects.len(), h.keep_connects.len())
        };
        if g[0] == want_gone && g[1] == want_keep && gc == a.conns && kc == a.keep_conns {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "before the reload: gauges {} and {} (want {want_gone} and {want_keep}), connects heard {gc} and {kc}",
                g[0],
                g[1]
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready_in = started.elapsed();
    let keep_targets = heard.lock().unwrap().keep_connects.clone();
    let mut publisher = client.get_multiplexed_async_connection().await?;
    // The kept route answers before the reload, so that its answers after it mean something.
    let before = keep_round(
        &mut publisher,
        &keep_targets,
        &a.keep_service,
        "before",
        &mut keep_rx,
        phase,
    )
    .await?;

    // The reload: the new file in place (whole, by rename), then the signal.
    let text = std::fs::read(&a.new_config)
        .with_context(|| format!("reading {}", a.new_config.display()))?;
    let staged = a.config.with_extension("reload-new");
    std::fs::write(&staged, text).with_context(|| format!("writing {}", staged.display()))?;
    std::fs::rename(&staged, &a.config)
        .with_context(|| format!("replacing {}", a.config.display()))?;
    // The signal without unsafe code (so without kill(2)) and without spawning `kill` after t0
    // (milliseconds): a shell started beforehand waits on its stdin, and on a newline sends
    // SIGHUP with its builtin `kill`, a pipe wake-up after t0.
    let mut killer = std::process::Command::new("sh")
        .args(["-c", "echo ready && read go && kill -HUP \"$1\"", "sh"])
        .arg(a.gateway_pid.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting sh for kill -HUP")?;
    let mut go = killer.stdin.take().context("the shell's stdin")?;
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(killer.stdout.take().context("the shell's stdout")?),
        &mut ready,
    )
    .context("waiting for sh")?;
    let cpu0 = common::cpu_seconds(&a.gateway_pid.to_string());
    let t0 = Instant::now();
    let t0_wall = std::time::SystemTime::now();
    std::io::Write::write_all(&mut go, b"go\n").context("telling sh to send SIGHUP")?;
    // Its exit bounds the signal's delivery from above (the loop below does not wait for it).
    let killed = tokio::task::spawn_blocking(move || killer.wait().map(|s| (s, t0.elapsed())));

    // Until (a), (b) and (c), polling /metrics every 5 ms; the clients and the service stamp
    // their own arrivals, so only (c) and the gauge depend on the polling.
    let deadline = t0 + phase;
    let mut ended = Vec::with_capacity(a.conns);
    let (mut counted, mut gauge_zero) = (None, None);
    // The counter moved after the start of the last scrape that did not see it, and before the
    // end of the first that did.
    let (mut not_counted_at, mut counted_after) = (Duration::ZERO, None);
    let mut timed_out = false;
    loop {
        while let Ok(e) = ended_rx.try_recv() {
            ended.push(e);
        }
        let asked = t0.elapsed();
        let m = scrape(&metrics, &[reload_ok, &gone_gauge]).await?;
        let at = t0.elapsed();
        if counted.is_none() {
            if m[0] > reloads_before[0] {
                counted = Some(at);
                counted_after = Some(not_counted_at);
            } else {
                not_counted_at = asked;
            }
        }
        if gauge_zero.is_none() && m[1] == 0.0 {
            gauge_zero = Some(at);
        }
        let disconnects = heard.lock().unwrap().gone_disconnects.len();
        if ended.len() == a.conns
            && disconnects == a.conns
            && counted.is_some()
            && gauge_zero.is_some()
        {
            break;
        }
        if Instant::now() > deadline {
            timed_out = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cpu1 = common::cpu_seconds(&a.gateway_pid.to_string());
    let settled = t0.elapsed();
    let (status, signal_sent) = killed.await?.context("waiting for sh")?;
    if !status.success() {
        bail!("kill -HUP {} failed: {status}", a.gateway_pid);
    }

    let logged = match &a.gateway_log {
        Some(path) => logged_reload(path, t0_wall)?,
        None => None,
    };

    // The kept route after the reload: nobody closed, each answered, each heard.
    let after = keep_round(
        &mut publisher,
        &keep_targets,
        &a.keep_service,
        "after",
        &mut keep_rx,
        phase,
    )
    .await?;
    send_tx.send_replace(Some("sent-after".into()));
    let deadline = Instant::now() + phase;
    let sent_heard = loop {
        let n = heard
            .lock()
            .unwrap()
            .keep_messages
            .get("sent-after")
            .copied()
            .unwrap_or(0);
        if n >= a.keep_conns || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let fin = scrape(
        &metrics,
        &[
            reload_ok,
            reload_err,
            &keep_gauge,
            &gone_gauge,
            &removed_closed,
        ],
    )
    .await?;
    while let Ok(e) = ended_rx.try_recv() {
        ended.push(e);
    }
    let mut keep_ended = before.ended + after.ended;
    while let Ok(saw) = keep_rx.try_recv() {
        keep_ended += usize::from(matches!(saw, KeepSaw::Ended));
    }
    let keep_disconnects = heard.lock().unwrap().keep_disconnects;
    // Last (their own connect and disconnect come after the counts above): a new client on the
    // kept route is taken; one on the removed route is refused.
    let fresh_keep = common::connect(&url(&a.keep)).await.is_ok();
    let fresh_gone = match common::connect(&url(&a.remove)).await {
        Ok(_) => "accepted".to_owned(),
        Err(e) => format!("{e:#}"),
    };

    // The figures.
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    let mut close_ms: Vec<f64> = Vec::with_capacity(ended.len());
    let mut without_close = 0;
    for e in &ended {
        if e.close_frame {
            let code = e.code.map_or("none".to_owned(), |c| c.to_string());
            *codes.entry(code).or_default() += 1;
            close_ms.push(common::millis(e.at.saturating_duration_since(t0)));
        } else {
            without_close += 1;
        }
    }
    close_ms.sort_by(f64::total_cmp);
    let closes_1001 = codes.get("1001").copied().unwrap_or(0);
    let h = heard.lock().unwrap();
    let mut disc_ms: Vec<f64> = h
        .gone_disconnect_times
        .iter()
        .map(|at| common::millis(at.saturating_duration_since(t0)))
        .collect();
    disc_ms.sort_by(f64::total_cmp);
    let pct =
        |v: &[f64], q: f64| (!v.is_empty()).then(|| v[((v.len() - 1) as f64 * q).round() as usize]);
    let all_closed = closes_1001 == a.conns;
    let all_heard = h.gone_disconnects.len() == a.conns;
    let keep_ok = keep_ended == 0
        && after.replies == a.keep_conns
        && sent_heard == a.keep_conns
        && keep_disconnects == 0
        && fin[2] == want_keep
        && fresh_keep;
    let done = [
        all_closed.then(|| close_ms.last().copied()).flatten(),
        all_heard.then(|| disc_ms.last().copied()).flatten(),
        logged.or(counted.map(common::millis)),
    ];
    let all_done = done
        .iter()
        .all(Option::is_some)
        .then(|| done.iter().flatten().copied().fold(0.0, f64::max));
    let gateway_cpu = cpu0
        .zip(cpu1)
        .map(|(a, b)| ((b - a) * 100.0).round() / 100.0);
    let ok = all_closed && all_heard && counted.is_some() && keep_ok && !timed_out;
    let mut out = json!({
        "scenario": "reload",
        "conns": a.conns,
        "keep_conns": a.keep_conns,
        "connected_ms": common::millis(connected_in),
        "ready_ms": common::millis(ready_in),
        "signal_ms": common::millis(signal_sent),
        "ok": ok,
        "timed_out": timed_out,
        "settled_ms": common::millis(settled),
        "all_done_ms": all_done,
        "gateway_cpu_reload_s": gateway_cpu,
    });
    // (a) the removed route's clients.
    let clients = json!({
        "clients_ended": ended.len(),
        "close_codes": codes,
        "ended_without_close_frame": without_close,
        "first_close_ms": close_ms.first(),
        "p50_close_ms": pct(&close_ms, 0.5),
        "p99_close_ms": pct(&close_ms, 0.99),
        "last_close_ms": close_ms.last(),
    });
    // (b) what the service heard.
    let service = json!({
        "connects_heard": h.gone_connects.len(),
        "disconnects_heard": h.gone_disconnects.len(),
        "disconnect_repeats": h.gone_disconnect_repeats,
        "first_disconnect_ms": disc_ms.first(),
        "p50_disconnect_ms": pct(&disc_ms, 0.5),
        "last_disconnect_ms": disc_ms.last(),
    });
    // (c) the gateway's own account.
    let gateway = json!({
        "reload_counted_ms": counted.map(common::millis),
        "reload_counted_not_before_ms": counted_after.map(common::millis),
        "reload_logged_ms": logged,
        "gone_gauge_zero_ms": gauge_zero.map(common::millis),
        "reloads_ok": [reloads_before[0], fin[0]],
        "reloads_error": [reloads_before[1], fin[1]],
        "closed_route_removed": fin[4],
        "gone_gauge_after": fin[3],
        "fresh_connect_removed_route": fresh_gone,
    });
    // The kept route.
    let keep = json!({
        "replies_before": before.replies,
        "reply_before_ms": before.last_ms,
        "closed": keep_ended,
        "replies_after": after.replies,
        "reply_after_ms": after.last_ms,
        "sent_after_heard": sent_heard,
        "disconnects_heard": keep_disconnects,
        "gauge_after": fin[2],
        "fresh_connect": fresh_keep,
    });
    let obj = out.as_object_mut().expect("an object");
    for part in [clients, service, gateway] {
        if let Value::Object(m) = part {
            obj.extend(m);
        }
    }
    obj.insert("keep".into(), keep);
    Ok(out)
}

/// What one round of replies to the kept route's clients came to.
struct KeepRound {
    replies: usize,
    last_ms: Option<f64>,
    ended: usize,
}

/// Publishes one reply to each kept client, by id, and waits for all of them to arrive.
async fn keep_round(
    publisher: &mut redis::aio::MultiplexedConnection,
    targets: &[(String, String)],
    service: &str,
    tag: &str,
    saw: &mut mpsc::UnboundedReceiver<KeepSaw>,
    timeout: Duration,
) -> anyhow::Result<KeepRound> {
    let mut pipe = redis::pipe();
    for (id, channel) in targets {
        let text = format!("{tag}:{id}");
        let reply = serde_json::to_vec(&ReplyOut {
            id,
            service,
            message: &text,
            binary: false,
        })?;
        pipe.publish(channel, reply).ignore();
    }
    let t0 = Instant::now();
    pipe.query_async::<()>(publisher)
        .await
        .context("publishing replies")?;
    let (mut replies, mut ended, mut last) = (0, 0, None);
    let deadline = t0 + timeout;
    while replies < targets.len() {
        let Ok(Some(s)) = tokio::time::timeout_at(deadline.into(), saw.recv()).await else {
            break;
        };
        match s {
            KeepSaw::Reply(t) if t.starts_with(&format!("{tag}:")) => {
                replies += 1;
                last = Some(t0.elapsed());
            }
            KeepSaw::Reply(_) => {}
            KeepSaw::Ended => ended += 1,
        }
    }
    Ok(KeepRound {
        replies,
        last_ms: last.map(common::millis),
        ended,
    })
}

/// Reads /metrics once and sums the samples under each prefix.
async fn scrape(endpoint: &str, prefixes: &[&str]) -> anyhow::Result<Vec<f64>> {
    let (host, path) = endpoint.split_once('/').unwrap_or((endpoint, "metrics"));
    let body = async {
        let mut stream = tokio::net::TcpStream::connect(host).await?;
        let request = format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await?;
        anyhow::Ok(body)
    };
    let body = tokio::time::timeout(Duration::from_secs(5), body)
        .await
        .context("reading the gateway's /metrics timed out")?
        .context("reading the gateway's /metrics")?;
    Ok(prefixes
        .iter()
        .map(|p| {
            body.lines()
                .filter(|l| l.starts_with(p))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        })
        .collect())
}

/// Milliseconds from `t0` to the timestamp of the last `config reloaded` line in the gateway's
/// log (tracing's RFC 3339 UTC, `2026-12-04T01:38:40.759119Z`, at the start of the line).
fn logged_reload(path: &std::path::Path, t0: std::time::SystemTime) -> anyhow::Result<Option<f64>> {
    let log =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let Some(line) = log.lines().rev().find(|l| l.contains("config reloaded:")) else {
        return Ok(None);
    };
    let stamp = line.split_whitespace().next().unwrap_or_default();
    let at = parse_utc(stamp).with_context(|| format!("the log's timestamp {stamp:?}"))?;
    let t0 = t0.duration_since(std::time::UNIX_EPOCH)?.as_secs_f64();
    Ok(Some(((at - t0) * 1e6).round() / 1e3))
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.fraction]Z`.
fn parse_utc(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.splitn(3, ':');
    let (hh, mm) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    let ss = t.next()?.parse::<f64>().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + hh * 3600.0 + mm * 60.0 + ss)
}
