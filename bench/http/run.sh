#!/usr/bin/env bash
# HTTP load benchmark (BENCHMARKS.md): the receiver, the receiver with its in-memory
# deduplication off (DEDUPE=off), the same server without the layer (the ceiling) and the
# Express handler of Metigan's guide, one after the other on 127.0.0.1, each
# driven by wrk with signed 1 KiB events (every request its own messageId and signature),
# 64 connections, the server on one core and wrk on the other. Then the rejection benchmark:
# unsigned requests declaring 1 KiB and 1 MiB bodies against the receiver.
#
#   bench/http/run.sh
#
# Prints, per server, the median over the rounds of requests/s, p50, p99, server CPU time per
# request and peak RSS (VmHWM), then the ratios: of the medians, and the median of each round's
# own ratio (the servers of one round run back to back, so that one is less exposed to other
# jobs on the machine drifting between rounds). About 5 minutes with the defaults; tunable:
#   ROUNDS=7 DURATION=6 WARMUP=2 CONNECTIONS=64 SERVER_CPU=0 LOAD_CPU=1 PORT=... bench/http/run.sh
# RECEIVER=path/to/binary runs another build of the receiver (to compare a change).
# Needs wrk (Debian package `wrk`: installed here when missing and running as root), node and
# npm (express is installed into bench/node_modules from bench/package-lock.json).
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-7}
DURATION=${DURATION:-6}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-64}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
# A free port on 127.0.0.1 unless PORT is given (one run once found 38080 taken).
if [ -z "${PORT:-}" ]; then
    PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
OUT=${OUT:-target/bench-http}
export WEBHOOK_SECRET=whsec_benchmark_secret_5f1d2c3b4a
URL="http://127.0.0.1:$PORT/webhooks/metigan"

say() { printf '==> %s\n' "$*" >&2; }

if ! command -v wrk >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        say "installing wrk (Debian package)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
    else
        echo "run.sh: wrk is missing: sudo apt-get install wrk" >&2
        exit 2
    fi
fi
command -v node >/dev/null || { echo "run.sh: node is missing" >&2; exit 2; }
if [ ! -d bench/node_modules/express ]; then
    say "installing express into bench/node_modules (npm ci)"
    npm ci --prefix bench --no-audit --no-fund --silent
fi
say "building the receiver and the ceiling (release)"
cargo build --release --quiet --example receiver --example ceiling

mkdir -p "$OUT"
rm -f "$OUT"/*.wrk "$OUT"/results.tsv
printf 'server\tround\trps\tp50_ms\tp99_ms\tcpu_us_per_req\tpeak_rss_kb\twrk_cpu_pct\tserver_cpu_pct\n' >"$OUT/results.tsv"

SERVER_PID=
stop_server() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=
}
trap stop_server EXIT

start_server() { # name
    local name=$1 cmd
    case "$name" in
        # The receiver handling events inside the request (INBOX=off), as measured before the
        # durable inbox became its default.
        receiver) cmd=(env INBOX=off "${RECEIVER:-target/release/examples/receiver}") ;;
        # The same binary with its in-memory deduplication off: what deduplication costs.
        nodedupe) cmd=(env INBOX=off DEDUPE=off "${RECEIVER:-target/release/examples/receiver}") ;;
        ceiling) cmd=(target/release/examples/ceiling) ;;
        express) cmd=(node bench/http/express-server.js) ;;
    esac
    # taskset execs the server, so $! is the server's own pid (for /proc/<pid>).
    PORT=$PORT NODE_ENV=production taskset -c "$SERVER_CPU" "${cmd[@]}" >/dev/null 2>>"$OUT/$name.stderr" &
    SERVER_PID=$!
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "run.sh: $name did not start listening on $PORT" >&2
    exit 1
}

# utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# A wrk latency figure (e.g. 812.00us, 1.43ms, 1.02s) in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000
        printf "%.3f", n }'
}

run_one() { # name round
    local name=$1 round=$2 file="$OUT/$1.$2.wrk"
    start_server "$name"
    # Unsigned requests are refused by the receiver and Express, accepted by the ceiling.
    local unsigned
    unsigned=$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
        --data-binary '{"event":"email.sent"}' "$URL")
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" -s bench/http/signed.lua "$URL" >/dev/null
    local ticks0 ticks1
    ticks0=$(cpu_ticks "$SERVER_PID")
    # bash's `time` gives wrk's own CPU use: near 100% means the generator, not the server,
    # was the limit.
    local TIMEFORMAT='%R %U %S' wrk_times
    wrk_times=$({ time taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
        -s bench/http/signed.lua "$URL" >"$file"; } 2>&1)
    ticks1=$(cpu_ticks "$SERVER_PID")
    local hwm
    hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$SERVER_PID/status")
    stop_server
    if grep -q 'Non-2xx\|Socket errors' "$file"; then
        echo "run.sh: $name answered errors under load:" >&2
        cat "$file" >&2
        exit 1
    fi
    local rps p50 p99 requests cpu wrk_cpu server_cpu
    wrk_cpu=$(awk '{printf "%.0f", ($2 + $3) / $1 * 100}' <<<"$wrk_times")
    server_cpu=$(awk -v t="$((ticks1 - ticks0))" -v hz="$(getconf CLK_TCK)" -v w="$wrk_times" \
        'BEGIN {split(w, f, " "); printf "%.0f", t / hz / f[1] * 100}')
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$file")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$file")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$file")")
    requests=$(awk '/requests in/ {print $1}' "$file")
    cpu=$(awk -v t="$((ticks1 - ticks0))" -v hz="$(getconf CLK_TCK)" -v n="$requests" \
        'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$round" "$rps" "$p50" "$p99" "$cpu" "$hwm" "$wrk_cpu" "$server_cpu" >>"$OUT/results.tsv"
    say "$(printf '%-8s round %s: %6.0f req/s  p50 %6.3f ms  p99 %6.3f ms  %5.1f us CPU/req  peak RSS %6d kB  CPU: server %3d%% wrk %3d%%  (unsigned: %s)' \
        "$name" "$round" "$rps" "$p50" "$p99" "$cpu" "$hwm" "$server_cpu" "$wrk_cpu" "$unsigned")"
}

say "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); server on CPU $SERVER_CPU, wrk on CPU $LOAD_CPU"
for round in $(seq "$ROUNDS"); do
    for name in receiver nodedupe ceiling express; do
        run_one "$name" "$round"
    done
done

say "rejection benchmark (receiver; unsigned, declared 1 KiB vs 1 MiB, 1 KiB sent)"
start_server receiver
taskset -c "$LOAD_CPU" node bench/http/rejection.js "$PORT" 2000 | tee "$OUT/rejection.txt"
stop_server

echo
echo "HTTP benchmark: $ROUNDS rounds x ${DURATION}s, $CONNECTIONS connections, 1 KiB signed events, medians"
awk -F'\t' '
    function median(name, col,    n, i, j, v, tmp) {
        n = 0
        for (i = 1; i <= rows; i++) if (server[i] == name) v[++n] = val[i, col]
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { tmp = v[i]; v[i] = v[j]; v[j] = tmp }
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    # The median over the rounds of receiver req/s / other req/s in the same round.
    function round_median(other,    n, i, j, r, tmp) {
        n = 0
        for (i = 1; i <= rows; i++) if (server[i] == "receiver")
            for (j = 1; j <= rows; j++) if (server[j] == other && round[j] == round[i]) r[++n] = val[i, 3] / val[j, 3]
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (r[j] < r[i]) { tmp = r[i]; r[i] = r[j]; r[j] = tmp }
        return n % 2 ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2
    }
    NR > 1 { rows++; server[rows] = $1; round[rows] = $2; for (c = 3; c <= 9; c++) val[rows, c] = $c }
    END {
        printf "%-9s %8s %8s %8s %11s %12s %11s %8s\n", "server", "req/s", "p50 ms", "p99 ms", "CPU us/req", "peak RSS MB", "server CPU%", "wrk CPU%"
        split("receiver nodedupe ceiling express", names, " ")
        for (k = 1; k <= 4; k++) {
            s = names[k]
            rps[s] = median(s, 3)
            cpu[s] = median(s, 6)
            printf "%-9s %8.0f %8.3f %8.3f %11.1f %12.1f %11.0f %8.0f\n", s, rps[s], median(s, 4), median(s, 5), cpu[s], median(s, 7) / 1024, median(s, 9), median(s, 8)
        }
        printf "receiver/ceiling throughput: %.2fx of the medians, %.2fx median of the rounds (target >= 0.85)\n", rps["receiver"] / rps["ceiling"], round_median("ceiling")
        printf "receiver/express throughput: %.1fx of the medians, %.1fx median of the rounds (target >= 15)\n", rps["receiver"] / rps["express"], round_median("express")
        printf "CPU per request, ceiling/receiver: %.2f; express/receiver: %.1f\n", cpu["ceiling"] / cpu["receiver"], cpu["express"] / cpu["receiver"]
        printf "deduplication off (nodedupe): %.2fx the ceiling, %.1fx express (medians); deduplication costs %.2f us CPU per request\n", rps["nodedupe"] / rps["ceiling"], rps["nodedupe"] / rps["express"], cpu["receiver"] - cpu["nodedupe"]
    }' "$OUT/results.tsv"
echo "raw figures: $OUT/results.tsv, wrk outputs: $OUT/*.wrk"
