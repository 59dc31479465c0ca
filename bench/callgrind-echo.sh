#!/usr/bin/env bash
# Instructions per echo round trip (and per Channels fan-out frame) through one gateway build,
# counted by callgrind: a measure that the machine's noise cannot move. A shorthand for
# scenario 7 of bench/run.sh, which holds the command:
#
#     bench/callgrind-echo.sh [GATEWAY_BINARY]     (default: the one bench/run.sh builds)
#
# Writes docs/benchmarks/callgrind.md (OUT=dir to write elsewhere, e.g. when comparing builds);
# knobs as bench/run.sh's (CG_ROUND_TRIPS, CG_CONNS, CG_FAN_CONNS, CG_FAN_ROUNDS, BUILD=0).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${1:-}" ]; then export GATEWAY_BIN=$1; fi
ONLY=callgrind exec bench/run.sh
