#!/usr/bin/env bash
# loadgen.sh -- loadtest vs wrk vs hey against the same NGINX backend, interleaved.
#
# One NGINX worker on 127.0.0.1:18201 (pinned to CPU 1) answers a 13-byte body; each load
# generator runs pinned to CPU 0 with one thread and the same connection count, for the
# same duration, REPS times in interleaved order. Prints req/s per run and the medians, and
# loadtest's ratio to wrk. Every run is bounded by -d seconds; only 127.0.0.1 is contacted.
#
# Usage: bench/loadgen.sh [-d SECS] [-c CONNS] [-r REPS]   (needs nginx, wrk, hey, taskset)
set -u
DUR=10; CONNS=50; REPS=3
while [ $# -gt 0 ]; do
  case "$1" in
    -d) DUR=$2; shift 2;; -c) CONNS=$2; shift 2;; -r) REPS=$2; shift 2;;
    *) echo "unknown arg $1" >&2; exit 2;;
  esac
done
[ "$DUR" -ge 1 ] && [ "$DUR" -le 120 ] && [ "$REPS" -ge 1 ] && [ "$REPS" -le 10 ] || { echo "bad bounds" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")/.." && pwd)
LOADTEST=${LOADTEST:-$HERE/target/release/loadtest}
for b in nginx wrk hey taskset "$LOADTEST"; do command -v "$b" >/dev/null || [ -x "$b" ] || { echo "missing $b" >&2; exit 2; }; done
RUN=$(mktemp -d /tmp/loadgen.XXXXXX)
cat > "$RUN/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $RUN/nginx.pid;
error_log $RUN/error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000000;
  server { listen 127.0.0.1:18201 reuseport backlog=4096; location / { return 200 "hello world!\n"; } } }
CONF
setsid taskset -c 1 nginx -p "$RUN" -c "$RUN/nginx.conf" >/dev/null 2>&1 &
NGINX=$!
trap 'kill -TERM -- -$NGINX 2>/dev/null; sleep 0.3; rm -rf "$RUN"' EXIT
for _ in $(seq 1 50); do curl -s -o /dev/null http://127.0.0.1:18201/ && break; sleep 0.1; done
URL=http://127.0.0.1:18201/

run_wrk()      { taskset -c 0 timeout $((DUR + 30)) wrk -t1 -c"$CONNS" -d"${DUR}s" "$URL" | awk '/^Requests\/sec/ {print $2}'; }
run_hey()      { taskset -c 0 timeout $((DUR + 30)) hey -c "$CONNS" -z "${DUR}s" "$URL" | awk '/Requests\/sec:/ {print $2}'; }
run_loadtest() { taskset -c 0 timeout $((DUR + 30)) "$LOADTEST" --threads 1 -c "$CONNS" -z "${DUR}s" --json "$URL" | awk -F': ' '/"requests_per_second"/ {gsub(/,/, "", $2); print $2}'; }

declare -A R
for rep in $(seq 1 "$REPS"); do
  for tool in wrk loadtest hey; do
    v=$(run_$tool); R[$tool]+="$v "
    printf '  rep %d %-9s %12.1f req/s\n' "$rep" "$tool" "${v:-0}" >&2
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
W=$(echo "${R[wrk]}" | median); L=$(echo "${R[loadtest]}" | median); H=$(echo "${R[hey]}" | median)
echo "| generator (1 thread, $CONNS connections, ${DUR}s, median of $REPS) | req/s | vs wrk |"
echo "|---|---|---|"
awk -v w="$W" -v l="$L" -v h="$H" 'BEGIN {
  printf "| wrk | %.0f | 1.00 |\n| loadtest | %.0f | %.2f |\n| hey | %.0f | %.2f |\n", w, l, l / w, h, h / w }'
