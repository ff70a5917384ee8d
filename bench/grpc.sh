#!/usr/bin/env bash
# grpc.sh -- unary gRPC through Switchyard and through NGINX (`grpc_pass`), side by side on the
# same three demo gRPC backends, interleaved, in one run.
#
#   bench/grpc.sh [-n REQUESTS] [-c CONNS] [-m STREAMS] [-r REPS]
#
# Backends: three `backend-server --grpc` (tonic) on 127.0.0.1:18301-18303; load: h2load
# (Debian's nghttp2-client) over cleartext HTTP/2 with prior knowledge, POST
# /switchyard.demo.Demo/Echo with a fixed gRPC frame. h2load and the backends run on CPU 0,
# the proxy under test on CPU 1 with one worker. Each proxy keeps its upstream HTTP/2
# connections (NGINX: `keepalive 64`; Switchyard: multiplexed h2c). Prints, per proxy, the
# medians of calls/s, mean latency and proxy CPU µs per call (utime+stime from /proc over the
# run), and the ratio to NGINX. Every run is bounded by -n; everything started is stopped.
# Build first: cargo build --release (switchyard and backend-server).
set -eu
HERE=$(cd "$(dirname "$0")/.." && pwd)
N=100000; CONNS=50; STREAMS=10; REPS=3
while [ $# -gt 0 ]; do
  case "$1" in
    -n) N=$2; shift 2;;
    -c) CONNS=$2; shift 2;;
    -m) STREAMS=$2; shift 2;;
    -r) REPS=$2; shift 2;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
BIN=${SWITCHYARD_BIN:-$HERE/target/release/switchyard}
BACKEND=${BACKEND_BIN:-$HERE/target/release/backend-server}
. "$HERE/bench/lib.sh"
for tool in h2load nginx; do command -v "$tool" >/dev/null || { echo "$tool is missing" >&2; exit 1; }; done
bench_init grpc-bench

for i in 1 2 3; do
  taskset -c 0 "$BACKEND" --grpc --listen "127.0.0.1:1830$i" --name "g$i" >"$RUN/backend$i.log" 2>&1 &
  PIDS+=($!)
done

cat >"$RUN/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $RUN/nginx.pid;
error_log $RUN/nginx.log warn;
events { worker_connections 10000; }
http {
  access_log off;
  upstream grpc_backends {
    server 127.0.0.1:18301; server 127.0.0.1:18302; server 127.0.0.1:18303;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:18201 http2;
    http2_max_concurrent_streams 128;
    keepalive_requests 100000000;
    location / { grpc_pass grpc://grpc_backends; }
  }
}
EOF
taskset -c 1 nginx -e "$RUN/nginx.log" -p "$RUN/" -c "$RUN/nginx.conf" &
PIDS+=($!)
NGINX_PID=$!

cat >"$RUN/switchyard.yaml" <<EOF
version: 1
threads: 1
pid_file: $RUN/switchyard.pid
upgrade_sock: $RUN/switchyard.sock
grace_period_seconds: 0
graceful_shutdown_timeout_seconds: 1
listeners:
  - address: 127.0.0.1:18210
admin:
  address: 127.0.0.1:18290
  metrics: true
proxy:
  h2c: true
  access_log: false
  via: ""
target_groups:
  - name: greeter
    protocol_version: grpc
    strategy: round_robin
    backends:
      - address: 127.0.0.1:18301
      - address: 127.0.0.1:18302
      - address: 127.0.0.1:18303
    health_check:
      interval: 1s
      timeout: 500ms
routes:
  - path_prefix: /
    target_group: greeter
EOF
taskset -c 1 "$BIN" -c "$RUN/switchyard.yaml" 2>"$RUN/switchyard.log" &
PIDS+=($!)
SY_PID=$!
for p in 18301 18302 18303 18201 18210; do wait_port $p; done
sleep 2 # first health checks

# EchoRequest{message: "hello"} as one uncompressed gRPC message.
printf '\x00\x00\x00\x00\x07\x0a\x05hello' >"$RUN/echo.bin"
URL_PATH=/switchyard.demo.Demo/Echo
run() { # NAME PORT PID -> "calls/s mean_ms us_per_call"
  local c0 c1 out
  c0=$(cpu_ticks "$3")
  out=$(taskset -c 0 h2load -n "$N" -c "$CONNS" -m "$STREAMS" -d "$RUN/echo.bin" \
    -H 'content-type: application/grpc' -H 'te: trailers' "http://127.0.0.1:$2$URL_PATH" 2>&1)
  c1=$(cpu_ticks "$3")
  echo "$out" >>"$RUN/$1.h2load"
  local ok rps mean
  ok=$(echo "$out" | awk '/^requests:/ {print $8}')
  rps=$(echo "$out" | awk '/^finished in/ {gsub(",", "", $4); print $4}')
  mean=$(echo "$out" | awk '/^time for request:/ {print $6}')
  [ "$ok" = "$N" ] || { echo "$1: only $ok of $N calls succeeded" >&2; echo "$out" >&2; exit 1; }
  awk -v c="$((c1 - c0))" -v n="$ok" -v hz="$(getconf CLK_TCK)" -v rps="$rps" -v mean="$mean" \
    'BEGIN {printf "%s %s %.2f\n", rps, mean, c * 1e6 / hz / n}'
}
# Both proxies must really answer the call (grpc-status 0 from a backend), not an error.
for port in 18201 18210; do
  st=$(curl -s --http2-prior-knowledge -o /dev/null -w '%{http_code}' -X POST \
    -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @"$RUN/echo.bin" \
    "http://127.0.0.1:$port$URL_PATH")
  [ "$st" = 200 ] || { echo "proxy on $port answered $st" >&2; exit 1; }
done
run nginx 18201 "$NGINX_PID" >/dev/null # warm-up
run switchyard 18210 "$SY_PID" >/dev/null
for r in $(seq "$REPS"); do
  echo "nginx $(run nginx 18201 "$NGINX_PID")" >>"$RUN/rows"
  echo "switchyard $(run switchyard 18210 "$SY_PID")" >>"$RUN/rows"
done
failed=$(curl -s http://127.0.0.1:18290/metrics | awk '/^lb_upstream_errors_total/ {s += $2} END {print s + 0}')
echo "unary gRPC, h2load -n $N -c $CONNS -m $STREAMS, $REPS interleaved runs, medians"
echo "| proxy | calls/s | mean latency | proxy CPU µs/call | RSS MiB | calls/s vs NGINX | CPU/call vs NGINX |"
echo "|---|---|---|---|---|---|---|"
n_rps=$(awk '$1 == "nginx" {print $2}' "$RUN/rows" | median)
n_cpu=$(awk '$1 == "nginx" {print $4}' "$RUN/rows" | median)
for p in nginx switchyard; do
  rps=$(awk -v p=$p '$1 == p {print $2}' "$RUN/rows" | median)
  mean=$(awk -v p=$p '$1 == p {print $3}' "$RUN/rows" | median)
  us=$(awk -v p=$p '$1 == p {print $4}' "$RUN/rows" | median)
  pid=$NGINX_PID; [ $p = switchyard ] && pid=$SY_PID
  awk -v p=$p -v rps="$rps" -v mean="$mean" -v us="$us" -v nr="$n_rps" -v nc="$n_cpu" -v rss="$(rss_kb $pid)" \
    'BEGIN {printf "| %s | %.0f | %s | %.2f | %.1f | %.2f | %.2f |\n", p, rps, mean, us, rss / 1024, rps / nr, us / nc}'
done
echo "Switchyard upstream errors during the runs: $failed"
