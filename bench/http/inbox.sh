#!/usr/bin/env bash
# Durable inbox benchmark (BENCHMARKS.md section 8): the receiver acknowledging each event only
# once it is synced to its inbox file (the default), against the same receiver handling each
# event inside the request (INBOX=off), in alternating rounds on 127.0.0.1: wrk with signed 1 KiB
# events (every request its own messageId), 64 connections, the receiver on one core and wrk on
# the other.
#
#   bench/http/inbox.sh
#
# Per mode, the median over the rounds of requests/s, p50 and p99; for the inbox also the
# file's syncs per append (the receiver logs its file's counters when it stops) and the worker's
# throughput: events handled per second from the first request until every acknowledged event
# was handled. Tunable: ROUNDS=5 DURATION=6 CONNECTIONS=64 SERVER_CPU=0 LOAD_CPU=1 bench/http/inbox.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-6}
CONNECTIONS=${CONNECTIONS:-64}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
OUT=${OUT:-target/bench-inbox}
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export WEBHOOK_SECRET=whsec_benchmark_secret_5f1d2c3b4a
URL="http://127.0.0.1:$PORT/webhooks/metigan"

say() { printf '==> %s\n' "$*" >&2; }
command -v wrk >/dev/null || { echo "inbox.sh: wrk is missing (Debian package wrk)" >&2; exit 2; }
say "building the receiver (release)"
cargo build --release --quiet --example receiver
mkdir -p "$OUT"
rm -f "$OUT"/*
printf 'mode\tround\trps\tp50_ms\tp99_ms\tsyncs_per_append\tworker_eps\n' >"$OUT/results.tsv"

SERVER_PID=
stop_server() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=
}
trap stop_server EXIT

to_ms() {
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}

run_one() { # mode round
    local mode=$1 round=$2 file="$OUT/$1.$2.wrk" lines="$OUT/$1.$2.lines" log="$OUT/$1.$2.stderr"
    local inbox_env=(INBOX=off)
    if [ "$mode" = inbox ]; then
        rm -f "$OUT/inbox.redb"
        inbox_env=(INBOX_PATH="$OUT/inbox.redb")
    fi
    env "${inbox_env[@]}" PORT="$PORT" RUST_LOG=info NO_COLOR=1 taskset -c "$SERVER_CPU" \
        target/release/examples/receiver >"$lines" 2>"$log" &
    SERVER_PID=$!
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
        sleep 0.05
    done
    local started=$EPOCHREALTIME
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
        -s bench/http/signed.lua "$URL" >"$file"
    if grep -q 'Non-2xx\|Socket errors' "$file"; then
        echo "inbox.sh: $mode answered errors under load:" >&2; cat "$file" >&2; exit 1
    fi
    local requests eps=- syncs=-
    requests=$(awk '/requests in/ {print $1}' "$file")
    if [ "$mode" = inbox ]; then
        # Every acknowledged event is handled (one line each) before the worker's figure is taken.
        for _ in $(seq 1800); do
            [ "$(wc -l <"$lines")" -ge "$requests" ] && break
            sleep 0.1
        done
        local handled
        handled=$(wc -l <"$lines")
        eps=$(awk -v n="$handled" -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.0f", n / (b - a)}')
        [ "$handled" -ge "$requests" ] || { echo "inbox.sh: only $handled of $requests handled" >&2; exit 1; }
    fi
    stop_server
    if [ "$mode" = inbox ]; then
        syncs=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -o 'syncs_per_append=[0-9.]*' | tail -1 | cut -d= -f2)
    fi
    local rps p50 p99
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$file")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$file")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$file")")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$round" "$rps" "$p50" "$p99" "$syncs" "$eps" >>"$OUT/results.tsv"
    say "$(printf '%-9s round %s: %6.0f req/s  p50 %6.3f ms  p99 %6.3f ms  syncs/append %s  worker %s events/s' "$mode" "$round" "$rps" "$p50" "$p99" "$syncs" "$eps")"
}

say "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
    for mode in inrequest inbox; do
        run_one "$mode" "$round"
    done
done

echo
echo "Inbox benchmark: $ROUNDS rounds x ${DURATION}s, $CONNECTIONS connections, 1 KiB signed events, medians"
awk -F'\t' '
    function median(name, col,    n, i, j, v, tmp) {
        n = 0
        for (i = 1; i <= rows; i++) if (mode[i] == name && val[i, col] != "-") v[++n] = val[i, col]
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] + 0 < v[i] + 0) { tmp = v[i]; v[i] = v[j]; v[j] = tmp }
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    NR > 1 { rows++; mode[rows] = $1; for (c = 3; c <= 7; c++) val[rows, c] = $c }
    END {
        printf "%-10s %8s %8s %8s %15s %15s\n", "mode", "req/s", "p50 ms", "p99 ms", "syncs/append", "worker ev/s"
        printf "%-10s %8.0f %8.3f %8.3f %15s %15s\n", "inrequest", median("inrequest", 3), median("inrequest", 4), median("inrequest", 5), "-", "-"
        printf "%-10s %8.0f %8.3f %8.3f %15.3f %15.0f\n", "inbox", median("inbox", 3), median("inbox", 4), median("inbox", 5), median("inbox", 6), median("inbox", 7)
        printf "inbox/inrequest throughput: %.2fx (target >= 0.5); inbox p99 %.3f ms (target < 5)\n", median("inbox", 3) / median("inrequest", 3), median("inbox", 5)
    }' "$OUT/results.tsv"
echo "raw figures: $OUT/results.tsv"
