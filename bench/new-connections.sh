#!/usr/bin/env bash
# new-connections.sh -- a new TCP connection for every request (`Connection: close`): NGINX
# (`keepalive 1024` upstream, ../shared/bench/nginx-proxy-ka1024.conf) and one or more
# Switchyard binaries on bench/switchyard-bench-lowercase.yaml, interleaved.
#
#   bench/new-connections.sh [-d SECS] [-r REPS] [-c CONNS] [BIN...]
#
# BIN defaults to target/release/switchyard. Backends on CPU 0 with wrk; each proxy alone on
# CPU 1, started for its run (2 s warm-up, then -d seconds measured, default 8) and stopped
# after it. Prints requests/s and the proxy's CPU µs per request (utime+stime of the process and
# its children), per repetition and as medians. Loopback only; bounded by REPS (default 3) and
# wrk's -d.
# Switchyard runs on its own HTTP/1 path (the default); with SWITCHYARD_HTTP1_PATH=pingora, on Pingora's loop.
set -eu
HERE=$(cd "$(dirname "$0")/.." && pwd)
DUR=8
REPS=3
CONNS=50
while [ $# -gt 0 ]; do
  case "$1" in
    -d) DUR=$2; shift 2 ;;
    -r) REPS=$2; shift 2 ;;
    -c) CONNS=$2; shift 2 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || set -- "$HERE/target/release/switchyard"
. "$HERE/bench/lib.sh"
bench_init new-connections
CONFIG=$(bench_config "$HERE/bench/switchyard-bench-lowercase.yaml")
start_backends 0
nginx_ka1024

# run NAME PORT COMMAND...: one repetition of one proxy; appends "NAME REQ/S US/REQ" to $RUN/rows.
run() {
  local name=$1 port=$2
  shift 2
  start_proxy "$port" "$RUN/proxy.log" "$@"
  local pid=$PROXY
  taskset -c 0 wrk -t1 -c"$CONNS" -d2 -H "Connection: close" "http://127.0.0.1:$port/" >/dev/null 2>&1
  local t0 t1
  t0=$(cpu_ticks $pid)
  taskset -c 0 wrk -t1 -c"$CONNS" -d"$DUR" -H "Connection: close" "http://127.0.0.1:$port/" >"$RUN/wrk.txt" 2>&1
  t1=$(cpu_ticks $pid)
  stop_proxy $pid
  local reqs
  reqs=$(awk '/requests in/ {print $1}' "$RUN/wrk.txt")
  local row
  row=$(awk -v n="$name" -v r="$reqs" -v d="$DUR" -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" \
    'BEGIN {printf "%s %.0f %.2f", n, r / d, t * 1e6 / hz / r}')
  echo "  $row"
  echo "$row" >>"$RUN/rows"
}

for rep in $(seq "$REPS"); do
  echo "repetition $rep"
  run nginx-ka1024 18104 "${NGINX_KA1024[@]}"
  i=0
  for bin in "$@"; do
    i=$((i + 1))
    run "switchyard-$i" 18112 "$bin" -c "$CONFIG"
  done
done

echo
echo "| target | req/s (median) | CPU µs/req (median, min–max) | CPU/req vs NGINX |"
echo "|---|---|---|---|"
nginx_cpu=$(awk '$1 == "nginx-ka1024" {print $3}' "$RUN/rows" | median)
for name in nginx-ka1024 $(seq -f "switchyard-%g" 1 $#); do
  rps=$(awk -v n="$name" '$1 == n {print $2}' "$RUN/rows" | median)
  cpu=$(awk -v n="$name" '$1 == n {print $3}' "$RUN/rows" | median)
  range=$(awk -v n="$name" '$1 == n {print $3}' "$RUN/rows" | sort -n | sed -n '1p;$p' | paste -sd-)
  echo "| $name | $rps | $cpu ($range) | $(awk -v a="$cpu" -v b="$nginx_cpu" 'BEGIN {printf "%.2f", a / b}') |"
done
i=0
for bin in "$@"; do i=$((i + 1)); echo "switchyard-$i: $bin"; done
