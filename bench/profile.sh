#!/usr/bin/env bash
# profile.sh -- where one proxy spends its time per request, under the same load shape as
# ../shared/bench/compare_proxies.sh: three NGINX backends and wrk on CPU 0, the proxy on CPU 1.
#
#   bench/profile.sh [-d SECS] [-c CONNS] [--perf FILE] [--strace] [--bin PATH] [--config FILE]
#
# Prints requests/s, proxy CPU µs per request (utime+stime from /proc), minor page faults per
# request (the allocator handing memory back and touching it again), and with --strace the
# system calls per request (strace -c over every thread, for 4 s in the middle of the run);
# with --perf, records `perf record -a -C 1 -g` for 5 s in the middle of the run into FILE
# (per-process sampling does not work on these VMs). Loopback only; every run is bounded by -d.
set -eu
HERE=$(cd "$(dirname "$0")/.." && pwd)
DUR=15; CONNS=50; PERF=""; STRACE=0
BIN=$HERE/target/release/switchyard
CONFIG=$HERE/bench/switchyard-bench-metrics-on.yaml
while [ $# -gt 0 ]; do
  case "$1" in
    -d) DUR=$2; shift 2;;
    -c) CONNS=$2; shift 2;;
    --perf) PERF=$2; shift 2;;
    --strace) STRACE=1; shift;;
    --bin) BIN=$2; shift 2;;
    --config) CONFIG=$2; shift 2;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
. "$HERE/bench/lib.sh"
PORT=$(config_port "$CONFIG" 181)
ADMIN=$(config_port "$CONFIG" 1819)
bench_init profile
start_backends 0
taskset -c 1 "$BIN" -c "$CONFIG" 2>"$RUN/proxy.log" &
PROXY=$!
PIDS+=($PROXY)
for _ in $(seq 50); do
  curl -sf -o /dev/null "http://127.0.0.1:$PORT/" && break
  sleep 0.2
done
cpu() { cpu_ticks "$PROXY"; }
faults() { awk '{print $10}' "/proc/$PROXY/stat"; }
requests() { curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/^lb_http_requests_total/ {s += $2} END {print s + 0}'; }

taskset -c 0 wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$PORT/" >/dev/null # warm-up
c0=$(cpu); f0=$(faults); r0=$(requests)
taskset -c 0 wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "http://127.0.0.1:$PORT/" >"$RUN/wrk.txt" &
WRK=$!
PIDS+=($WRK)
sleep $((DUR / 3))
if [ -n "$PERF" ]; then
  perf record -a -C 1 -g -o "$PERF" -- sleep 5 2>/dev/null
fi
if [ "$STRACE" = 1 ]; then
  targs=(); for t in /proc/$PROXY/task/*; do targs+=(-p "${t##*/}"); done
  s0=$(requests)
  timeout -s INT 4 strace -c -o "$RUN/strace.txt" "${targs[@]}" 2>/dev/null || true
  s1=$(requests)
fi
wait "$WRK"
c1=$(cpu); f1=$(faults); r1=$(requests)
hz=$(getconf CLK_TCK)
grep -E "Requests/sec|99%" "$RUN/wrk.txt"
awk -v c="$((c1 - c0))" -v r="$((r1 - r0))" -v hz="$hz" \
  'BEGIN {printf "proxy CPU: %.2f us/request over %d requests\n", c * 1e6 / hz / r, r}'
awk -v f="$((f1 - f0))" -v r="$((r1 - r0))" 'BEGIN {printf "minor page faults: %.3f per request\n", f / r}'
echo "RSS: $(rss_kb "$PROXY") kB"
if [ "$STRACE" = 1 ]; then
  n=$((s1 - s0))
  echo "strace: $n requests while tracing (tracing slows the proxy); calls per request:"
  awk -v n="$n" 'NR > 2 && $NF != "total" && $(NF-1) ~ /^[0-9]+$/ {
      calls = ($0 ~ /errors/) ? $(NF-2) : $(NF-1)
    }
    NR > 2 && /^ *[0-9.]+ +[0-9.]+ +[0-9]+ +[0-9]+/ {
      name = $NF; calls = $4; printf "  %-16s %6.2f\n", name, calls / n
    }' "$RUN/strace.txt"
  cat "$RUN/strace.txt" >&2
fi
