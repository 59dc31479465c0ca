#!/usr/bin/env bash
# Instructions per echo round trip through one gateway build, counted by callgrind: a measure
# that the machine's noise cannot move (the same binary and load give the same count).
#
#     bench/callgrind-echo.sh [GATEWAY_BINARY]     (default: target/release/refract)
#
# Starts a private redis-server and the echo service on 127.0.0.1, runs the gateway under
# `valgrind --tool=callgrind`, zeroes the counters once it is ready, drives CONNS connections
# (default 100) for DUR seconds (default 15) with `refract-bench ws`, dumps, and prints
# `instructions round_trips instructions_per_round_trip`. Build first:
# `cargo build --release -p refract -p refract-bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
GATEWAY=${1:-target/release/refract}
BENCH=${BENCH:-${CARGO_TARGET_DIR:-target}/release/refract-bench}
CONNS=${CONNS:-100}
DUR=${DUR:-15}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
RP=$(free_port)
GP=$(free_port)
W=$(mktemp -d /tmp/refract-callgrind.XXXXXX)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT

timeout 600 redis-server --port "$RP" --bind 127.0.0.1 --save "" --appendonly no >"$W/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do redis-cli -p "$RP" ping >/dev/null 2>&1 && break; sleep 0.1; done
"$BENCH" echo --redis "redis://127.0.0.1:$RP" --channel echo.in --service echo --max-seconds 600 \
    >"$W/echo.json" 2>"$W/echo.err" &
PIDS+=($!)
cat >"$W/refract.toml" <<CFG
node_id = "callgrind"
[server]
listen = "127.0.0.1:$GP"
[redis]
url = "redis://127.0.0.1:$RP"
[routes."/echo".services.echo]
type = "redis"
request_channel = "echo.in"
CFG
REFRACT_LOG=warn timeout 600 valgrind --tool=callgrind --callgrind-out-file="$W/callgrind.out" \
    "$GATEWAY" --config "$W/refract.toml" >"$W/gateway.log" 2>&1 &
GW=$!
PIDS+=($GW)
for _ in $(seq 600); do curl -fs "http://127.0.0.1:$GP/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
callgrind_control -z >/dev/null 2>&1
timeout 300 "$BENCH" ws --url "ws://127.0.0.1:$GP/echo" --conns "$CONNS" --warmup 0 \
    --duration "$DUR" >"$W/ws.json" 2>"$W/ws.err"
callgrind_control -d >/dev/null 2>&1
kill -TERM "$GW" 2>/dev/null || true
wait "$GW" 2>/dev/null || true
dump=$(ls -t "$W"/callgrind.out.* | head -1)
ir=$(callgrind_annotate "$dump" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
rts=$(python3 -c "import json; print(json.load(open('$W/ws.json'))['latency']['count'])")
echo "$ir $rts $((ir / rts))"
