#!/usr/bin/env bash
# refract's benchmarks, every scenario of issue #5, in one command from a clean checkout:
#
#     bench/run.sh
#
# Builds refract and refract-bench (release), starts a private redis-server and the echo service
# on 127.0.0.1, runs each scenario against fresh gateways, and writes docs/benchmarks/results.md,
# results.jsonl and echo.png. Everything it starts is stopped on exit, and has a watchdog besides.
#
# Knobs (environment):
#   CONNS="10 100 300 1000"   closed-loop connection counts (targets are judged at 100 and 1000)
#   WARMUP=2 DURATION=10      seconds per closed-loop run
#   IDLE_CONNS=15000 FAN_CONNS=10000 FAN_ROUNDS=5
#   CRITERION=1 PROFILE=1     criterion benches; perf profile of the gateway (if perf exists)
#   EXTRA_WS_URL=ws://host:port/path EXTRA_NAME=other [EXTRA_PID=pid]
#                             also run the closed loop against another gateway; its route must
#                             echo text (e.g. `refract-bench echo --redis ... --channel ...`
#                             serving that gateway's Redis); with its pid, its CPU is measured
#   OUT=docs/benchmarks       where results go
set -euo pipefail
cd "$(dirname "$0")/.."

CONNS=${CONNS:-"10 100 300 1000"}
WARMUP=${WARMUP:-2}
DURATION=${DURATION:-10}
IDLE_CONNS=${IDLE_CONNS:-15000}
FAN_CONNS=${FAN_CONNS:-10000}
FAN_ROUNDS=${FAN_ROUNDS:-5}
CH_FAN_CONNS=${CH_FAN_CONNS:-"1000 10000"}
POLL_CONNS=${POLL_CONNS:-1000}
POLL_SECONDS=${POLL_SECONDS:-10}
CRITERION=${CRITERION:-1}
PROFILE=${PROFILE:-1}
OUT=${OUT:-docs/benchmarks}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
# Nothing started here outlives this many seconds, even if this script is killed.
WATCHDOG=${WATCHDOG:-900}

started=$(date +%s)
WORK=$(mktemp -d /tmp/refract-bench.XXXXXX)
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
PIDS=()

log() { printf '[bench %4ds] %s\n' $(($(date +%s) - started)) "$*" >&2; }

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 0.5
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts a command in the background under `timeout` (the watchdog); sets $LAST_PID to the
# command's own pid (for /proc and perf), while the cleanup signals `timeout`, which passes it on.
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
}

stop() {
    kill "$1" 2>/dev/null || true
    local i
    for i in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$1" 2>/dev/null || true
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

diff_s() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }

# ---- prerequisites -----------------------------------------------------------------------------
apt_updated=0
apt_install() {
    if [ "$apt_updated" = 0 ]; then apt-get update -q >&2; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2
}
command -v redis-server >/dev/null || apt_install redis-server
command -v curl >/dev/null || apt_install curl
command -v python3 >/dev/null || apt_install python3 python3-pip
if ! python3 -c 'import matplotlib' 2>/dev/null; then
    log "installing matplotlib for the plot"
    python3 -m pip install -q matplotlib >&2 2>/dev/null \
        || python3 -m pip install -q --break-system-packages matplotlib >&2 2>/dev/null \
        || log "matplotlib unavailable: results.md is written without the plot"
fi

log "building refract, refract-bench and the criterion benches (release)"
# The criterion bench is built here too and its executable run directly below: a separate
# `cargo bench` resolves features differently and would rebuild a good part of the tree.
CRITERION_EXE=$(cargo build --release --locked -p refract -p refract-bench --bins --bench prism \
    --message-format=json-render-diagnostics | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "prism" and m.get("executable"):
        print(m["executable"])')
GATEWAY=$TARGET_DIR/release/refract
BENCH=$TARGET_DIR/release/refract-bench
ulimit -n "$(ulimit -Hn)"
log "file limit per process: $(ulimit -n)"

# ---- redis and the echo service ------------------------------------------------------------------
REDIS_PORT=$(free_port)
REDIS_URL=redis://127.0.0.1:$REDIS_PORT
spawn "$WORK/redis.out" "$WORK/redis.err" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
    --save "" --appendonly no --protected-mode yes --maxclients 1000
REDIS_PID=$LAST_PID
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$REDIS_PORT" ping >/dev/null

spawn "$WORK/echo.json" "$WORK/echo.err" "$BENCH" echo --redis "$REDIS_URL" \
    --channel echo.in --service echo --max-seconds "$WATCHDOG"
ECHO_PID=$LAST_PID
sleep 0.5

# ---- gateways ----------------------------------------------------------------------------------
GW_PID=
GW_PORT=
POLL_PORT=$(free_port)
start_gateway() { # $1: a name for its log
    GW_PORT=$(free_port)
    cat >"$WORK/refract.toml" <<EOF
node_id = "bench"

[server]
listen = "127.0.0.1:$GW_PORT"
max_connections = 19000

[redis]
url = "$REDIS_URL"

[routes."/echo".services.echo]
type = "redis"
request_channel = "echo.in"

[routes."/idle".services.echo]
type = "redis"
request_channel = "echo.in"

[routes."/fan".services.fan]
type = "redis"
request_channel = "fan.in"

# Scenario 4: a legacy HTTP service (served by refract-bench polling) polled every second.
[routes."/poll".services.legacy]
type = "http"
url = "http://127.0.0.1:$POLL_PORT/poll"
polling_interval = "1s"

# Scenario 3b: Channels, presence off (a broadcast topic: no O(n^2) join announcements).
[channels]
jwt_secret = "bench-only-secret-0123456789abcdef"
idle_timeout = "300s"
[channels.token_endpoint]
path = "/token"
open = true
[channels.presence]
enabled = false
EOF
    # refract raises its own soft file limit at start-up; the wrapper does it for older builds.
    spawn "$WORK/gateway-$1.out" "$WORK/gateway-$1.err" \
        bash -c 'ulimit -n "$(ulimit -Hn)" && exec "$0" --config "$1"' "$GATEWAY" "$WORK/refract.toml"
    GW_PID=$LAST_PID
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$GW_PORT/readyz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    log "gateway did not become ready; its log:"
    tail -20 "$WORK/gateway-$1.err" >&2
    exit 1
}

# Runs one load-generator subcommand, appending its JSON line (and the CPU that the gateway,
# Redis and the echo service used meanwhile) to the results.
measure() { # $1: label, rest: refract-bench arguments
    local label=$1
    shift
    local g0 r0 e0 g1 r1 e1 m0 m1 w0 w1 line
    m0=$(machine_busy)
    w0=$(date +%s.%N)
    g0=$( [ -n "$GW_PID" ] && cpu_of "$GW_PID" || echo 0)
    r0=$(cpu_of "$REDIS_PID")
    e0=$(cpu_of "$ECHO_PID")
    if ! line=$("$BENCH" "$@" 2>>"$WORK/loadgen.err"); then
        log "$label failed:"
        tail -5 "$WORK/loadgen.err" >&2
        line='{"scenario":"failed"}'
    fi
    g1=$( [ -n "$GW_PID" ] && cpu_of "$GW_PID" || echo 0)
    r1=$(cpu_of "$REDIS_PID")
    e1=$(cpu_of "$ECHO_PID")
    m1=$(machine_busy)
    w1=$(date +%s.%N)
    # machine_cpu_s covers everything, including whatever else runs on the machine meanwhile.
    printf '{"label":"%s","wall_s":%s,"machine_cpu_s":%s,"gateway_cpu_s":%s,"redis_cpu_s":%s,"echo_cpu_s":%s,"result":%s}\n' \
        "$label" "$(diff_s "$w1" "$w0")" "$(diff_s "$m1" "$m0")" "$(diff_s "$g1" "$g0")" \
        "$(diff_s "$r1" "$r0")" "$(diff_s "$e1" "$e0")" "$line" >>"$RESULTS"
    log "$label: $(echo "$line" | cut -c1-220)"
}

# ---- 1. round trips against the ceiling --------------------------------------------------------
log "scenario 1: closed-loop echo, ceiling vs refract, at $CONNS connections"
start_gateway echo
for n in $CONNS; do
    GW_SAVED=$GW_PID
    GW_PID=
    measure "ceiling/$n" ceiling --redis "$REDIS_URL" --channel echo.in --conns "$n" \
        --warmup "$WARMUP" --duration "$DURATION"
    GW_PID=$GW_SAVED
    measure "refract/$n" ws --url "ws://127.0.0.1:$GW_PORT/echo" --conns "$n" \
        --warmup "$WARMUP" --duration "$DURATION"
done
if [ -n "${EXTRA_WS_URL:-}" ]; then
    GW_SAVED=$GW_PID
    GW_PID=${EXTRA_PID:-}
    for n in $CONNS; do
        measure "${EXTRA_NAME:-other}/$n" ws --url "$EXTRA_WS_URL" --conns "$n" \
            --warmup "$WARMUP" --duration "$DURATION"
    done
    GW_PID=$GW_SAVED
fi

if [ "$PROFILE" = 1 ] && command -v perf >/dev/null; then
    log "profiling the gateway: perf record while 1000 connections run the closed loop"
    "$BENCH" ws --url "ws://127.0.0.1:$GW_PORT/echo" --conns 1000 --warmup 1 --duration 9 \
        >"$WORK/profile-load.json" 2>>"$WORK/loadgen.err" &
    load=$!
    sleep 3
    perf record -F 999 -p "$GW_PID" -o "$WORK/perf.data" -- sleep 6 >/dev/null 2>"$WORK/perf.err" || true
    wait "$load" || true
    {
        echo "# perf record -F 999 -p <refract> -- sleep 6, 1000 connections in the closed loop"
        echo "# Self time (cpu-clock samples), no call graph: release builds have no frame pointers."
        echo "# By object:"
        perf report -i "$WORK/perf.data" --no-children --sort dso -F overhead,dso --stdio \
            2>/dev/null | grep -E '^ +[0-9.]+%' | sort -rn
        echo
        echo "# By symbol, top 60:"
        perf report -i "$WORK/perf.data" --no-children --sort symbol -F overhead,sym --stdio \
            2>/dev/null | grep -E '^ +[0-9.]+%' | sort -rn | cut -c1-160 | head -60
    } | sed "s/ *$//" >"$WORK/profile.txt" || true
fi
stop "$GW_PID"

# ---- 2. idle connections and memory -------------------------------------------------------------
log "scenario 2: $IDLE_CONNS idle connections on one route"
start_gateway idle
sleep 1
measure "idle/$IDLE_CONNS" idle --url "ws://127.0.0.1:$GW_PORT/idle" --conns "$IDLE_CONNS" \
    --gateway-pid "$GW_PID" --redis "$REDIS_URL" --channel echo.in \
    --metrics "127.0.0.1:$GW_PORT/metrics"
stop "$GW_PID"

# ---- 3. fan-out (Channels stand-in) ------------------------------------------------------------
log "scenario 3: fan-out to $FAN_CONNS clients (Channels stand-in: one PUBLISH per id)"
start_gateway fan
measure "fanout/$FAN_CONNS" fanout --url "ws://127.0.0.1:$GW_PORT/fan" --conns "$FAN_CONNS" \
    --redis "$REDIS_URL" --channel fan.in --service fan --rounds "$FAN_ROUNDS"
curl -fs "http://127.0.0.1:$GW_PORT/metrics" >"$WORK/fan-metrics.txt" 2>/dev/null || true
stop "$GW_PID"
GW_PID=

# ---- 3b. Channels fan-out ------------------------------------------------------------------------
for n in $CH_FAN_CONNS; do
    log "scenario 3b: Channels fan-out, one PUBLISH to $n joined sockets"
    start_gateway "chfan-$n"
    measure "chfanout/$n" chfanout --addr "127.0.0.1:$GW_PORT" --conns "$n" \
        --redis "$REDIS_URL" --rounds "$FAN_ROUNDS"
    stop "$GW_PID"
    GW_PID=
done

# ---- 4. HTTP polling ---------------------------------------------------------------------------
log "scenario 4: $POLL_CONNS connections polled every second"
start_gateway poll
measure "polling/$POLL_CONNS" polling --url "ws://127.0.0.1:$GW_PORT/poll" --conns "$POLL_CONNS" \
    --service-port "$POLL_PORT" --interval 1 --seconds "$POLL_SECONDS" --gateway-pid "$GW_PID"
stop "$GW_PID"
GW_PID=

stop "$ECHO_PID"
cp "$WORK/echo.json" "$WORK/echo-final.json" 2>/dev/null || true

# ---- criterion ---------------------------------------------------------------------------------
if [ "$CRITERION" = 1 ]; then
    log "criterion: prism encode/decode"
    # What `cargo bench -p refract-bench --bench prism` runs, without its second build.
    CRITERION_HOME=$TARGET_DIR/criterion "$CRITERION_EXE" --bench --warm-up-time 1 \
        --measurement-time 2 --noplot >"$WORK/criterion.txt" 2>>"$WORK/criterion.err" \
        || log "criterion failed"
fi

# ---- report ------------------------------------------------------------------------------------
mkdir -p "$OUT"
cp "$RESULTS" "$OUT/results.jsonl"
[ -f "$WORK/profile.txt" ] && cp "$WORK/profile.txt" "$OUT/profile.txt"
python3 bench/report.py --results "$RESULTS" --criterion "$TARGET_DIR/criterion" \
    --echo "$WORK/echo-final.json" --out "$OUT" --elapsed $(($(date +%s) - started)) \
    --redis-version "$(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')"
log "done in $(($(date +%s) - started)) s: $OUT/results.md (work files in $WORK)"
