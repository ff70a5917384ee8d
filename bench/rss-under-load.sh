#!/usr/bin/env bash
# rss-under-load.sh -- resident set at rest, during and after a load of many connections.
#
#   bench/rss-under-load.sh [CONNS] [ROUNDS]
#
# Three NGINX backends (pinned to CPU 0), then, one at a time and pinned to CPU 1: Switchyard
# (bench/switchyard-bench-lowercase.yaml), NGINX with `keepalive 1024` upstream
# (../shared/bench/nginx-proxy-ka1024.conf) and bench/floor-proxy (multi-thread runtime, read
# timers; built by bench/floor.sh). Each gets `wrk -t1 -c CONNS -d8` (default 500) from CPU 0;
# its resident set (with children) is read before, 4 and 6 s into the load, and 2 s after it.
# Build Switchyard first (cargo build --release). Loopback only; bounded by ROUNDS (default 1)
# and wrk's -d.
# Switchyard runs on its own HTTP/1 path (the default); with SWITCHYARD_HTTP1_PATH=pingora, on Pingora's loop.
set -eu
HERE=$(cd "$(dirname "$0")/.." && pwd)
CONNS=${1:-500}
ROUNDS=${2:-1}
. "$HERE/bench/lib.sh"
BIN=${SWITCHYARD_BIN:-$HERE/target/release/switchyard}
FLOOR=$HERE/target/floor-proxy/release/floor-proxy
bench_init rss-under-load
start_backends 0
nginx_ka1024

# measure NAME PORT COMMAND...: one target's resident set around one load run.
measure() {
  local name=$1 port=$2
  start_at_rest "$@"
  local pid=$PROXY rest=$REST during1 during2 after
  taskset -c 0 wrk -t1 -c"$CONNS" -d8 "http://127.0.0.1:$port/" >"$RUN/wrk.txt" 2>&1 &
  local wrk=$!
  sleep 4
  during1=$(rss_kb $pid)
  sleep 2
  during2=$(rss_kb $pid)
  wait $wrk
  sleep 2
  after=$(rss_kb $pid)
  printf '| %s | %s | %s, %s | %s | %s |\n' "$name" "$rest" "$during1" "$during2" "$after" \
    "$(awk '/requests in/ {print $1}' "$RUN/wrk.txt")"
  stop_proxy $pid
}

echo "| target | at rest kB | during the load kB | 2 s after kB | requests |"
echo "|---|---|---|---|---|"
for _ in $(seq "$ROUNDS"); do
  measure switchyard-lowercase 18112 "$BIN" -c "$(bench_config "$HERE/bench/switchyard-bench-lowercase.yaml")"
  measure nginx-ka1024 18104 "${NGINX_KA1024[@]}"
  if [ -x "$FLOOR" ]; then
    measure floor-mt-timeouts 18122 "$FLOOR" --listen 127.0.0.1:18122 \
      --upstreams 127.0.0.1:18001,127.0.0.1:18002,127.0.0.1:18003 --runtime multi \
      --read-timeout-ms 60000
  fi
done
