#!/usr/bin/env bash
# PostgreSQL inbox benchmark (BENCHMARKS.md section 10), on 127.0.0.1 only, in alternating rounds:
#
#   inrequest  the receiver handling each event inside its request (INBOX=off)
#   file       the receiver acknowledging each event once it is synced to its inbox file
#   postgres   the receiver acknowledging each event once PostgreSQL has committed it
#              (DATABASE_URL; synchronous_commit on, fsync on: PostgreSQL's defaults)
#   postgres2  two receivers on the same database, the load on the first one only, so that
#              both workers drain one queue (the worker figure with two workers)
#
# wrk sends signed 1 KiB events (every request its own messageId) over 64 connections. The
# receiving side (the receivers and PostgreSQL) runs on one core, wrk on the other. Per mode,
# the median over the rounds of requests/s, p50 and p99, and the worker's throughput: events
# handled per second from the first request until every acknowledged event was handled.
# PostgreSQL is started by the script in a temporary directory (as the `postgres` user when
# run as root) and stopped at the end.
#
#   bench/http/postgres.sh
#   ROUNDS=3 DURATION=5 CONNECTIONS=64 SERVER_CPU=0 LOAD_CPU=1 bench/http/postgres.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-64}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
MODES=${MODES:-inrequest file postgres postgres2}
OUT=${OUT:-target/bench-postgres}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
PORT2=$(free_port)
PG_PORT=$(free_port)
export WEBHOOK_SECRET=whsec_benchmark_secret_5f1d2c3b4a
URL="http://127.0.0.1:$PORT/webhooks/metigan"

say() { printf '==> %s\n' "$*" >&2; }
command -v wrk >/dev/null || { echo "postgres.sh: wrk is missing (Debian package wrk)" >&2; exit 2; }
PG_BIN=${PG_BINDIR:-$(dirname "$(compgen -G "/usr/lib/postgresql/*/bin/initdb" | sort -V | tail -n 1)")}
[ -x "$PG_BIN/initdb" ] || { echo "postgres.sh: PostgreSQL is missing (Debian package postgresql)" >&2; exit 2; }
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

say "building the receiver (release)"
cargo build --release --quiet --example receiver
mkdir -p "$OUT"
rm -rf "${OUT:?}"/*
printf 'mode\tround\trps\tp50_ms\tp99_ms\tworker_eps\n' >"$OUT/results.tsv"

PG_DIR=$(mktemp -d /tmp/metigan-bench-pg.XXXXXX)
[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$PG_DIR"
SERVERS=()
cleanup() {
    for pid in "${SERVERS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
}
trap cleanup EXIT
say "starting PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT (core $SERVER_CPU)"
as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -A trust -E UTF8 --locale=C >/dev/null
as_pg taskset -c "$SERVER_CPU" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
    -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1" start >/dev/null
DB_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
psql_c() { "$PG_BIN/psql" -q -X -v ON_ERROR_STOP=1 "$DB_URL" -c "$1"; }

to_ms() {
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}

start_receiver() { # port lines-file log-file env...
    local port=$1 lines=$2 log=$3
    shift 3
    env "$@" PORT="$port" RUST_LOG=info NO_COLOR=1 taskset -c "$SERVER_CPU" \
        target/release/examples/receiver >"$lines" 2>"$log" &
    SERVERS+=($!)
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return; fi
        sleep 0.05
    done
    echo "postgres.sh: the receiver did not start:" >&2; cat "$log" >&2; exit 1
}

stop_receivers() {
    for pid in "${SERVERS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    SERVERS=()
}

run_one() { # mode round
    local mode=$1 round=$2 file="$OUT/$1.$2.wrk" lines="$OUT/$1.$2.lines" log="$OUT/$1.$2.stderr"
    local lines2="$OUT/$1.$2.b.lines"
    : >"$lines2"
    case "$mode" in
        inrequest) start_receiver "$PORT" "$lines" "$log" INBOX=off ;;
        file)
            rm -f "$OUT/inbox.redb"
            start_receiver "$PORT" "$lines" "$log" INBOX_PATH="$OUT/inbox.redb" ;;
        postgres | postgres2)
            # A fresh queue each round.
            psql_c "DROP TABLE IF EXISTS metigan_inbox_events, metigan_inbox_keys; DROP SEQUENCE IF EXISTS metigan_inbox_tokens" 2>/dev/null
            start_receiver "$PORT" "$lines" "$log" DATABASE_URL="$DB_URL"
            if [ "$mode" = postgres2 ]; then
                start_receiver "$PORT2" "$lines2" "$log.b" DATABASE_URL="$DB_URL"
            fi ;;
    esac
    local started=$EPOCHREALTIME
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
        -s bench/http/signed.lua "$URL" >"$file"
    if grep -q 'Non-2xx\|Socket errors' "$file"; then
        echo "postgres.sh: $mode answered errors under load:" >&2; cat "$file" >&2; exit 1
    fi
    local requests eps=-
    requests=$(awk '/requests in/ {print $1}' "$file")
    if [ "$mode" != inrequest ]; then
        # Every acknowledged event is handled (one line each) before the worker's figure is taken.
        local handled=0
        for _ in $(seq 3000); do
            handled=$(cat "$lines" "$lines2" | wc -l)
            [ "$handled" -ge "$requests" ] && break
            sleep 0.1
        done
        eps=$(awk -v n="$handled" -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.0f", n / (b - a)}')
        [ "$handled" -ge "$requests" ] || { echo "postgres.sh: only $handled of $requests handled" >&2; exit 1; }
    fi
    stop_receivers
    local rps p50 p99
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$file")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$file")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$file")")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$round" "$rps" "$p50" "$p99" "$eps" >>"$OUT/results.tsv"
    say "$(printf '%-9s round %s: %6.0f req/s  p50 %6.3f ms  p99 %6.3f ms  worker %s events/s' "$mode" "$round" "$rps" "$p50" "$p99" "$eps")"
}

say "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
    for mode in $MODES; do
        run_one "$mode" "$round"
    done
done
say "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

echo
echo "PostgreSQL inbox benchmark: $ROUNDS rounds x ${DURATION}s, $CONNECTIONS connections, 1 KiB signed events, medians"
awk -F'\t' -v modes="$MODES" '
    function median(name, col,    n, i, j, v, tmp) {
        n = 0
        for (i = 1; i <= rows; i++) if (mode[i] == name && val[i, col] != "-") v[++n] = val[i, col]
        if (n == 0) return -1
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] + 0 < v[i] + 0) { tmp = v[i]; v[i] = v[j]; v[j] = tmp }
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    NR > 1 { rows++; mode[rows] = $1; for (c = 3; c <= 6; c++) val[rows, c] = $c }
    END {
        printf "%-10s %8s %8s %8s %8s %12s\n", "mode", "req/s", "x inreq", "p50 ms", "p99 ms", "worker ev/s"
        base = median("inrequest", 3)
        m = split(modes, list, " ")
        for (k = 1; k <= m; k++) {
            name = list[k]; eps = median(name, 6)
            ratio = (base > 0) ? median(name, 3) / base : 0
            shown = (eps < 0) ? "-" : sprintf("%.0f", eps)
            printf "%-10s %8.0f %8.2f %8.3f %8.3f %12s\n", name, median(name, 3), ratio, median(name, 4), median(name, 5), shown
        }
    }' "$OUT/results.tsv"
echo "raw figures: $OUT/results.tsv"
