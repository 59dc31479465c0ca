#!/usr/bin/env bash
# A bounded fuzz run: every target for SECONDS (default 60) each, one at a time, seeded from
# fuzz/corpus/<target>/ (read only) and growing fuzz/work/<target>/ (ignored by git).
# Not part of CI. Usage: fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build
status=0
for t in "${targets[@]}"; do
    mkdir -p "work/$t"
    echo "== $t: ${seconds}s"
    # One process per target (no -jobs: the machine has 2 shared cores). An input that takes
    # over 5 s is a hang, over 1 GiB of memory a blow-up.
    if ! cargo +nightly fuzz run "$t" "work/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=1024 -timeout=5 \
        -print_final_stats=1 2>"work/$t.log"; then
        echo "!! $t found something: see work/$t.log and artifacts/$t/"
        status=1
    fi
    grep -E '^#[0-9]+ +DONE|^stat::number_of_executed_units' "work/$t.log" || true
done
exit $status
