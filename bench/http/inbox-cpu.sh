#!/usr/bin/env bash
# One inbox round of bench/http/inbox.sh, measured in CPU time (BENCHMARKS.md section 8.1): the
# receiver binary BIN on CPU 0, wrk on CPU 1 (64 connections, 5 s), then until every acknowledged
# event is handled; prints req/s, p50, p99, syncs/append, worker events/s, the load average, and
# the receiver's user + system CPU time per request during the load and per event in all.
#
#   bench/http/inbox-cpu.sh NAME BIN [inbox|inrequest]     (files in /tmp/prof)
#
# Used to compare two builds of the receiver in alternation, e.g. (copies of the old and new builds):
#   for r in 1 2; do bench/http/inbox-cpu.sh base$r /tmp/receiver-base; bench/http/inbox-cpu.sh new$r /tmp/receiver-new; done
mkdir -p /tmp/prof
set -u
cd "$(dirname "$0")/../.."
NAME=$1; BIN=$2; MODE=${3:-inbox}
PORT=18432
export WEBHOOK_SECRET=whsec_benchmark_secret_5f1d2c3b4a
rm -f /tmp/prof/$NAME.redb
if [ "$MODE" = inbox ]; then E="INBOX_PATH=/tmp/prof/$NAME.redb"; else E="INBOX=off"; fi
env $E PORT=$PORT RUST_LOG=info NO_COLOR=1 ${EXTRA_ENV:-} taskset -c 0 $BIN >/tmp/prof/$NAME.lines 2>/tmp/prof/$NAME.stderr &
PP=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.05; done
RPID=$(pgrep -P $PP || echo $PP)
cpu() { awk '{print $14 + $15}' /proc/$RPID/stat; }
C0=$(cpu)
START=$EPOCHREALTIME
taskset -c 1 wrk -t1 -c64 -d${DURATION:-5}s --latency -s bench/http/signed.lua http://127.0.0.1:$PORT/webhooks/metigan > /tmp/prof/$NAME.wrk
C1=$(cpu)
REQ=$(awk '/requests in/ {print $1}' /tmp/prof/$NAME.wrk)
if [ "$MODE" = inbox ]; then for i in $(seq 1200); do [ "$(wc -l < /tmp/prof/$NAME.lines)" -ge "$REQ" ] && break; sleep 0.1; done; fi
EPS=$(awk -v n="$(wc -l < /tmp/prof/$NAME.lines)" -v a="$START" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.0f", n / (b - a)}')
C2=$(cpu)
kill -INT $PP; wait $PP
printf '%s %s rps=%s p50=%s p99=%s %s eps=%s load=%s cpu_us_per_req_wrk=%s cpu_us_per_event_all=%s\n' "$NAME" "$MODE" "$(awk '/^Requests\/sec:/ {print $2}' /tmp/prof/$NAME.wrk)" "$(awk '$1 == "50%" {print $2}' /tmp/prof/$NAME.wrk)" "$(awk '$1 == "99%" {print $2}' /tmp/prof/$NAME.wrk)" "$(sed 's/\x1b\[[0-9;]*m//g' /tmp/prof/$NAME.stderr | grep -o 'syncs_per_append=[0-9.]*' | tail -1)" "$EPS" "$(cut -d' ' -f1 /proc/loadavg)" "$(awk -v c="$((C1-C0))" -v n="$REQ" 'BEGIN{printf "%.1f", c*10000/n}')" "$(awk -v c="$((C2-C0))" -v n="$REQ" 'BEGIN{printf "%.1f", c*10000/n}')"
