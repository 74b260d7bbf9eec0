#!/usr/bin/env bash
# Before/after comparison (BENCHMARKS.md): unpacks the crate at BASE_REV into bench/compare/before
# (renamed so both versions link into one program), builds the comparison in its own target
# directory (not the crate's), and runs it pinned to one core.
#
#   bench/compare/run.sh BASE_REV [SIZE]      e.g. bench/compare/run.sh 6e27468 1024
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
rev=${1:?usage: bench/compare/run.sh BASE_REV [SIZE]}
size=${2:-1024}
cd "$here"
rm -rf before && mkdir before
git -C ../.. archive "$rev" | tar -x -C before
# Another version number, so Cargo accepts both copies of the crate in one build.
sed -i 's/^version = ".*"/version = "0.0.1"/' before/Cargo.toml
# The comparison only needs the library: drop the copy's dev-only sections and targets.
sed -i '/^\[dev-dependencies/,$d' before/Cargo.toml
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${TMPDIR:-/tmp}/metigan-webhook-compare}
cargo build --release --quiet
taskset -c "${CPU:-1}" "$CARGO_TARGET_DIR/release/metigan-webhook-compare" "$size"
