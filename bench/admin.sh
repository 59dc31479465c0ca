#!/usr/bin/env bash
# The admin API under load (issue #17's closing measurements), in one command:
#
#     bench/admin.sh
#
# Builds refract and refract-bench (release), starts a private redis-server, the echo service
# and one gateway on 127.0.0.1 (route /echo with a Redis service, [channels] with presence on,
# [admin] with a token), then:
#   1. times GET /admin/api/state with nothing connected (the baseline),
#   2. holds LOW=1000 idle WebSocket connections on /echo plus CH_SOCKETS=50 Channels sockets
#      joined to CH_TOPICS=3 topics, times the API again and takes a screenshot of the admin page
#      (bench/admin-screenshot.mjs, headless Chromium) showing them,
#   3. raises /echo to HIGH=15000 connections (the other 14,000 held by a second process: each
#      process stays under the 20,000 open files allowed) and times the API again,
# and writes docs/benchmarks/admin.md (and admin-1000.png). Everything it starts stops on exit,
# and has a watchdog besides: nothing outlives WATCHDOG seconds.
#
# Knobs (environment):
#   LOW=1000 HIGH=15000       connections on /echo for the two measured steps
#   CH_SOCKETS=50 CH_TOPICS=3 Channels sockets held throughout steps 2 and 3, and their topics
#   REQUESTS=200              sequential GET /admin/api/state per step, one curl (new TCP
#                             connection) each
#   SETTLE=10                 seconds between the connections being up and the requests (at
#                             least 5: one heartbeat, so the node list has them)
#   SCREENSHOT=1              0: no browser, no screenshot
#   OUT=docs/benchmarks       where admin.md and admin-1000.png go
#   WATCHDOG=600              seconds
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

LOW=${LOW:-1000}
HIGH=${HIGH:-15000}
CH_SOCKETS=${CH_SOCKETS:-50}
CH_TOPICS=${CH_TOPICS:-3}
REQUESTS=${REQUESTS:-200}
SETTLE=${SETTLE:-10}
SCREENSHOT=${SCREENSHOT:-1}
OUT=${OUT:-docs/benchmarks}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
WATCHDOG=${WATCHDOG:-600}
[ "$HIGH" -gt "$LOW" ] || { echo "HIGH must be more than LOW" >&2; exit 2; }

started=$(date +%s)
WORK=$(mktemp -d /tmp/refract-admin-bench.XXXXXX)
PIDS=()          # what spawn started: the `timeout`s (and the watchdog)
declare -A CHILD_OF # a `timeout`'s pid -> the command's
TOKEN="admin-bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
JWT_SECRET="bench-only-secret-0123456789abcdef"

log() { printf '[admin %4ds] %s\n' $(($(date +%s) - started)) "$*" >&2; }

# Stops what was started, last first (holders, then the gateway, the echo service, Redis, the
# watchdog), each with SIGTERM to its `timeout` (which passes it on), up to 15 s to go (the gateway
# closes up to 15,000 sockets), then SIGKILL, to the command as well.
cleanup() {
    local k pid child
    for ((k = ${#PIDS[@]} - 1; k >= 0; k--)); do
        pid=${PIDS[k]}
        child=${CHILD_OF[$pid]:-}
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 150); do
            kill -0 "$pid" 2>/dev/null || { [ -n "$child" ] && kill -0 "$child" 2>/dev/null; } || break
            sleep 0.1
        done
        for pid in "$pid" $child; do
            if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
        done
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The whole run's watchdog: past WATCHDOG seconds this script stops itself (and so, via the
# trap, everything it started, which also runs under `timeout` of its own).
# It checks once a second, so it ends (and lets go of this script's output) a second after it.
deadline=$((started + WATCHDOG))
(
    while kill -0 $$ 2>/dev/null; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "[admin] watchdog: $WATCHDOG s passed, stopping" >&2
            kill -TERM $$
            exit 0
        fi
        sleep 1
    done
) </dev/null >/dev/null &
PIDS+=("$!")

# Starts a command in the background under `timeout`; $LAST_PID is the command's own pid (for
# /proc), while the cleanup signals `timeout`, which passes it on.
spawn() {
    local out=$1 err=$2 t c=
    shift 2
    timeout -k 5 "$WATCHDOG" "$@" >"$out" 2>"$err" &
    t=$!
    PIDS+=("$t")
    for _ in $(seq 100); do
        c=$(pgrep -P "$t" | head -1) && [ -n "$c" ] && break
        sleep 0.02
    done
    LAST_PID=${c:-$t}
    LAST_TIMEOUT=$t
    [ -z "$c" ] || CHILD_OF[$t]=$c
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

cpu_of() { # CPU seconds (user+system) of a live process
    awk '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / 100 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

machine_busy() { # CPU seconds the whole machine has spent busy (all processes, all cores)
    awk '/^cpu / { printf "%.2f", ($2 + $3 + $4 + $7 + $8 + $9) / 100 }' /proc/stat
}

rss_mib() { awk '/^VmRSS:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo 0; }

open_files() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }

# ---- prerequisites -------------------------------------------------------------------------------
for c in redis-server redis-cli curl jq python3 node; do
    command -v "$c" >/dev/null || { echo "$c is needed (apt-get install redis-server curl jq python3 nodejs)" >&2; exit 1; }
done
[ -d tests/js/node_modules/ws ] || { echo "tests/js/node_modules/ws is missing: (cd tests/js && npm ci)" >&2; exit 1; }
if [ "$SCREENSHOT" = 1 ] && [ ! -d tests/browser/node_modules/puppeteer-core ]; then
    echo "tests/browser/node_modules/puppeteer-core is missing: (cd tests/browser && npm ci), or SCREENSHOT=0" >&2
    exit 1
fi

log "building refract and refract-bench (release)"
cargo build --release --locked -p refract -p refract-bench --bins >&2
GATEWAY=$TARGET_DIR/release/refract
BENCH=$TARGET_DIR/release/refract-bench
ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
log "file limit per process: $NOFILE"
if [ "$NOFILE" -lt $((HIGH - LOW + 200)) ] || [ "$NOFILE" -lt $((HIGH + CH_SOCKETS + 200)) ]; then
    echo "the file limit ($NOFILE) is too low for HIGH=$HIGH" >&2
    exit 1
fi

# ---- the holder: N idle WebSocket connections (plus Channels sockets), held until told ------------
# Node's `ws` (from tests/js) answers the gateway's pings by itself, so held connections stay
# alive past server.idle_timeout; Channels sockets send Phoenix heartbeats. It prints
# `held <n> failed <m> joined <j>` once every connection is settled, holds them until SIGTERM or
# --seconds, and exits.
cat >"$WORK/hold.mjs" <<'EOF'
import { createHmac } from "node:crypto";
import { createRequire } from "node:module";
import { parseArgs } from "node:util";

const require = createRequire(process.env.WS_FROM);
const WebSocket = require("ws");
const { values: a } = parseArgs({
  options: {
    url: { type: "string" }, conns: { type: "string", default: "0" },
    "channels-url": { type: "string" }, "channel-sockets": { type: "string", default: "0" },
    topics: { type: "string", default: "1" }, secret: { type: "string" },
    concurrency: { type: "string", default: "200" }, seconds: { type: "string", default: "300" },
    "local-addresses": { type: "string", default: "" },
  },
});
const N = Number(a.conns), M = Number(a["channel-sockets"]), TOPICS = Number(a.topics);
const LOCAL = a["local-addresses"] ? a["local-addresses"].split(",") : [];
const held = [];
let made = 0;
let opened = 0, failed = 0, joined = 0, lost = 0, firstError = "";

setTimeout(() => finish("--seconds passed"), Number(a.seconds) * 1000);
process.on("SIGTERM", () => finish("SIGTERM"));
process.on("SIGINT", () => finish("SIGINT"));
function finish(why) {
  console.error(`hold: closing ${held.length} sockets (${why}); ${lost} closed by the other side meanwhile`);
  for (const ws of held) ws.terminate();
  process.exit(0);
}

function open(url, onOpen) {
  return new Promise((resolve) => {
    const localAddress = LOCAL.length ? LOCAL[made++ % LOCAL.length] : undefined;
    const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: 30000, localAddress });
    let up = false;
    ws.on("open", () => { up = true; opened++; held.push(ws); onOpen?.(ws); resolve(true); });
    ws.on("error", (e) => { if (!up) { failed++; firstError ||= e.message; resolve(false); } });
    ws.on("close", () => { if (up) lost++; });
    ws.on("message", () => {});
  });
}

async function pool(count, concurrency, task) {
  let next = 0;
  const worker = async () => { while (next < count) await task(next++); };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}

const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
function token(id) {
  const head = b64({ alg: "HS256", typ: "JWT" });
  const body = b64({ id, channel: "bench:*", exp: Math.floor(Date.now() / 1000) + 3600 });
  const sig = createHmac("sha256", a.secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

await pool(N, Number(a.concurrency), () => open(a.url));
if (M > 0) {
  const replies = [];
  await pool(M, 20, (i) => new Promise((resolve) => {
    const topic = `bench:room-${(i % TOPICS) + 1}`;
    let ref = 1;
    open(`${a["channels-url"]}?vsn=2.0.0`, (ws) => {
      ws.on("message", (data) => {
        const [, r, t, ev, p] = JSON.parse(data.toString());
        if (ev === "phx_reply" && r === "1" && t === topic) {
          if (p.status === "ok") joined++;
          else firstError ||= `join ${topic}: ${JSON.stringify(p.response)}`;
          resolve();
        }
      });
      ws.send(JSON.stringify(["1", "1", topic, "phx_join", { token: token(`user-${i}`) }]));
      setInterval(() => ws.send(JSON.stringify([null, String(++ref), "phoenix", "heartbeat", {}])), 20000);
      setTimeout(resolve, 10000);
    }).then((up) => up || resolve());
  }));
}
console.log(`held ${opened} failed ${failed} joined ${joined}${firstError ? " first_error " + JSON.stringify(firstError) : ""}`);
EOF

# The held connections come from 127.0.0.2-9 (as real clients come from many addresses), not from
# 127.0.0.1, the measuring curl's address: with 15,000 connections from one address to the
# gateway's one port, a new connection's connect() from that address spends milliseconds in the
# kernel's search for a free ephemeral port, and that, not the gateway, is what would be measured.
HOLD_FROM=127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8,127.0.0.9
hold() { # $1: name, rest: hold.mjs arguments; waits until it has settled every connection
    local name=$1 i
    shift
    spawn "$WORK/hold-$name.out" "$WORK/hold-$name.err" env WS_FROM="$ROOT/tests/js/package.json" \
        node --max-old-space-size=2048 "$WORK/hold.mjs" --seconds "$WATCHDOG" \
        --local-addresses "$HOLD_FROM" "$@"
    HOLD_PID=$LAST_TIMEOUT
    for i in $(seq 1200); do
        [ -s "$WORK/hold-$name.out" ] && break
        kill -0 "$HOLD_PID" 2>/dev/null || break
        sleep 0.1
    done
    if ! [ -s "$WORK/hold-$name.out" ]; then
        log "holder $name did not settle; its log:"
        tail -20 "$WORK/hold-$name.err" >&2
        exit 1
    fi
    log "holder $name: $(cat "$WORK/hold-$name.out")"
}

# ---- redis, the echo service, the gateway ---------------------------------------------------------
REDIS_PORT=$(free_port)
REDIS_URL=redis://127.0.0.1:$REDIS_PORT
spawn "$WORK/redis.out" "$WORK/redis.err" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
    --save "" --appendonly no --protected-mode yes --maxclients 1000
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$REDIS_PORT" ping >/dev/null

# The route's service: connect events have a subscriber (else they count as lost, a drop).
spawn "$WORK/echo.json" "$WORK/echo.err" "$BENCH" echo --redis "$REDIS_URL" \
    --channel echo.in --service echo --max-seconds "$WATCHDOG"
sleep 0.5

GW_PORT=$(free_port)
BASE=http://127.0.0.1:$GW_PORT
cat >"$WORK/refract.toml" <<EOF
node_id = "admin-bench"

[server]
listen = "127.0.0.1:$GW_PORT"
max_connections = 19000

[redis]
url = "$REDIS_URL"

[routes."/echo".services.echo]
type = "redis"
request_channel = "echo.in"

[channels]
jwt_secret = "$JWT_SECRET"
[channels.presence]
enabled = true

[admin]
token = "$TOKEN"
EOF
spawn "$WORK/gateway.out" "$WORK/gateway.err" \
    bash -c 'ulimit -n "$(ulimit -Hn)" && exec "$0" --config "$1"' "$GATEWAY" "$WORK/refract.toml"
GW_PID=$LAST_PID
for _ in $(seq 100); do
    curl -fs "$BASE/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fs "$BASE/readyz" >/dev/null || { log "gateway not ready; its log:"; tail -20 "$WORK/gateway.err" >&2; exit 1; }
log "gateway on 127.0.0.1:$GW_PORT (pid $GW_PID), redis on $REDIS_PORT"

state() { curl -fs -H "Authorization: Bearer $TOKEN" "$BASE/admin/api/state"; }

wait_route() { # $1: connections /echo must show (as the API says), within 60 s
    local n
    for _ in $(seq 600); do
        n=$(state | jq '.routes[] | select(.path == "/echo") | .connections')
        [ "$n" = "$1" ] && return 0
        sleep 0.1
    done
    log "/echo shows $n connections, not $1"
    exit 1
}

wait_heartbeat() { # until this node is in the API's node list (its liveness key, every 5 s)
    for _ in $(seq 150); do
        [ "$(state | jq '[.nodes[]? | select(.node == "admin-bench")] | length')" = 1 ] && return 0
        sleep 0.1
    done
    log "this node never showed in the node list"
    exit 1
}

# Waits SETTLE seconds with the connections held and nothing else asked of the gateway, and
# notes the gateway's CPU meanwhile (its cost of just holding them: pings, timers, heartbeats).
settle() {
    local c0 c1
    c0=$(cpu_of "$GW_PID")
    sleep "$SETTLE"
    c1=$(cpu_of "$GW_PID")
    IDLE_CPU=$(awk -v a="$c0" -v b="$c1" -v t="$SETTLE" 'BEGIN { printf "%.3f", (b - a) / t }')
}
IDLE_CPU=0

RESULTS=$WORK/results.jsonl
: >"$RESULTS"
# Times REQUESTS sequential GET /admin/api/state (a new curl, so a new TCP connection, each) and
# appends one JSON line: connections, p50/p99/max ms, bytes, and the gateway's CPU per request.
measure() { # $1: route connections (a label), $2: channels sockets held
    local label=$1 g0 g1 m0 m1 w0 w1 i
    state >"$WORK/state-$label.json"
    : >"$WORK/times-$label.txt"
    : >"$WORK/readyz-$label.txt"
    g0=$(cpu_of "$GW_PID")
    m0=$(machine_busy)
    w0=$(date +%s.%N)
    for i in $(seq "$REQUESTS"); do
        curl -fs -o /dev/null -H "Authorization: Bearer $TOKEN" \
            -w '%{http_code} %{time_total} %{size_download}\n' "$BASE/admin/api/state" \
            >>"$WORK/times-$label.txt"
    done
    g1=$(cpu_of "$GW_PID")
    m1=$(machine_busy)
    w1=$(date +%s.%N)
    # The same requests on one kept-alive connection (as the browser does): the answer alone.
    local ka=()
    for i in $(seq "$REQUESTS"); do ka+=(-o /dev/null "$BASE/admin/api/state"); done
    curl -fs -H "Authorization: Bearer $TOKEN" -w '%{http_code} %{time_total} %{size_download} %{num_connects}\n' \
        "${ka[@]}" >"$WORK/keepalive-$label.txt"
    # The control: the same loop on /readyz (no Redis, nothing to gather), right after.
    for i in $(seq "$REQUESTS"); do
        curl -s -o /dev/null -w '%{http_code} %{time_total} %{size_download}\n' "$BASE/readyz" \
            >>"$WORK/readyz-$label.txt"
    done
    python3 - "$WORK/times-$label.txt" "$label" "$2" "$g0" "$g1" "$(rss_mib "$GW_PID")" \
        "$(open_files "$GW_PID")" "$WORK/state-$label.json" "$WORK/readyz-$label.txt" \
        "$m0" "$m1" "$w0" "$w1" "$IDLE_CPU" "$WORK/keepalive-$label.txt" >>"$RESULTS" <<'EOF'
import json, os, sys
path, label, sockets, g0, g1, rss, fds, state, readyz, m0, m1, w0, w1, idle_cpu, keepalive = sys.argv[1:]
ka_rows = [l.split() for l in open(keepalive) if l.strip()]
ka = sorted(float(r[1]) * 1000 for r in ka_rows)
ka_connects = sum(int(r[3]) for r in ka_rows)
rows = [l.split() for l in open(path) if l.strip()]
ctl = sorted(float(l.split()[1]) * 1000 for l in open(readyz) if l.strip())
codes = {r[0] for r in rows}
ms = sorted(float(r[1]) * 1000 for r in rows)
size = sorted({int(r[2]) for r in rows})
pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # nearest rank, upper
s = json.load(open(state))
route = next(r["connections"] for r in s["routes"] if r["path"] == "/echo")
print(json.dumps({
    "connections": int(label), "route_connections_shown": route,
    "node_connections_shown": s["node"]["connections"], "channels_sockets": int(sockets),
    "requests": len(ms), "http_codes": sorted(codes),
    "p50_ms": round(pick(0.50), 2), "p99_ms": round(pick(0.99), 2), "max_ms": round(ms[-1], 2),
    "min_ms": round(ms[0], 2), "bytes": size[-1], "bytes_min": size[0],
    "gateway_cpu_ms_per_request": round((float(g1) - float(g0)) * 1000 / len(ms), 2),
    "gateway_rss_mib": int(rss), "gateway_open_files": int(fds),
    "keepalive_p50_ms": round(ka[len(ka) // 2], 2), "keepalive_p99_ms": round(ka[min(len(ka) - 1, int(0.99 * len(ka)))], 2),
    "keepalive_max_ms": round(ka[-1], 2), "keepalive_requests": len(ka), "keepalive_connects": ka_connects,
    "keepalive_codes": sorted({r[0] for r in ka_rows}),
    "readyz_p50_ms": round(ctl[len(ctl) // 2], 2), "readyz_p99_ms": round(ctl[min(len(ctl) - 1, int(0.99 * len(ctl)))], 2),
    "wall_s": round(float(w1) - float(w0), 2), "gateway_idle_cpu_cores": float(idle_cpu),
    "machine_busy_cores": round((float(m1) - float(m0)) / (float(w1) - float(w0)), 2), "cores": os.cpu_count(),
    "errors": s["errors"], "drops": s["drops"],
}))
EOF
    log "$(tail -1 "$RESULTS" | cut -c1-300)"
}

# ---- 1. nothing connected -------------------------------------------------------------------------
wait_heartbeat
settle
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
log "step 1: GET /admin/api/state x$REQUESTS, nothing connected"
measure 0 0

# ---- 2. LOW connections, Channels sockets, the screenshot ----------------------------------------
log "step 2: $LOW idle connections on /echo and $CH_SOCKETS Channels sockets on $CH_TOPICS topics"
hold low --url "ws://127.0.0.1:$GW_PORT/echo" --conns "$LOW" \
    --channels-url "ws://127.0.0.1:$GW_PORT/socket/websocket" --channel-sockets "$CH_SOCKETS" \
    --topics "$CH_TOPICS" --secret "$JWT_SECRET"
wait_route "$LOW"
settle # at least one presence refresh and heartbeat with everyone counted, for the node list
measure "$LOW" "$CH_SOCKETS"

SHOT=
if [ "$SCREENSHOT" = 1 ]; then
    log "screenshot of the admin page at $LOW connections"
    if timeout -k 5 120 node bench/admin-screenshot.mjs --url "$BASE" --token "$TOKEN" --route /echo \
        --connections "$LOW" --out "$WORK/admin-$LOW.png" >"$WORK/page-$LOW.txt" 2>"$WORK/screenshot.err"; then
        SHOT=$OUT/admin-$LOW.png
        mkdir -p "$OUT"
        cp "$WORK/admin-$LOW.png" "$SHOT"
        state >"$WORK/state-shot.json"
        log "screenshot: $SHOT"
    else
        log "no screenshot; its log:"
        tail -30 "$WORK/screenshot.err" >&2
        exit 1
    fi
fi

# ---- 3. HIGH connections --------------------------------------------------------------------------
log "step 3: $((HIGH - LOW)) more idle connections on /echo (a second process), $HIGH in all"
hold high --url "ws://127.0.0.1:$GW_PORT/echo" --conns "$((HIGH - LOW))"
wait_route "$HIGH"
settle
measure "$HIGH" "$CH_SOCKETS"

# ---- the report -----------------------------------------------------------------------------------
GW_LOG_WARN=$(grep -cE '\b(WARN|ERROR)\b' "$WORK/gateway.err" || true)
mkdir -p "$OUT"
cp "$RESULTS" "$WORK/admin.jsonl"
python3 - "$RESULTS" "$OUT/admin.md" "$SHOT" "$WORK/page-$LOW.txt" "$LOW" "$HIGH" "$CH_SOCKETS" \
    "$CH_TOPICS" "$REQUESTS" "$GW_LOG_WARN" "$WORK/state-shot.json" "$LOAD0" "$SETTLE" <<'EOF'
import json, os, platform, subprocess, sys
(res_path, out, shot, page_txt, low, high, sockets, topics, requests, warns, shot_state, load,
 settle) = sys.argv[1:]
low, high, sockets, topics = int(low), int(high), int(sockets), int(topics)
rows = [json.loads(l) for l in open(res_path)]

def sh(cmd):
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    return r.stdout.strip()

cpu = sh("lscpu | sed -n 's/^Model name: *//p' | head -1") or platform.processor()
mem = sh("free -g | awk '/^Mem:/ {print $2}'")
os_name = sh(". /etc/os-release && echo $PRETTY_NAME")
commit = sh("git rev-parse --short HEAD")
dirty = " plus the uncommitted changes in `src/` at the time" if sh("git status --porcelain --untracked-files=no src") else ""
ms = lambda v: f"{v:.2f}"
size = lambda r: f"{r['bytes']:,}" if r["bytes"] == r["bytes_min"] else f"{r['bytes_min']:,}–{r['bytes']:,}"

L = []
add = L.append
add("# The admin API under load")
add("")
add(f"How fast `GET /admin/api/state` (the JSON the admin page reads every 2 s) answers with {low:,} and")
add(f"{high:,} WebSocket connections open on the node. Measured, not tested, by:")
add("")
add("```sh")
add("bench/admin.sh        # LOW=1000 HIGH=15000 REQUESTS=200 SETTLE=10 CH_SOCKETS=50 CH_TOPICS=3")
add("```")
add("")
add("It builds the release binaries, starts a private `redis-server`, the echo service")
add("(`refract-bench echo`, so connect events have a subscriber) and one gateway on 127.0.0.1: route")
add("`/echo` with a Redis service, `[channels]` with presence on, `[admin]` with a token,")
add("`max_connections = 19000`. Then, at each step, after the connections are up and")
add(f"{settle} s have passed, it times {requests} sequential `GET /admin/api/state` with")
add("`Authorization: Bearer`, each a new `curl` and so a new TCP connection (`-w '%{time_total}'`), then")
add(f"the same {requests} on one kept-alive connection (one `curl`, as the page's browser does), then {requests}")
add("`GET /readyz` as a control. The steps:")
add("")
add("1. nothing connected;")
add(f"2. {low:,} idle WebSocket connections on `/echo` and {sockets} Channels sockets, each joined to one of")
add(f"   {topics} topics (`bench:room-1`…), presence on; the screenshot is taken here;")
add(f"3. {high:,} on `/echo` (the {high - low:,} more from a second process: no process, the gateway included,")
add("   holds more than 20,000 files), the Channels sockets still joined.")
add("")
add("The connections are held by Node's `ws` client (from `tests/js`), which answers the gateway's")
add("pings; the Channels sockets send Phoenix heartbeats. They come from 127.0.0.2–127.0.0.9; the")
add("measuring `curl` from 127.0.0.1 (see the caveats).")
add("")
add(f"Machine: {cpu}, {os.cpu_count()} cores, {mem} GiB, {os_name}, Linux {platform.release()}; refract at")
add(f"`{commit}`{dirty}. Everything (gateway, Redis, the holders, curl, Chromium) shares the cores, and")
add(f"the machine was not otherwise idle: load average {load} when the measuring started.")
add("")
add("## Results")
add("")
add("| connections on `/echo` | Channels sockets | p50 ms | p99 ms | max ms | bytes | kept alive: p50 / p99 / max ms | `/readyz` p50 / p99 ms | gateway CPU per request | gateway RSS |")
add("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    add(f"| {r['connections']:,} | {r['channels_sockets']} | {ms(r['p50_ms'])} | {ms(r['p99_ms'])} | "
        f"{ms(r['max_ms'])} | {size(r)} | {ms(r['keepalive_p50_ms'])} / {ms(r['keepalive_p99_ms'])} / "
        f"{ms(r['keepalive_max_ms'])} | {ms(r['readyz_p50_ms'])} / {ms(r['readyz_p99_ms'])} | "
        f"{r['gateway_cpu_ms_per_request']:.2f} ms | {r['gateway_rss_mib']} MiB |")
add("")
ok = all(r["http_codes"] == ["200"] and r["keepalive_codes"] == ["200"] for r in rows)
add(("Every request answered `200`" if ok else "NOT every request answered 200: "
     + json.dumps([[r["http_codes"], r["keepalive_codes"]] for r in rows]))
    + "; the kept-alive series used " + ", ".join(str(r["keepalive_connects"]) for r in rows)
    + " TCP connection(s) at the three steps. The answer's own count, `node.connections` (route"
    " connections plus Channels sockets), read " + ", ".join(f"{r['node_connections_shown']:,}" for r in rows)
    + ", and its `errors` was " + ("empty every time." if all(not r["errors"] for r in rows)
                                   else "not empty: " + json.dumps([r["errors"] for r in rows]) + "."))
add("")
add("- *p50, p99, max* (nearest rank): wall time per request as `curl` saw it, its TCP connect included.")
add("- *bytes*: the body; it does not grow with the connections (nothing in it is per connection), only")
add("  with the digits of the counts, the topics listed and the drop counters that are not zero.")
add("- *kept alive*: the same request on a connection already open, the answer alone.")
add("- *`/readyz`*: the gateway's readiness probe (no credentials, nothing gathered, no Redis), timed")
add("  like the first column right after: what any new request costs on that machine at that moment.")
add("- *gateway CPU per request*: the gateway's user+system time over the first series divided by")
add("  its requests (`/proc` counts 10 ms ticks: coarse). Holding the connections idle cost the gateway")
add("  " + ", ".join(f"{r['gateway_idle_cpu_cores'] * 100:.1f} %" for r in rows) + " of one core at the three steps"
    f" (its CPU over the {settle} s before the requests).")
add("- *machine busy* during the first series (every process, this run's and anyone else's, curl's own")
add("  start-up included): " + ", ".join(f"{r['machine_busy_cores']:.2f}" for r in rows) + f" of {os.cpu_count()} cores.")
add("")

if shot:
    seen = json.load(open(shot_state))
    r = rows[1]
    why = {"not_found": "the browser's request for `/favicon.ico`",
           "unauthorized": "the page's first poll, before signing in"}
    drops = seen["drops"]
    drop_txt = ("*Drops* says nothing dropped" if not drops else
                "*Drops* lists " + " and ".join(
                    f"`{d['metric']}` `{' '.join(k + '=' + v for k, v in d['labels'].items())}` {d['value']:g}"
                    + (f" ({why[d['labels'].get('reason')]})" if d['labels'].get('reason') in why else "")
                    for d in drops) + ", and nothing else: no event lost, no reply dropped")
    tops = seen["channels"]["topics"]
    topics_txt = ", ".join(f"`{t['topic']}` {t['members_here']} ({t['presence']})" for t in tops)
    add(f"## The page at {low:,} connections")
    add("")
    add(f"![the admin page with {low:,} connections on /echo]({os.path.basename(shot)})")
    add("")
    # What the page itself said (its text, tab-separated cells), for the description.
    text = open(page_txt).read()
    cells = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            cells.setdefault(parts[0], parts[1:])
    redis_cell = cells.get("Redis", ["?"])[0]
    rtt = cells.get("Canary round trip", ["?"])[0]
    uptime = cells.get("Uptime", ["?"])[0]
    node_row = cells.get("admin-bench (this one)", ["?"] * 4)
    n = r["node_connections_shown"]
    add(f"[`{os.path.basename(shot)}`]({os.path.basename(shot)}) is `GET /admin` in headless Chromium"
        f" (`bench/admin-screenshot.mjs`: 1100 px wide, full page), signed in with the token, once the"
        f" `/echo` row read {low}. The header names the node, `admin-bench · v0.1.0`, with a green"
        f" **ready** badge and \"{n} connections\" ({low:,} on the route and {sockets} Channels"
        f" sockets). *This node* shows Redis \"{redis_cell}\", the response channel"
        f" `refract.responses.admin-bench`, the last canary round trip ({rtt}), an empty publish queue"
        f" (\"0 events waiting\"), \"{n} of 19000\" connections and the uptime ({uptime}). *Routes* has"
        f" its one row: `/echo`, {low} connections, service `echo` (redis → `echo.in`). *Nodes on this"
        f" Redis* has one row, `admin-bench (this one)`, with {node_row[0]} connections, {node_row[1]} on"
        f" routes, {node_row[2]} Channels sockets and its last heartbeat {node_row[3]}. *Channels* reads"
        f" \"{sockets} sockets on /socket, {len(tops)} topics with members here\" and lists each topic with"
        f" its members here and, in brackets here, its presence across nodes (one node, so the same):"
        f" {topics_txt}. {drop_txt}. The {low:,} connections are one number on the page, not {low:,}"
        f" rows: the page, like its JSON, has a row per route, node, topic and drop counter, none per"
        f" connection. It refreshes every 2 s from `/admin/api/state`, the request timed above.")
    add("")
    add("The page's text when the screenshot was taken:")
    add("")
    add("```text")
    L.extend(line.rstrip() for line in open(page_txt).read().strip().splitlines() if line.strip())
    add("```")
    add("")

add("## Caveats")
add("")
add("- One machine, loopback only, idle connections (no traffic on them while measuring), and the")
add("  cores shared with everything else running (the load average above): absolute figures move")
add("  with the machine; what holds is that the answer is the same size and about the same time at")
add("  every step, and tracks `/readyz`, which gathers nothing.")
add("- Where the connections come from matters to the client, not the gateway: with all of them from")
add("  127.0.0.1 (as in a first version of this script), the measuring `curl`'s own `connect()` took")
add("  2–5 ms at 15,000 connections (`%{time_connect}`; presumably Linux searching for a free ephemeral")
add("  port toward the gateway's one port), and `/readyz` rose as much as the admin API (p50 about")
add("  5 ms for both). Real clients come from many addresses, so the holders use eight other loopback")
add("  addresses.")
add("- The parts read from Redis are not per connection either, but they are round trips: the node")
add("  list is a `SCAN` of `refract:node:*` and one `MGET` (standalone), and each listed topic's")
add("  presence one `HLEN`, one after the other, so the time follows Redis's key count and the")
add("  topics listed (`admin.max_topics`, 100), and a slow Redis shows here.")
if int(warns):
    add(f"- The gateway logged {warns} warning or error lines during the run.")
open(out, "w").write("\n".join(L) + "\n")
print(out)
EOF
log "wrote $OUT/admin.md; work files in $WORK"

log "done in $(($(date +%s) - started)) s"
