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
#   CLUSTER_CONNS=100 CLUSTER_WARMUP=1 CLUSTER_DURATION=6 CLUSTER_REPEAT=5 CLUSTER_FAN_CONNS=1000
#   CLUSTER_STREAM_CONNS=10 CLUSTER_STREAM_ROUNDS=100 CLUSTER_STREAM_BURST=500 CLUSTER_IDLE=3
#                             scenario 6 (Redis CPU per message, standalone vs a 3-master cluster)
#   CG_ROUND_TRIPS=20000 CG_CONNS=100 CG_FAN_CONNS=1000 CG_FAN_ROUNDS=5
#                             scenario 7 (instructions per echo round trip and per Channels frame,
#                             the gateway and the echo service under valgrind's callgrind)
#   CEIL_FAN_CONNS="1000 10000" CEIL_REPEAT=3
#                             scenario 3c (Channels fan-out against a raw tokio fan-out server)
#   MASS_CONNS=10000 MASS_PRESENCE_CONNS=500
#                             scenario 3d (mass disconnect; presence off, then presence on)
#   RELOAD_CONNS="1000 5000 10000" RELOAD_KEEP=100
#                             scenario 8 (a SIGHUP removing a route with that many clients, with
#                             RELOAD_KEEP clients on a route the reload keeps)
#   GATEWAY_BIN=path          measure this refract binary instead of the one built here
#   BUILD=0                   skip the build, use target/release's binaries (criterion skipped)
#   ONLY="cluster"            run only these scenarios (echo idle fanout chfanout fanout-ceiling
#                             mass-disconnect polling callgrind criterion cluster reload), e.g.
#                             ONLY=cluster takes a few minutes; a partial run leaves results.md
#                             alone (its report goes to the work directory) and writes the own
#                             files of the scenarios it ran: cluster.md, callgrind.md,
#                             fanout-ceiling.md, mass-disconnect.md
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
CLUSTER_CONNS=${CLUSTER_CONNS:-100}
CLUSTER_REPEAT=${CLUSTER_REPEAT:-5}
CLUSTER_WARMUP=${CLUSTER_WARMUP:-1}
CLUSTER_DURATION=${CLUSTER_DURATION:-6}
CLUSTER_FAN_CONNS=${CLUSTER_FAN_CONNS:-1000}
CLUSTER_STREAM_CONNS=${CLUSTER_STREAM_CONNS:-10}
CLUSTER_STREAM_ROUNDS=${CLUSTER_STREAM_ROUNDS:-100}
CLUSTER_STREAM_BURST=${CLUSTER_STREAM_BURST:-500}
CLUSTER_IDLE=${CLUSTER_IDLE:-3}
CG_ROUND_TRIPS=${CG_ROUND_TRIPS:-20000}
CG_CONNS=${CG_CONNS:-100}
CG_FAN_CONNS=${CG_FAN_CONNS:-1000}
CG_FAN_ROUNDS=${CG_FAN_ROUNDS:-5}
CEIL_FAN_CONNS=${CEIL_FAN_CONNS:-"1000 10000"}
CEIL_REPEAT=${CEIL_REPEAT:-3}
MASS_CONNS=${MASS_CONNS:-10000}
MASS_PRESENCE_CONNS=${MASS_PRESENCE_CONNS:-500}
RELOAD_CONNS=${RELOAD_CONNS:-"1000 5000 10000"}
RELOAD_KEEP=${RELOAD_KEEP:-100}
ONLY=${ONLY:-}
OUT=${OUT:-docs/benchmarks}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
# Nothing started here outlives this many seconds, even if this script is killed.
WATCHDOG=${WATCHDOG:-900}

started=$(date +%s)
WORK=$(mktemp -d /tmp/refract-bench.XXXXXX)
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
PIDS=()

runs() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; } # scenario $1 is to run

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

free_ports() { # $1 distinct free ports (all bound at once, so none is handed out twice)
    python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
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

if [ "${BUILD:-1}" = 1 ]; then
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
else
    log "BUILD=0: using the binaries already in $TARGET_DIR/release (no criterion)"
    CRITERION_EXE=
fi
GATEWAY=${GATEWAY_BIN:-$TARGET_DIR/release/refract}
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
# For one gateway: a command it runs under (valgrind), Channels presence, per-socket queue.
GW_WRAP=()
PRESENCE=false
OUTBOUND_QUEUE=1024
start_gateway() { # $1: a name for its log, $2: the [redis] section's keys (default: the run's Redis)
    local redis_keys=${2:-"url = \"$REDIS_URL\""} tries=100
    [ "${#GW_WRAP[@]}" = 0 ] || tries=1200 # valgrind takes a while to start
    GW_PORT=$(free_port)
    cat >"$WORK/refract.toml" <<EOF
node_id = "bench"

[server]
listen = "127.0.0.1:$GW_PORT"
max_connections = 19000

[redis]
$redis_keys

[routes."/echo".services.echo]
type = "redis"
request_channel = "echo.in"

[routes."/idle".services.echo]
type = "redis"
request_channel = "echo.in"

# Scenario 7: the echo round trip with its own echo service (under callgrind too).
[routes."/cg".services.echo]
type = "redis"
request_channel = "cg.in"

[routes."/fan".services.fan]
type = "redis"
request_channel = "fan.in"

# Scenario 4: a legacy HTTP service (served by refract-bench polling) polled every second.
[routes."/poll".services.legacy]
type = "http"
url = "http://127.0.0.1:$POLL_PORT/poll"
polling_interval = "1s"

# Scenario 3b: Channels, presence off (a broadcast topic: no O(n^2) join announcements);
# on for the mass disconnect's second part.
[channels]
jwt_secret = "bench-only-secret-0123456789abcdef"
idle_timeout = "300s"
outbound_queue = $OUTBOUND_QUEUE
[channels.token_endpoint]
path = "/token"
open = true
[channels.presence]
enabled = $PRESENCE
EOF
    # refract raises its own soft file limit at start-up; the wrapper does it for older builds.
    spawn "$WORK/gateway-$1.out" "$WORK/gateway-$1.err" \
        bash -c 'ulimit -n "$(ulimit -Hn)" && exec "$@"' _ "${GW_WRAP[@]}" "$GATEWAY" \
        --config "$WORK/refract.toml"
    GW_PID=$LAST_PID
    for _ in $(seq "$tries"); do
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
if runs echo; then
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
fi

# ---- 2. idle connections and memory -------------------------------------------------------------
if runs idle; then
    log "scenario 2: $IDLE_CONNS idle connections on one route"
    start_gateway idle
    sleep 1
    measure "idle/$IDLE_CONNS" idle --url "ws://127.0.0.1:$GW_PORT/idle" --conns "$IDLE_CONNS" \
        --gateway-pid "$GW_PID" --redis "$REDIS_URL" --channel echo.in \
        --metrics "127.0.0.1:$GW_PORT/metrics"
    stop "$GW_PID"
fi

# ---- 3. fan-out (Channels stand-in) ------------------------------------------------------------
if runs fanout; then
    log "scenario 3: fan-out to $FAN_CONNS clients (Channels stand-in: one PUBLISH per id)"
    start_gateway fan
    measure "fanout/$FAN_CONNS" fanout --url "ws://127.0.0.1:$GW_PORT/fan" --conns "$FAN_CONNS" \
        --redis "$REDIS_URL" --channel fan.in --service fan --rounds "$FAN_ROUNDS"
    curl -fs "http://127.0.0.1:$GW_PORT/metrics" >"$WORK/fan-metrics.txt" 2>/dev/null || true
    stop "$GW_PID"
    GW_PID=
fi

# ---- 3b. Channels fan-out ------------------------------------------------------------------------
if runs chfanout; then
    for n in $CH_FAN_CONNS; do
        log "scenario 3b: Channels fan-out, one PUBLISH to $n joined sockets"
        start_gateway "chfan-$n"
        measure "chfanout/$n" chfanout --addr "127.0.0.1:$GW_PORT" --conns "$n" \
            --redis "$REDIS_URL" --rounds "$FAN_ROUNDS"
        stop "$GW_PID"
        GW_PID=
    done
fi

# ---- 3c. the fan-out ceiling -----------------------------------------------------------------
# The same clients and timing against `refract-bench rawfanout`, a minimal tokio server that
# writes one pre-encoded frame (the text refract would send) to every socket: no Redis, no JSON,
# no Phoenix. Each size runs CEIL_REPEAT times, the order alternating, for paired ratios.
wait_port() { # until something listens on 127.0.0.1:$1, at most 10 s
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    log "nothing listens on port $1"
    exit 1
}

if runs fanout-ceiling; then
    for n in $CEIL_FAN_CONNS; do
        order=(raw refract)
        for rep in $(seq "$CEIL_REPEAT"); do
            log "scenario 3c: fan-out to $n sockets, round $rep of $CEIL_REPEAT: ${order[*]}"
            for who in "${order[@]}"; do
                if [ "$who" = raw ]; then
                    read -r wsp ctl <<<"$(free_ports 2)"
                    spawn "$WORK/rawfanout-$n-$rep.json" "$WORK/rawfanout-$n-$rep.err" "$BENCH" \
                        rawfanout --listen "127.0.0.1:$wsp" --control "127.0.0.1:$ctl" \
                        --max-seconds "$WATCHDOG"
                    GW_PID=$LAST_PID
                    wait_port "$ctl"
                    measure "fanceil/raw/$n/$rep" chfanout --addr "127.0.0.1:$wsp" --conns "$n" \
                        --redis "$REDIS_URL" --rounds "$FAN_ROUNDS" --raw "127.0.0.1:$ctl"
                else
                    start_gateway "fanceil-$n-$rep"
                    measure "fanceil/refract/$n/$rep" chfanout --addr "127.0.0.1:$GW_PORT" \
                        --conns "$n" --redis "$REDIS_URL" --rounds "$FAN_ROUNDS"
                fi
                stop "$GW_PID"
                GW_PID=
            done
            order=("${order[1]}" "${order[0]}")
        done
    done
fi

# ---- 3d. mass disconnect ----------------------------------------------------------------------
# Every member of one topic closes at once: time until the gateway's refract_channels_joined is 0
# and the topic's presence hash is empty. With presence on, every join is announced to every
# member (O(n^2) frames), so that part runs at MASS_PRESENCE_CONNS, with a queue per socket
# large enough for the announcements of the join phase.
if runs mass-disconnect; then
    log "scenario 3d: $MASS_CONNS members of one topic close at once (presence off)"
    start_gateway mass
    measure "mass/off/$MASS_CONNS" massclose --addr "127.0.0.1:$GW_PORT" --conns "$MASS_CONNS" \
        --redis "$REDIS_URL" --topic mass-off
    stop "$GW_PID"
    if [ "$MASS_PRESENCE_CONNS" -gt 0 ]; then
        log "scenario 3d: $MASS_PRESENCE_CONNS members of one topic close at once (presence on)"
        PRESENCE=true OUTBOUND_QUEUE=$((MASS_PRESENCE_CONNS + 1024))
        start_gateway mass-presence
        measure "mass/on/$MASS_PRESENCE_CONNS" massclose --addr "127.0.0.1:$GW_PORT" \
            --conns "$MASS_PRESENCE_CONNS" --redis "$REDIS_URL" --topic mass-on --presence
        stop "$GW_PID"
        PRESENCE=false OUTBOUND_QUEUE=1024
    fi
    GW_PID=
fi

# ---- 4. HTTP polling ---------------------------------------------------------------------------
if runs polling; then
    log "scenario 4: $POLL_CONNS connections polled every second"
    start_gateway poll
    measure "polling/$POLL_CONNS" polling --url "ws://127.0.0.1:$GW_PORT/poll" --conns "$POLL_CONNS" \
        --service-port "$POLL_PORT" --interval 1 --seconds "$POLL_SECONDS" --gateway-pid "$GW_PID"
    stop "$GW_PID"
    GW_PID=
fi

# ---- 6. Redis Cluster: Redis CPU per message, standalone vs sharded vs classic pub/sub ----------
# With classic PUBLISH every cluster node hears every message (the bus broadcasts it); with
# sharded pub/sub only the node owning the channel's slot does. Same run, same machine: the
# ratios are the result, not the absolute figures.

redis_cpu() { # CPU seconds (user + system) the Redis servers on these ports have used, summed
    # INFO's figure is getrusage's, in microseconds; /proc counts 10 ms ticks, too coarse for
    # the few milliseconds a fan-out costs Redis.
    local p
    for p in "$@"; do redis-cli -p "$p" info cpu; done | tr -d '\r' \
        | awk -F: '/^used_cpu_(sys|user):/ { s += $2 } END { printf "%.6f", s }'
}

redis_published() { # PUBLISH and SPUBLISH calls the servers on these ports have executed
    # Messages a node receives over the cluster bus are not calls, so each message counts once.
    local p
    for p in "$@"; do redis-cli -p "$p" info commandstats; done | tr -d '\r' \
        | awk -F'[:=,]' '/^cmdstat_s?publish:/ { n += $3 } END { print n + 0 }'
}

redis_reads() { # reads from client sockets the servers on these ports have done (a batching measure)
    local p
    for p in "$@"; do redis-cli -p "$p" info stats; done | tr -d '\r' \
        | awk -F: '/^total_reads_processed:/ { n += $2 } END { print n + 0 }'
}

slot_node() { # $1: a cluster node's port, $2: a slot; the port of the master that owns the slot
    redis-cli -p "$1" cluster nodes | tr -d '\r' | awk -v s="$2" '{
        for (i = 9; i <= NF; i++) {
            n = split($i, r, "-"); if (n == 1) r[2] = r[1]
            if (s + 0 >= r[1] + 0 && s + 0 <= r[2] + 0) { split($2, a, "[:@]"); print a[2] }
        }
    }'
}

subscribers() { # $1: NUMSUB or SHARDNUMSUB, $2: channel, rest: ports; subscribers summed over them
    local p n=0
    for p in "${@:3}"; do n=$((n + $(redis-cli -p "$p" pubsub "$1" "$2" | tail -1))); done
    echo "$n"
}

wait_subscribed() { # same arguments: until the channel has a subscriber, at most 10 s
    for _ in $(seq 100); do
        [ "$(subscribers "$@")" -gt 0 ] && return 0
        sleep 0.1
    done
    log "nobody subscribed to $2 ($1) on ports ${*:3}"
    exit 1
}

# Like measure, for this section: the Redis CPU is that of every server on the ports given, with
# the messages they carried meanwhile and what those servers would have used idle in that time.
cmeasure() { # $1: label, $2: "ports", $3: their idle CPU s per s, $4: echo pid or "", rest: args
    local label=$1 idle=$3 echo_pid=$4 ports
    read -ra ports <<<"$2"
    shift 4
    local r0 r1 n0 n1 d0 d1 g0 g1 e0 e1 m0 m1 w0 w1 wall line
    r0=$(redis_cpu "${ports[@]}")
    n0=$(redis_published "${ports[@]}")
    d0=$(redis_reads "${ports[@]}")
    g0=$(cpu_of "$GW_PID")
    e0=$( [ -n "$echo_pid" ] && cpu_of "$echo_pid" || echo 0)
    m0=$(machine_busy)
    w0=$(date +%s.%N)
    if ! line=$("$BENCH" "$@" 2>>"$WORK/loadgen.err"); then
        log "$label failed:"
        tail -5 "$WORK/loadgen.err" >&2
        line='{"scenario":"failed"}'
    fi
    w1=$(date +%s.%N)
    m1=$(machine_busy)
    g1=$(cpu_of "$GW_PID")
    e1=$( [ -n "$echo_pid" ] && cpu_of "$echo_pid" || echo 0)
    r1=$(redis_cpu "${ports[@]}")
    n1=$(redis_published "${ports[@]}")
    d1=$(redis_reads "${ports[@]}")
    wall=$(diff_s "$w1" "$w0")
    printf '{"label":"%s","wall_s":%s,"machine_cpu_s":%s,"gateway_cpu_s":%s,"echo_cpu_s":%s,"redis_nodes":%s,"redis_cpu_s":%s,"redis_idle_cpu_s":%s,"published":%s,"redis_reads":%s,"result":%s}\n' \
        "$label" "$wall" "$(diff_s "$m1" "$m0")" "$(diff_s "$g1" "$g0")" "$(diff_s "$e1" "$e0")" \
        "${#ports[@]}" "$(awk -v a="$r1" -v b="$r0" 'BEGIN { printf "%.6f", a - b }')" \
        "$(awk -v r="$idle" -v w="$wall" 'BEGIN { printf "%.6f", r * w }')" \
        "$((n1 - n0))" "$((d1 - d0))" "$line" >>"$RESULTS"
    log "$label: $((n1 - n0)) messages, Redis $(awk -v a="$r1" -v b="$r0" 'BEGIN { printf "%.3f", a - b }') CPU s; $(echo "$line" | cut -c1-160)"
}

if runs cluster; then
    log "scenario 6: Redis CPU per message, standalone vs a 3-master cluster (sharded and classic)"
    # Cluster ports and bus ports picked explicitly: port + 10000 may not exist.
    read -ra picked <<<"$(free_ports 6)"
    CL_PORTS=("${picked[@]:0:3}")
    CL_PIDS=()
    for i in 0 1 2; do
        p=${CL_PORTS[$i]}
        # The standalone server's settings, plus the cluster's own.
        spawn "$WORK/cluster-$p.out" "$WORK/cluster-$p.err" redis-server --port "$p" \
            --bind 127.0.0.1 --save "" --appendonly no --protected-mode yes --maxclients 1000 \
            --dir "$WORK" --cluster-enabled yes --cluster-config-file "$WORK/nodes-$p.conf" \
            --cluster-port "${picked[$((i + 3))]}" --cluster-node-timeout 2000
        CL_PIDS+=("$LAST_PID")
    done
    for p in "${CL_PORTS[@]}"; do
        for _ in $(seq 50); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
    done
    timeout 30 redis-cli --cluster create "${CL_PORTS[@]/#/127.0.0.1:}" --cluster-replicas 0 \
        --cluster-yes >"$WORK/cluster-create.out" 2>&1 \
        || { log "redis-cli --cluster create failed:"; tail -5 "$WORK/cluster-create.out" >&2; exit 1; }
    for _ in $(seq 100); do
        ok=0
        for p in "${CL_PORTS[@]}"; do
            info=$(redis-cli -p "$p" cluster info | tr -d '\r')
            [[ $info == *cluster_state:ok* && $info == *cluster_known_nodes:3* ]] && ok=$((ok + 1))
        done
        [ "$ok" = 3 ] && break
        sleep 0.1
    done
    [ "$ok" = 3 ] || { log "the cluster did not become ok on all three nodes"; exit 1; }
    P1=${CL_PORTS[0]}
    P2=${CL_PORTS[1]}
    SEEDS=$(printf '"redis://127.0.0.1:%s", ' "${CL_PORTS[@]}")
    SHARDED_KEYS="mode = \"cluster\"
nodes = [${SEEDS%, }]"
    # The same with a response channel whose slot is on echo.in's node: the round trip's two
    # messages on one node, as on the standalone server, which tells the cost of cluster mode
    # from that of spreading the work over two event loops.
    event_node=$(slot_node "$P1" "$(redis-cli -p "$P1" cluster keyslot echo.in)")
    for n in $(seq 200); do
        one_node_prefix=refract.responses$n
        [ "$(slot_node "$P1" "$(redis-cli -p "$P1" cluster keyslot "$one_node_prefix.bench")")" = "$event_node" ] && break
    done
    ONE_NODE_KEYS="$SHARDED_KEYS
response_channel = \"$one_node_prefix\""
    # Classic pub/sub on the cluster: the gateway on one node, its services on another, so every
    # event and reply crosses the bus (and reaches the third node too).
    CLASSIC_KEYS="url = \"redis://127.0.0.1:$P1\""
    log "cluster up on ${CL_PORTS[*]}: echo.in on $event_node, the response channel on $(slot_node "$P1" "$(redis-cli -p "$P1" cluster keyslot refract.responses.bench)"), $one_node_prefix.bench on $(slot_node "$P1" "$(redis-cli -p "$P1" cluster keyslot "$one_node_prefix.bench")")"

    # What each set of servers uses doing nothing (cron, cluster bus pings), in one window.
    a0=$(redis_cpu "$REDIS_PORT"); c0=$(redis_cpu "${CL_PORTS[@]}"); w0=$(date +%s.%N)
    sleep "$CLUSTER_IDLE" # a measuring window, not a wait for something to happen
    a1=$(redis_cpu "$REDIS_PORT"); c1=$(redis_cpu "${CL_PORTS[@]}"); w1=$(date +%s.%N)
    SA_IDLE=$(awk -v a="$a1" -v b="$a0" -v w="$(diff_s "$w1" "$w0")" 'BEGIN { printf "%.6f", (a - b) / w }')
    CL_IDLE=$(awk -v a="$c1" -v b="$c0" -v w="$(diff_s "$w1" "$w0")" 'BEGIN { printf "%.6f", (a - b) / w }')
    log "idle Redis CPU: standalone $SA_IDLE s/s, cluster (3 nodes) $CL_IDLE s/s"

    # Each mode's gateway, services, servers and idle CPU; $1: standalone, sharded, onenode
    # (sharded, both channels of the echo on one node) or classic.
    cluster_mode() {
        case $1 in
            standalone) keys=; on="$REDIS_PORT"; idle=$SA_IDLE; pub=(--redis "$REDIS_URL") ;;
            sharded) keys=$SHARDED_KEYS; on="${CL_PORTS[*]}"; idle=$CL_IDLE
                pub=(--sharded --redis "redis://127.0.0.1:$P1") ;;
            onenode) keys=$ONE_NODE_KEYS; on="${CL_PORTS[*]}"; idle=$CL_IDLE ;;
            classic) keys=$CLASSIC_KEYS; on="${CL_PORTS[*]}"; idle=$CL_IDLE
                pub=(--redis "redis://127.0.0.1:$P2") ;;
        esac
    }
    # Redis's CPU per message depends on how busy it is (more commands per wake-up cost less
    # each), and the machine is shared: each mode runs CLUSTER_REPEAT times, the order rotating,
    # and the report takes each mode's median.
    MODES=(standalone sharded onenode classic)
    echo_args=(ws --conns "$CLUSTER_CONNS" --warmup "$CLUSTER_WARMUP" --duration "$CLUSTER_DURATION")
    for rep in $(seq "$CLUSTER_REPEAT"); do
        log "closed-loop echo at $CLUSTER_CONNS connections, round $rep of $CLUSTER_REPEAT: ${MODES[*]}"
        for mode in "${MODES[@]}"; do
            cluster_mode "$mode"
            case $mode in
                standalone) svc=$ECHO_PID ;;
                sharded | onenode)
                    spawn "$WORK/echo-$mode-$rep.json" "$WORK/echo-$mode-$rep.err" "$BENCH" echo \
                        "${CL_PORTS[@]/#/--cluster=redis://127.0.0.1:}" --channel echo.in \
                        --service echo --max-seconds "$WATCHDOG"
                    svc=$LAST_PID
                    wait_subscribed shardnumsub echo.in "${CL_PORTS[@]}" ;;
                classic)
                    spawn "$WORK/echo-classic-$rep.json" "$WORK/echo-classic-$rep.err" "$BENCH" echo \
                        --redis "redis://127.0.0.1:$P2" --channel echo.in --service echo \
                        --max-seconds "$WATCHDOG"
                    svc=$LAST_PID
                    wait_subscribed numsub echo.in "$P2" ;;
            esac
            start_gateway "cl-echo-$mode-$rep" "$keys"
            cmeasure "cluster/echo/$mode/$rep" "$on" "$idle" "$svc" \
                "${echo_args[@]}" --url "ws://127.0.0.1:$GW_PORT/echo"
            stop "$GW_PID"
            [ "$svc" = "$ECHO_PID" ] || stop "$svc"
        done
        MODES=("${MODES[@]:1}" "${MODES[0]}")
    done

    # A topic is one channel, so one node, whatever the mode: no onenode variant.
    MODES=(standalone sharded classic)
    # Channels: the fan-out's timing with $CLUSTER_FAN_CONNS sockets, then a stream of pipelined
    # ticks to a few sockets, enough messages for Redis's share to stand out from its idle CPU
    # (a burst larger than the gateway's per-socket queue, 1024 frames, gets sockets closed).
    for rep in $(seq "$CLUSTER_REPEAT"); do
        log "Channels, round $rep of $CLUSTER_REPEAT: $CLUSTER_FAN_CONNS sockets, then $CLUSTER_STREAM_CONNS sockets and $CLUSTER_STREAM_ROUNDS x $CLUSTER_STREAM_BURST ticks: ${MODES[*]}"
        for mode in "${MODES[@]}"; do
            cluster_mode "$mode"
            start_gateway "cl-chfan-$mode-$rep" "$keys"
            cmeasure "cluster/chfan/$mode/$rep" "$on" "$idle" "" chfanout --addr "127.0.0.1:$GW_PORT" \
                --conns "$CLUSTER_FAN_CONNS" --rounds "$FAN_ROUNDS" --topic fan "${pub[@]}"
            cmeasure "cluster/chstream/$mode/$rep" "$on" "$idle" "" chfanout \
                --addr "127.0.0.1:$GW_PORT" --conns "$CLUSTER_STREAM_CONNS" \
                --rounds "$CLUSTER_STREAM_ROUNDS" --burst "$CLUSTER_STREAM_BURST" --pause-ms 20 \
                --topic stream "${pub[@]}"
            stop "$GW_PID"
        done
        MODES=("${MODES[@]:1}" "${MODES[0]}")
    done
    GW_PID=
    for pid in "${CL_PIDS[@]}"; do stop "$pid"; done
fi

# ---- 7. instructions per round trip and per fan-out frame (callgrind) ------------------------
# Instructions, not seconds: the same binary and load give the same count however busy the
# machine is. The gateway (and for the echo, an echo service of its own) run under callgrind;
# the load generator zeroes their counters once its clients are connected (or joined) and dumps
# them when the fixed work is done, before anything closes. bench/report.py splits the gateway's
# instructions by function (callgrind.md says which symbols go where).
if runs callgrind; then
    command -v valgrind >/dev/null || apt_install valgrind
    CG=(valgrind --tool=callgrind --dump-instr=no --compress-strings=no --compress-pos=no
        --collect-systime=yes)
    log "scenario 7: $CG_ROUND_TRIPS echo round trips over $CG_CONNS connections under callgrind"
    spawn "$WORK/cg-echo.json" "$WORK/cg-echo.err" "${CG[@]}" \
        --callgrind-out-file="$WORK/cg-echo-service.out" "$BENCH" echo --redis "$REDIS_URL" \
        --channel cg.in --service echo --max-seconds "$WATCHDOG"
    CG_ECHO=$LAST_PID
    for _ in $(seq 600); do
        [ "$(redis-cli -p "$REDIS_PORT" pubsub numsub cg.in | tail -1)" -gt 0 ] && break
        sleep 0.1
    done
    GW_WRAP=("${CG[@]}" --callgrind-out-file="$WORK/cg-gateway-echo.out")
    start_gateway cg-echo
    ECHO_SAVED=$ECHO_PID
    ECHO_PID=$CG_ECHO
    measure "callgrind/echo/$CG_CONNS" ws --url "ws://127.0.0.1:$GW_PORT/cg" --conns "$CG_CONNS" \
        --round-trips "$CG_ROUND_TRIPS" --duration 1200 \
        --exec-before "callgrind_control -z $GW_PID && callgrind_control -z $CG_ECHO" \
        --exec-after "callgrind_control -d $GW_PID && callgrind_control -d $CG_ECHO"
    ECHO_PID=$ECHO_SAVED
    stop "$GW_PID"
    stop "$CG_ECHO"

    log "scenario 7: one Channels broadcast to $CG_FAN_CONNS sockets, $CG_FAN_ROUNDS times, under callgrind"
    GW_WRAP=("${CG[@]}" --callgrind-out-file="$WORK/cg-gateway-fan.out")
    start_gateway cg-fan
    measure "callgrind/chfan/$CG_FAN_CONNS" chfanout --addr "127.0.0.1:$GW_PORT" \
        --conns "$CG_FAN_CONNS" --redis "$REDIS_URL" --rounds "$CG_FAN_ROUNDS" --pause-ms 100 \
        --exec-before "callgrind_control -z $GW_PID" --exec-after "callgrind_control -d $GW_PID"
    stop "$GW_PID"
    GW_PID=
    GW_WRAP=()
    # The dumps taken by -d (numbered), not the ones written at exit.
    for f in "$WORK"/cg-*.out; do
        d=$(ls "$f".* 2>/dev/null | head -1)
        [ -n "$d" ] && mv "$d" "${f%.out}.dump"
    done
fi

# ---- 8. config reload under load -------------------------------------------------------------
# A gateway with two routes, /keep and /gone, each with one Redis service, on a Redis of its own;
# N clients on /gone and RELOAD_KEEP on /keep. The config file is replaced by one without /gone
# (and /keep changed: a key added), and the gateway gets SIGHUP: timed from the signal to every
# /gone client holding its 1001 close, gone.in having heard N disconnects, and
# refract_config_reloads_total{result="ok"} counted; /keep's clients must stay open and answered.
# Not in results.md: docs/benchmarks/reload.md reports these rows (reload/N in results.jsonl).
if runs reload; then
    RL_REDIS_PORT=$(free_port)
    spawn "$WORK/redis-reload.out" "$WORK/redis-reload.err" redis-server --port "$RL_REDIS_PORT" \
        --bind 127.0.0.1 --save "" --appendonly no --protected-mode yes --maxclients 1000
    RL_REDIS_PID=$LAST_PID
    for _ in $(seq 50); do redis-cli -p "$RL_REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
    redis-cli -p "$RL_REDIS_PORT" ping >/dev/null
    reload_config() { # $1: "before" (both routes) or "after" (/gone removed, /keep changed)
        cat <<EOF
node_id = "bench"

[server]
listen = "127.0.0.1:$GW_PORT"
max_connections = 19000

[redis]
url = "redis://127.0.0.1:$RL_REDIS_PORT"

[routes."/keep"]
$([ "$1" = after ] && echo 'max_message_size = 32768')

[routes."/keep".services.keep]
type = "redis"
request_channel = "keep.in"
EOF
        [ "$1" = after ] || cat <<EOF

[routes."/gone".services.gone]
type = "redis"
request_channel = "gone.in"
EOF
    }
    for n in $RELOAD_CONNS; do
        log "scenario 8: SIGHUP removes a route with $n clients ($RELOAD_KEEP on the route kept)"
        GW_PORT=$(free_port)
        reload_config before >"$WORK/reload-$n.toml"
        reload_config after >"$WORK/reload-$n-after.toml"
        spawn "$WORK/gateway-reload-$n.out" "$WORK/gateway-reload-$n.err" \
            bash -c 'ulimit -n "$(ulimit -Hn)" && exec "$@"' _ "$GATEWAY" \
            --config "$WORK/reload-$n.toml"
        GW_PID=$LAST_PID
        for _ in $(seq 100); do
            curl -fs "http://127.0.0.1:$GW_PORT/readyz" >/dev/null 2>&1 && break
            sleep 0.1
        done
        curl -fs "http://127.0.0.1:$GW_PORT/readyz" >/dev/null 2>&1 || {
            log "gateway did not become ready; its log:"
            tail -20 "$WORK/gateway-reload-$n.err" >&2
            exit 1
        }
        REDIS_SAVED=$REDIS_PID
        REDIS_PID=$RL_REDIS_PID
        measure "reload/$n" reload --addr "127.0.0.1:$GW_PORT" --gateway-pid "$GW_PID" \
            --config "$WORK/reload-$n.toml" --new-config "$WORK/reload-$n-after.toml" \
            --redis "redis://127.0.0.1:$RL_REDIS_PORT" --conns "$n" --keep-conns "$RELOAD_KEEP" \
            --gateway-log "$WORK/gateway-reload-$n.err"
        REDIS_PID=$REDIS_SAVED
        # The gateway's own account of the reload, for the record.
        grep -h 'config reload' "$WORK/gateway-reload-$n.err" | cut -c1-300 >&2 \
            || log "the gateway logged no config reload"
        stop "$GW_PID"
    done
    GW_PID=
    stop "$RL_REDIS_PID"
fi

stop "$ECHO_PID"
cp "$WORK/echo.json" "$WORK/echo-final.json" 2>/dev/null || true

# ---- criterion ---------------------------------------------------------------------------------
if [ "$CRITERION" = 1 ] && [ -n "$CRITERION_EXE" ] && runs criterion; then
    log "criterion: prism encode/decode"
    # What `cargo bench -p refract-bench --bench prism` runs, without its second build.
    CRITERION_HOME=$TARGET_DIR/criterion "$CRITERION_EXE" --bench --warm-up-time 1 \
        --measurement-time 2 --noplot >"$WORK/criterion.txt" 2>>"$WORK/criterion.err" \
        || log "criterion failed"
fi

# ---- report ------------------------------------------------------------------------------------
mkdir -p "$OUT"
# A partial run (ONLY) would replace the full run's results.md with a few sections: its report
# goes to the work directory, and only cluster.md (when scenario 6 ran) into $OUT.
REPORT_OUT=$OUT
if [ -z "$ONLY" ]; then
    cp "$RESULTS" "$OUT/results.jsonl"
    [ -f "$WORK/profile.txt" ] && cp "$WORK/profile.txt" "$OUT/profile.txt"
else
    REPORT_OUT=$WORK
fi
python3 bench/report.py --results "$RESULTS" --criterion "$TARGET_DIR/criterion" --work "$WORK" \
    --echo "$WORK/echo-final.json" --out "$REPORT_OUT" --cluster-out "$OUT" \
    --elapsed $(($(date +%s) - started)) \
    --redis-version "$(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')"
own=
for s in cluster callgrind fanout-ceiling mass-disconnect; do runs "$s" && own+=" $OUT/$s.md"; done
log "done in $(($(date +%s) - started)) s: $REPORT_OUT/results.md$own (work files in $WORK)"
