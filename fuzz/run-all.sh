#!/usr/bin/env bash
# Runs every fuzz target for SECONDS seconds each (default 660), one after the other, from the
# seeds of the shared vectors plus the corpus of earlier runs. Logs go to fuzz/logs/.
# Usage: fuzz/run-all.sh [seconds]      (needs `cargo install cargo-fuzz`)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-660}"
python3 fuzz/make-seeds.py
mkdir -p fuzz/logs
for target in parse_header verify_differential envelope; do
    echo "== $target: ${seconds}s"
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"fuzz/logs/$target.log" 2>&1 \
        || { echo "$target FAILED: see fuzz/logs/$target.log"; exit 1; }
    grep -E "DONE|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb" \
        "fuzz/logs/$target.log" || true
done
