//! A degraded network to Redis. Redis runs in a network namespace of its own; the gateway (in
//! this process) reaches it through a second namespace that routes between them, and whose
//! `FORWARD` chain impairs the link: a 50 ms delay each way, 5 % loss each way, a 10 s blackhole,
//! and a 300 ms delay each way that is still well inside the gateway's configured timeouts. The
//! test's own service reaches Redis on a clean link of its own, so every impairment is between
//! the gateway and Redis and nowhere else:
//!
//! ```text
//!  gateway 10.213.S.1 ──veth── .2 [router ns: iptables FORWARD] .5 ──veth── .6 ┐ redis-server
//!  service 10.213.S.9 ──────────────────── veth ──────────────────────────── .10 ┘ (redis ns)
//! ```
//!
//! Loss and the blackhole are kernel drops in the router (`-m statistic ... -j DROP`, `-j DROP`),
//! invisible to both TCP stacks. This kernel has no `sch_netem` (`CONFIG_NET_SCH_NETEM` is not
//! set), so the delay is `-j NFQUEUE` with a small stdlib-only Python program in the router that
//! gives each queued packet its verdict 50 ms after it arrived: the packets stay in the kernel,
//! only their release is late, in arrival order.
//!
//! Needs root (CAP_NET_ADMIN), iproute2, iptables and python3. Where namespaces cannot be made
//! each test prints `SKIPPED: ...` and passes, except under CI (`CI` set), where that fails.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::eventually_within;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const ROUTE: &str = r#"
[routes."/stream".services.counter]
type = "redis"
request_channel = "input"
"#;
const SERVICE: &str = "counter";
const REASONS: [&str; 4] = [
    "redis_unavailable",
    "no_subscriber",
    "shutdown",
    "rate_limited",
];
/// Redis's port in its namespace (no other server there, so any port does).
const REDIS_PORT: u16 = 16379;

/// Gives each packet queued to NFQUEUE 0 its ACCEPT verdict `argv[1]` ms after it arrived, in
/// arrival order; prints `ready` once bound. Speaks nfnetlink_queue over a raw netlink socket, so
/// it needs nothing beyond the standard library.
const DELAY_LINE: &str = r#"
import heapq, select, socket, struct, sys, time
delay = float(sys.argv[1]) / 1000
SUBSYS_QUEUE, MSG_PACKET, MSG_VERDICT, MSG_CONFIG = 3, 0, 1, 2
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.bind((0, 0))
def attr(kind, payload):
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * (-n % 4)
def send(msg, family, attrs, flags=1):
    body = struct.pack("=BBH", family, 0, 0) + b"".join(attrs)  # nfgenmsg, queue 0
    s.send(struct.pack("=IHHII", 16 + len(body), SUBSYS_QUEUE << 8 | msg, flags, 0, 0) + body)
def config(attrs):
    send(MSG_CONFIG, socket.AF_INET, attrs, 1 | 4)  # NLM_F_REQUEST | NLM_F_ACK
    data = s.recv(65536)
    if struct.unpack_from("=H", data, 4)[0] == 2 and struct.unpack_from("=i", data, 16)[0]:
        sys.exit("nfqueue config refused: errno %d" % -struct.unpack_from("=i", data, 16)[0])
config([attr(1, struct.pack("!BxH", 1, socket.AF_INET))])  # CMD_BIND
config([attr(2, struct.pack("!IB", 0, 1))])  # PARAMS: COPY_META
config([attr(3, struct.pack("!I", 8192))])  # QUEUE_MAXLEN
print("ready", flush=True)
pending = []
while True:
    wait = max(0, pending[0][0] - time.monotonic()) if pending else None
    if select.select([s], [], [], wait)[0]:
        try:
            data = s.recv(1 << 20)
        except OSError:
            continue  # ENOBUFS: notifications lost; TCP resends those packets
        now, off = time.monotonic(), 0
        while off + 16 <= len(data):
            size, kind = struct.unpack_from("=IH", data, off)
            at = off + 20
            while kind == SUBSYS_QUEUE << 8 | MSG_PACKET and at + 4 <= off + size:
                alen, atype = struct.unpack_from("=HH", data, at)
                if atype & 0x7FFF == 1:  # PACKET_HDR: the packet id
                    heapq.heappush(pending, (now + delay, struct.unpack_from("!I", data, at + 4)[0]))
                at += (alen + 3) & ~3
            off += (size + 3) & ~3
    now = time.monotonic()
    while pending and pending[0][0] <= now:
        _, pid = heapq.heappop(pending)
        send(MSG_VERDICT, socket.AF_UNSPEC, [attr(2, struct.pack("!II", 1, pid))])  # NF_ACCEPT
"#;

/// Runs one command line (split on spaces); its stdout, or the failure with stderr. Each line is
/// printed, so that a run's output shows exactly what made the network.
fn sh(line: &str) -> Result<String, String> {
    eprintln!("netns$ {line}");
    let args: Vec<&str> = line.split_whitespace().collect();
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("`{line}`: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "`{line}` failed ({}): {}",
            out.status,
            stderr.trim()
        ))
    }
}

fn must(line: &str) -> String {
    sh(line).unwrap_or_else(|e| panic!("{e}"))
}

/// The two namespaces, their links, and Redis; all of it removed on drop, panics included.
struct Net {
    router: String,
    redis_ns: String,
    /// The third octet of 10.213.S.0/28, this network's addresses, once claimed.
    s: Option<u8>,
    redis: Option<Child>,
    delay_line: Option<Child>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Net {
    /// The network with Redis answering on both links; `None` (after saying why) where this
    /// process may not make namespaces.
    async fn create() -> Option<Self> {
        let (router, redis_ns) = loop {
            let k = NEXT.fetch_add(1, Ordering::SeqCst);
            let base = format!("refract-{}-{k}", std::process::id());
            match sh(&format!("ip netns add {base}-link")) {
                Ok(_) => break (format!("{base}-link"), format!("{base}-redis")),
                Err(e) if e.contains("File exists") => continue,
                Err(e) => return skip(&e),
            }
        };
        let mut net = Self {
            router,
            redis_ns,
            s: None,
            redis: None,
            delay_line: None,
        };
        must(&format!("ip netns add {}", net.redis_ns));
        net.claim_subnet();
        net.wire();
        net.start_redis().await;
        Some(net)
    }

    /// Picks a free 10.213.S.0/28: creating the host's veth named after S is the atomic claim,
    /// so parallel test processes never share one.
    fn claim_subnet(&mut self) {
        let start = std::process::id() as usize * 7;
        for i in 0..256 {
            let s = ((start + i) % 256) as u8;
            if !must(&format!("ip -o -4 addr show to 10.213.{s}.0/24"))
                .trim()
                .is_empty()
            {
                continue;
            }
            let claim = format!(
                "ip link add rf{s}h type veth peer name rf{s}a netns {}",
                self.router
            );
            if sh(&claim).is_ok() {
                self.s = Some(s);
                return;
            }
        }
        panic!("no free 10.213.S.0/28 subnet for the test network");
    }

    fn addr(&self, host: u8) -> String {
        format!("10.213.{}.{host}", self.s.unwrap())
    }

    fn wire(&self) {
        let s = self.s.unwrap();
        let (router, redis) = (&self.router, &self.redis_ns);
        let a = |host: u8| self.addr(host);
        for line in [
            format!("ip -n {router} link add rf{s}b type veth peer name rf{s}c netns {redis}"),
            format!("ip link add rf{s}s type veth peer name rf{s}d netns {redis}"),
            format!("ip addr add {}/30 dev rf{s}h", a(1)),
            format!("ip addr add {}/30 dev rf{s}s", a(9)),
            format!("ip -n {router} addr add {}/30 dev rf{s}a", a(2)),
            format!("ip -n {router} addr add {}/30 dev rf{s}b", a(5)),
            format!("ip -n {redis} addr add {}/30 dev rf{s}c", a(6)),
            format!("ip -n {redis} addr add {}/30 dev rf{s}d", a(10)),
            format!("ip link set rf{s}h up"),
            format!("ip link set rf{s}s up"),
            format!("ip -n {router} link set rf{s}a up"),
            format!("ip -n {router} link set rf{s}b up"),
            format!("ip -n {router} link set lo up"),
            format!("ip -n {redis} link set rf{s}c up"),
            format!("ip -n {redis} link set rf{s}d up"),
            format!("ip -n {redis} link set lo up"),
            format!("ip netns exec {router} sysctl -qw net.ipv4.ip_forward=1"),
            // The gateway's way to Redis (.6) goes through the router, and so does the way back.
            format!("ip route add {}/30 via {}", a(4), a(2)),
            format!("ip -n {redis} route add {}/30 via {}", a(0), a(5)),
        ] {
            must(&line);
        }
        if let Err(e) = sh(&format!("ip netns exec {router} iptables -S FORWARD")) {
            panic!("iptables is needed for the impairments (apt-get install iptables): {e}");
        }
    }

    async fn start_redis(&mut self) {
        let line = format!(
            "ip netns exec {} redis-server --bind {} {} --port {REDIS_PORT} --appendonly no \
             --protected-mode no --save",
            self.redis_ns,
            self.addr(6),
            self.addr(10)
        );
        eprintln!("netns$ {line} ''");
        let args: Vec<&str> = line.split_whitespace().collect();
        let child = Command::new(args[0])
            .args(&args[1..])
            .arg("")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ip netns exec redis-server");
        self.redis = Some(child);
        for url in [self.gateway_url(), self.service_url()] {
            eventually_within(Duration::from_secs(10), "Redis to answer", || {
                let url = url.clone();
                async move {
                    let client = redis::Client::open(url).ok()?;
                    let mut c = client.get_multiplexed_async_connection().await.ok()?;
                    redis::cmd("PING").query_async::<String>(&mut c).await.ok()
                }
            })
            .await;
        }
    }

    /// Redis as the gateway reaches it: through the router.
    fn gateway_url(&self) -> String {
        format!("redis://{}:{REDIS_PORT}", self.addr(6))
    }

    /// Redis as the services reach it: the clean link.
    fn service_url(&self) -> String {
        format!("redis://{}:{REDIS_PORT}", self.addr(10))
    }

    fn iptables(&self, rule: &str) {
        must(&format!("ip netns exec {} iptables {rule}", self.router));
    }

    /// Packets counted so far by the router's rules: (accepted, dropped).
    fn link_counters(&self) -> (u64, u64) {
        let out = must(&format!(
            "ip netns exec {} iptables -L FORWARD -nvx",
            self.router
        ));
        let count = |target: &str| -> u64 {
            out.lines()
                .filter(|l| l.split_whitespace().nth(2) == Some(target))
                .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
                .sum()
        };
        (count("ACCEPT"), count("DROP"))
    }

    /// Every packet through the router, both ways, is released `ms` late.
    async fn delay(&mut self, ms: u32) {
        let line = format!("ip netns exec {} python3 -u -c", self.router);
        eprintln!("netns$ {line} \"$DELAY_LINE\" {ms}");
        let args: Vec<&str> = line.split_whitespace().collect();
        let mut child = Command::new(args[0])
            .args(&args[1..])
            .args([DELAY_LINE, &ms.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 is needed for the delay line");
        let stdout = child.stdout.take().unwrap();
        self.delay_line = Some(child);
        let ready = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).ok();
            line
        });
        let line = tokio::time::timeout(Duration::from_secs(10), ready)
            .await
            .expect("the delay line to start")
            .unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "the delay line did not start (python3 on PATH? NFQUEUE 0 free?)"
        );
        self.iptables("-A FORWARD -j NFQUEUE --queue-num 0 --queue-bypass");
    }

    /// Each packet through the router, either way, is dropped with probability `p`.
    fn loss(&self, p: f64) {
        self.iptables(&format!(
            "-A FORWARD -m statistic --mode random --probability {p} -j DROP"
        ));
        // Counts what the rule let through (nft chains keep no policy counters).
        self.iptables("-A FORWARD -j ACCEPT");
    }

    /// Every packet through the router is dropped (`true`), or none is any more.
    fn blackhole(&self, on: bool) {
        self.iptables(if on {
            "-I FORWARD 1 -j DROP"
        } else {
            "-D FORWARD -j DROP"
        });
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for mut child in [self.redis.take(), self.delay_line.take()]
            .into_iter()
            .flatten()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The veths go with their namespaces, but the kernel frees those asynchronously: the
        // host's ends are removed here so that the subnet's name is free at once.
        for ns in [&self.router, &self.redis_ns] {
            if let Err(e) = sh(&format!("ip netns del {ns}")) {
                eprintln!("cleanup: {e}");
            }
        }
        if let Some(s) = self.s {
            for dev in [format!("rf{s}h"), format!("rf{s}s")] {
                if sh(&format!("ip link show {dev}")).is_ok() {
                    let _ = sh(&format!("ip link del {dev}"));
                }
            }
        }
    }
}

/// Not allowed to make namespaces: a clear skip, or a failure under CI, which runs as root.
fn skip(why: &str) -> Option<Net> {
    let message = format!(
        "SKIPPED: tests/netns.rs needs to create network namespaces (root or CAP_NET_ADMIN, with \
         iproute2): {why}"
    );
    if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") {
        panic!("{message} (CI runs these as root: they must not be skipped there)");
    }
    eprintln!("{message}");
    None
}

/// What the test's service heard on `input`: each `message` event's text and when.
type Heard = Arc<Mutex<Vec<(String, Instant)>>>;

/// The test playing the route's service over the clean link: it records each message event and,
/// with `echo`, answers it on the event's response channel with the same text.
struct Service {
    heard: Heard,
    /// Echoes that Redis delivered to no subscriber (the gateway was not subscribed then).
    unheard: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Service {
    async fn start(url: &str, echo: bool) -> Self {
        let client = redis::Client::open(url).unwrap();
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub.subscribe("input").await.unwrap();
        let mut replies = client.get_multiplexed_async_connection().await.unwrap();
        let heard: Heard = Default::default();
        let unheard: Arc<Mutex<Vec<String>>> = Default::default();
        let (out, unheard_out) = (heard.clone(), unheard.clone());
        let task = tokio::spawn(async move {
            let mut stream = pubsub.into_on_message();
            while let Some(msg) = stream.next().await {
                let event: Value = serde_json::from_slice(msg.get_payload_bytes()).unwrap();
                if event["type"] != "message" {
                    continue;
                }
                let text = event["message"].as_str().unwrap().to_string();
                heard.lock().unwrap().push((text.clone(), Instant::now()));
                if echo {
                    let id = event["id"].as_str().unwrap();
                    let receivers: i64 = redis::cmd("PUBLISH")
                        .arg(event["responseChannel"].as_str().unwrap())
                        .arg(common::reply(id, SERVICE, &text))
                        .query_async(&mut replies)
                        .await
                        .unwrap();
                    if receivers == 0 {
                        unheard.lock().unwrap().push(text);
                    }
                }
            }
        });
        Self {
            heard: out,
            unheard: unheard_out,
            task,
        }
    }

    fn numbers(&self) -> Vec<u64> {
        let heard = self.heard.lock().unwrap();
        heard.iter().map(|(t, _)| t.parse().unwrap()).collect()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The gateways' logs on stderr, filtered by `NETNS_LOG` (e.g. `refract=debug`); none without it.
fn logs() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("NETNS_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

/// The Redis timing of a gateway. These tests' bounds are made of it, so it is spelled out here
/// rather than taken from the harness (which pins all three).
#[derive(Clone, Copy)]
struct Timing {
    canary_interval: Duration,
    canary_timeout: Duration,
    command_timeout: Duration,
}

/// The harness's timing: a 200 ms canary interval, 1 s for the canary and for commands.
const FAST: Timing = Timing {
    canary_interval: Duration::from_millis(200),
    canary_timeout: Duration::from_secs(1),
    command_timeout: Duration::from_secs(1),
};

/// A gateway run in-process with `refract::run` on port 0, on the router's side of Redis.
struct Node {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), refract::Error>>,
}

impl Node {
    /// Starts with `timing` and more `[redis]` keys, and waits until it is ready.
    async fn start(net: &Net, timing: Timing, redis_keys: &str) -> Self {
        let node = Self::start_unready(net, timing, redis_keys).await;
        eventually_within(
            Duration::from_secs(20),
            "the gateway to be ready",
            || async { (node.get("/readyz").await.0 == 200).then_some(()) },
        )
        .await;
        node
    }

    async fn start_unready(net: &Net, timing: Timing, redis_keys: &str) -> Self {
        logs();
        let ms = |d: Duration| format!("\"{}ms\"", d.as_millis());
        let text = format!(
            "node_id = \"netns-{}\"\n[server]\nshutdown_grace = \"2s\"\n[redis]\nurl = \"{}\"\n\
             canary_interval = {}\ncanary_timeout = {}\ncommand_timeout = {}\n{redis_keys}\n{ROUTE}",
            common::free_port(),
            net.gateway_url(),
            ms(timing.canary_interval),
            ms(timing.canary_timeout),
            ms(timing.command_timeout),
        );
        let settings = refract::Settings::from_toml(&text).expect("valid test config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(refract::run(settings, listener, shutdown.clone()));
        Self {
            addr,
            shutdown,
            task,
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        common::http_request(self.addr, &request).await
    }

    /// An integer sample from /metrics, by the start of its line.
    async fn metric(&self, prefix: &str) -> u64 {
        let (_, body) = self.get("/metrics").await;
        body.lines()
            .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {prefix} not found"))
    }

    async fn ws(&self, path: &str) -> common::Client {
        common::Client::connect(&format!("ws://{}{path}", self.addr)).await
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        tokio::time::timeout(common::WAIT, &mut self.task)
            .await
            .expect("gateway stops in time")
            .unwrap()
            .unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A sample from /metrics that need not be an integer (a gauge in seconds).
async fn gauge(gw: &Node, prefix: &str) -> f64 {
    let (_, body) = gw.get("/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {prefix} not found"))
}

/// The node's non-zero counts of what happened to its Redis link and to replies.
async fn link_story(gw: &Node) -> String {
    let (_, body) = gw.get("/metrics").await;
    let prefixes = [
        "refract_canary_failures",
        "refract_redis_subscriber_connects",
        "refract_redis_resubscriptions",
        "refract_replies_",
        "refract_connections_closed",
    ];
    body.lines()
        .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
        .filter(|l| !l.ends_with(" 0"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Events of `/stream` counted as lost, by reason.
async fn losses(gw: &Node) -> Vec<(&'static str, u64)> {
    let mut out = Vec::new();
    for reason in REASONS {
        let line = format!("refract_events_lost_total{{route=\"/stream\",reason=\"{reason}\"}}");
        out.push((reason, gw.metric(&line).await));
    }
    out
}

fn total(losses: &[(&str, u64)]) -> u64 {
    losses.iter().map(|(_, n)| n).sum()
}

/// Where a stream heard in order is not: each pair of neighbours that repeats or goes back.
fn disorder(numbers: &[u64]) -> Vec<(u64, u64)> {
    let pairs = numbers.windows(2).filter(|w| w[0] >= w[1]);
    pairs.map(|w| (w[0], w[1])).collect()
}

/// The `p`th percentile of sorted samples (nearest rank).
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p).div_ceil(100).max(1) - 1]
}

/// 50 ms each way between the gateway and Redis: sequential round trips (client → gateway →
/// Redis → service → Redis → gateway → client) all complete, in order, each at least the
/// link's 100 ms; a burst in flight at once comes back in order too; the canary still returns
/// in time, so the node never turns not-ready.
#[tokio::test]
async fn with_50ms_delay_round_trips_complete_in_order() {
    const ROUND_TRIPS: usize = 100;
    const BURST: usize = 200;
    let Some(mut net) = Net::create().await else {
        return;
    };
    net.delay(50).await;
    // The delay is really on the gateway's path, and only there.
    let rtt = |url: String| async move {
        let client = redis::Client::open(url).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let t = Instant::now();
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .unwrap();
        t.elapsed()
    };
    let (slow, fast) = (rtt(net.gateway_url()).await, rtt(net.service_url()).await);
    eprintln!("PING round trip: {slow:?} through the router, {fast:?} on the clean link");
    assert!(slow >= Duration::from_millis(100), "{slow:?}");
    assert!(fast < Duration::from_millis(50), "{fast:?}");

    let service = Service::start(&net.service_url(), true).await;
    let gw = Node::start(&net, FAST, "").await;
    let mut client = gw.ws("/stream").await;
    let mut times = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..ROUND_TRIPS {
        let t = Instant::now();
        client.send(&format!("rt-{i}")).await;
        assert_eq!(
            client.recv_text().await,
            format!("rt-{i}"),
            "replies in order"
        );
        times.push(t.elapsed());
    }
    times.sort();
    let (p50, p99) = (percentile(&times, 50), percentile(&times, 99));
    eprintln!(
        "delay 50ms each way: {ROUND_TRIPS} round trips, min {:?} p50 {p50:?} p99 {p99:?} max {:?}",
        times[0],
        times[ROUND_TRIPS - 1]
    );
    assert!(
        times[0] >= Duration::from_millis(100),
        "a round trip crosses the link twice"
    );
    assert!(
        p99 < Duration::from_millis(500),
        "p99 {p99:?}: no stalls or retries at 100 ms RTT"
    );

    // Many in flight at once: the gateway pipelines them, and order still holds.
    let t = Instant::now();
    for i in 0..BURST {
        client.send(&format!("burst-{i}")).await;
    }
    for i in 0..BURST {
        assert_eq!(
            client.recv_text().await,
            format!("burst-{i}"),
            "burst replies in order"
        );
    }
    eprintln!(
        "burst of {BURST} in flight at once: all back in order in {:?}",
        t.elapsed()
    );
    assert_eq!(service.heard.lock().unwrap().len(), ROUND_TRIPS + BURST);

    let canary = gauge(&gw, "refract_canary_round_trip_seconds").await;
    eprintln!("canary round trip {canary:.3}s (canary_timeout 1s)");
    assert!(
        canary >= 0.1,
        "the canary is published across the link and comes back across it"
    );
    assert_eq!(gw.metric("refract_canary_failures_total").await, 0);
    assert_eq!(
        gw.metric("refract_redis_subscriber_connects_total").await,
        1
    );
    assert_eq!(total(&losses(&gw).await), 0);
    gw.stop().await;
}

/// 5 % of packets dropped each way: TCP recovers, so a numbered stream arrives in order, every
/// number is either heard by the service or counted as lost, and the service's echoes come back
/// to the client in order (all of them that Redis handed to the gateway's subscription).
#[tokio::test]
async fn with_5pct_loss_every_message_is_delivered_or_counted() {
    const SENT: u64 = 500;
    let Some(net) = Net::create().await else {
        return;
    };
    let service = Service::start(&net.service_url(), true).await;
    let gw = Node::start(&net, FAST, "").await;
    let mut client = gw.ws("/stream").await;
    net.loss(0.05);
    for n in 0..SENT {
        client.send(&n.to_string()).await;
        tokio::time::sleep(Duration::from_millis(6)).await;
    }
    let (delivered, lost) = eventually_within(
        Duration::from_secs(20),
        "every number delivered or counted as lost",
        || async {
            let delivered = service.numbers().len() as u64;
            let lost = losses(&gw).await;
            (delivered + total(&lost) >= SENT).then_some((delivered, lost))
        },
    )
    .await;
    let heard = service.numbers();
    let unheard: Vec<u64> = service
        .unheard
        .lock()
        .unwrap()
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
    let expected: Vec<u64> = heard
        .iter()
        .copied()
        .filter(|n| !unheard.contains(n))
        .collect();
    // The echoes that reach the client, until the last one expected (or a quiet 10 s).
    let mut echoes = Vec::new();
    while echoes.last() != expected.last() {
        match tokio::time::timeout(common::WAIT, client.ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => echoes.push(t.parse::<u64>().unwrap()),
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    let (passed, dropped) = net.link_counters();
    eprintln!(
        "loss 5% each way: sent {SENT}, delivered {delivered}, counted lost {} {lost:?}; echoes \
         back {} of {} published to a subscriber ({} to none); packets dropped by the link \
         {dropped} of {}; {}; out of order {:?}",
        total(&lost),
        echoes.len(),
        expected.len(),
        unheard.len(),
        passed + dropped,
        link_story(&gw).await,
        disorder(&heard),
    );
    assert!(dropped > 0, "the link dropped nothing");
    // An event heard twice, or late after newer ones, is a pipeline that Redis ran twice.
    let disordered = disorder(&heard);
    assert!(
        disordered.is_empty(),
        "heard out of order or twice: {disordered:?}"
    );
    assert_eq!(
        delivered + total(&lost),
        SENT,
        "delivered + counted lost == sent"
    );
    let disordered = disorder(&echoes);
    assert!(
        disordered.is_empty(),
        "echoes out of order or twice: {disordered:?}"
    );
    // While the node re-subscribes (a canary held up by retransmissions past canary_timeout),
    // Redis may still count the abandoned subscription as a receiver until its close gets
    // through: echoes published then are lost, and nobody counts them (pub/sub has no acks).
    // With one subscription all along, every echo Redis took for it arrives.
    let missing: Vec<u64> = expected
        .iter()
        .copied()
        .filter(|n| !echoes.contains(n))
        .collect();
    if gw.metric("refract_redis_subscriber_connects_total").await == 1 {
        assert!(
            missing.is_empty(),
            "echoes published but never relayed: {missing:?}"
        );
    } else if !missing.is_empty() {
        eprintln!(
            "loss 5%: {} echoes went to a subscription the node had given up: {:?}..{:?}",
            missing.len(),
            missing.first(),
            missing.last()
        );
    }
    assert!(
        delivered >= SENT * 9 / 10,
        "TCP recovers from 5 % loss: {delivered} of {SENT}"
    );
    gw.stop().await;
}

/// What /readyz and the publish queue did, polled every 20 ms.
#[derive(Default)]
struct Watched {
    /// Each change of /readyz status, with when.
    changes: Vec<(Instant, u16)>,
    max_queue: u64,
}

fn watch(gw: &Node, stop: CancellationToken) -> Arc<Mutex<Watched>> {
    let addr = gw.addr;
    let seen: Arc<Mutex<Watched>> = Default::default();
    let out = seen.clone();
    tokio::spawn(async move {
        let get = |path: &str| {
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            async move { common::http_request(addr, &request).await }
        };
        let mut last = 0;
        while !stop.is_cancelled() {
            let status = get("/readyz").await.0;
            let depth = get("/metrics")
                .await
                .1
                .lines()
                .find_map(|l| l.strip_prefix("refract_publish_queue_depth ")?.parse().ok())
                .expect("refract_publish_queue_depth");
            {
                let mut w = seen.lock().unwrap();
                if status != last {
                    w.changes.push((Instant::now(), status));
                    last = status;
                }
                w.max_queue = w.max_queue.max(depth);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    out
}

/// A 10 s blackhole in the middle of a stream: the canary marks the node not ready within
/// `canary_interval + canary_timeout` (plus a margin), the publish queue never holds more than
/// its bound, every number is heard or counted as lost (by reason), and the node is ready again
/// by itself once the link returns, with the stream going on.
#[tokio::test]
async fn a_10s_blackhole_turns_the_node_unready_bounded_and_it_recovers() {
    const BLACKHOLE: Duration = Duration::from_secs(10);
    // The harness's canary_interval (200 ms) + canary_timeout (1 s), and a margin for polling.
    const NOT_READY_WITHIN: Duration = Duration::from_millis(200 + 1000 + 800);
    const QUEUE: u64 = 16;
    let Some(net) = Net::create().await else {
        return;
    };
    let service = Service::start(&net.service_url(), false).await;
    let gw = Node::start(
        &net,
        FAST,
        &format!("publishers = 1\npublish_queue = {QUEUE}"),
    )
    .await;
    let client = gw.ws("/stream").await;

    // The stream: a number every 20 ms, from before the blackhole until after the recovery.
    let stop_stream = CancellationToken::new();
    let stop = stop_stream.clone();
    let stream = tokio::spawn(async move {
        let mut client = client;
        let mut sent_at = Vec::new();
        while !stop.is_cancelled() {
            client.send(&sent_at.len().to_string()).await;
            sent_at.push(Instant::now());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (client, sent_at)
    });
    tokio::time::sleep(Duration::from_secs(1)).await;

    let stop_watch = CancellationToken::new();
    let watched = watch(&gw, stop_watch.clone());
    net.blackhole(true);
    let down = Instant::now();
    let not_ready = eventually_within(NOT_READY_WITHIN, "/readyz 503 in the blackhole", || {
        let w = watched.lock().unwrap();
        let at = w.changes.iter().find(|(at, s)| *s == 503 && *at > down);
        std::future::ready(at.map(|(at, _)| *at - down))
    })
    .await;
    eprintln!(
        "blackhole: /readyz 503 {not_ready:?} after the link went (bound {NOT_READY_WITHIN:?})"
    );
    // The blackhole lasts its time: a fixed fault, not a condition to wait for.
    tokio::time::sleep_until(down + BLACKHOLE).await;
    let (_, dropped) = net.link_counters();
    net.blackhole(false);
    let up = Instant::now();
    let ready_again = eventually_within(Duration::from_secs(20), "/readyz 200 by itself", || {
        let w = watched.lock().unwrap();
        let at = w.changes.iter().find(|(at, s)| *s == 200 && *at > up);
        std::future::ready(at.map(|(at, _)| *at - up))
    })
    .await;
    eprintln!("blackhole: /readyz 200 again {ready_again:?} after the link came back");
    {
        let w = watched.lock().unwrap();
        let flaps: Vec<_> = w
            .changes
            .iter()
            .filter(|(at, s)| *s == 200 && *at > down + not_ready && *at < up)
            .collect();
        assert!(flaps.is_empty(), "ready while blackholed: {flaps:?}");
    }
    // The stream goes on for a while after the recovery, and those numbers arrive.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_stream.cancel();
    let (client, sent_at) = stream.await.unwrap();
    stop_watch.cancel();
    let sent = sent_at.len() as u64;

    let (delivered, lost) = eventually_within(
        Duration::from_secs(20),
        "every number delivered or counted as lost",
        || async {
            let delivered = service.numbers().len() as u64;
            let lost = losses(&gw).await;
            (delivered + total(&lost) >= sent).then_some((delivered, lost))
        },
    )
    .await;
    let heard = service.heard.lock().unwrap().clone();
    let numbers = service.numbers();
    let ready = up + ready_again;
    // Sent and heard in each phase, by when the client sent them.
    let phases = [
        ("before", None, Some(down)),
        ("blackhole", Some(down), Some(up)),
        ("link back, not ready", Some(up), Some(ready)),
        ("ready again", Some(ready), None),
    ];
    let in_phase = |n: u64, from: Option<Instant>, to: Option<Instant>| {
        let at = sent_at[n as usize];
        from.is_none_or(|f| at > f) && to.is_none_or(|t| at <= t)
    };
    let breakdown: Vec<String> = phases
        .iter()
        .map(|&(name, from, to)| {
            let sent = (0..sent).filter(|&n| in_phase(n, from, to)).count();
            let heard = numbers.iter().filter(|&&n| in_phase(n, from, to)).count();
            format!("{name}: {heard}/{sent}")
        })
        .collect();
    let late: Vec<u64> = heard
        .iter()
        .map(|(t, at)| (t.parse().unwrap(), *at))
        .filter(|&(n, at)| in_phase(n, Some(down), Some(up)) && at > up)
        .map(|(n, _)| n)
        .collect();
    let max_queue = watched.lock().unwrap().max_queue;
    eprintln!(
        "blackhole 10s: sent {sent}, delivered {delivered}, counted lost {} {lost:?}; heard/sent \
         by phase [{}]; heard late (sent in the blackhole, heard after it) {late:?}; packets \
         dropped by the link {dropped}; publish queue max {max_queue} (bound {QUEUE}); {}",
        total(&lost),
        breakdown.join(", "),
        link_story(&gw).await,
    );
    assert!(
        max_queue <= QUEUE,
        "publish queue {max_queue} > bound {QUEUE}"
    );
    assert_eq!(
        delivered + total(&lost),
        sent,
        "delivered + counted lost == sent"
    );
    let disordered = disorder(&numbers);
    assert!(
        disordered.is_empty(),
        "heard out of order or twice: {disordered:?}"
    );
    let after: Vec<u64> = (0..sent)
        .filter(|&n| in_phase(n, Some(ready), None))
        .collect();
    let undelivered = after.iter().filter(|n| !numbers.contains(n)).count();
    assert!(!after.is_empty());
    assert_eq!(
        undelivered,
        0,
        "of {} numbers sent once /readyz was 200 again, {undelivered} were not delivered (a \
         publisher still backing off from an attempt made while the link was down?)",
        after.len()
    );
    assert!(gw.metric("refract_canary_failures_total").await >= 1);
    drop(client);
    gw.stop().await;
}

/// A 600 ms round trip to Redis (300 ms each way) is well inside `canary_timeout` and
/// `command_timeout` of 3 s: the node is ready, round trips complete in order, and each event is
/// heard exactly once and never counted as lost.
#[tokio::test]
async fn with_600ms_round_trips_inside_the_timeouts_the_node_works() {
    const SENT: usize = 10;
    let timing = Timing {
        canary_interval: Duration::from_millis(500),
        canary_timeout: Duration::from_secs(3),
        command_timeout: Duration::from_secs(3),
    };
    let Some(mut net) = Net::create().await else {
        return;
    };
    net.delay(300).await;
    let service = Service::start(&net.service_url(), true).await;
    let gw = Node::start_unready(&net, timing, "").await;
    // A canary needs about two round trips (the pool's check of its connection, then the
    // publish coming back through the subscription): 1.2 s, well inside its 3 s.
    let deadline = Instant::now() + Duration::from_secs(15);
    while gw.get("/readyz").await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "not ready after 15 s at a 600 ms round trip with canary_timeout and \
             command_timeout 3 s: {}",
            link_story(&gw).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut client = gw.ws("/stream").await;
    let mut times = Vec::new();
    for n in 0..SENT {
        let t = Instant::now();
        client.send(&n.to_string()).await;
        assert_eq!(client.recv_text().await, n.to_string(), "replies in order");
        times.push(t.elapsed());
    }
    let lost = losses(&gw).await;
    let heard = service.numbers();
    eprintln!(
        "delay 300ms each way: round trips {times:?}; heard {heard:?}; counted lost {lost:?}; {}",
        link_story(&gw).await
    );
    assert_eq!(
        heard,
        (0..SENT as u64).collect::<Vec<_>>(),
        "heard once each, in order"
    );
    assert_eq!(total(&lost), 0, "nothing counted lost");
    gw.stop().await;
}
