#!/usr/bin/env bash
# h2-tls.sh -- HTTP/2 over TLS 1.3 downstream, HTTP/1.1 upstream: Switchyard and NGINX side by
# side on the same three NGINX backends, interleaved, in one run.
#
#   bench/h2-tls.sh [-n REQUESTS] [-c CONNS] [-m STREAMS] [-r REPS] [--handshakes K]
#
# Two measurements per proxy, each repeated -r times in A B A B order, medians:
#  1. requests: `h2load -n N -c C -m M https://…/` (keep-alive, multiplexed streams):
#     requests/s, mean latency, proxy CPU µs per request;
#  2. handshakes: K rounds of `h2load -n 100 -c 100 -m 1` (one request per new connection, so
#     one full TLS 1.3 handshake each): new connections per CPU-second of the proxy.
# Both proxies use the same ECDSA P-256 certificate, one worker, keep-alive to the backends
# (NGINX `keepalive 64`). h2load and the backends run on CPU 0, the proxy on CPU 1. Proxy CPU
# is utime+stime from /proc (NGINX: master + worker). Loopback only; every run is bounded by
# its request count. Build first: cargo build --release.
set -eu
HERE=$(cd "$(dirname "$0")/.." && pwd)
N=100000; CONNS=50; STREAMS=10; REPS=3; ROUNDS=10
while [ $# -gt 0 ]; do
  case "$1" in
    -n) N=$2; shift 2;;
    -c) CONNS=$2; shift 2;;
    -m) STREAMS=$2; shift 2;;
    -r) REPS=$2; shift 2;;
    --handshakes) ROUNDS=$2; shift 2;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
BIN=${SWITCHYARD_BIN:-$HERE/target/release/switchyard}
. "$HERE/bench/lib.sh"
for tool in h2load nginx openssl; do command -v "$tool" >/dev/null || { echo "$tool is missing" >&2; exit 1; }; done
bench_init h2-bench

tls_cert

start_backends 0

mkdir -p "$RUN/proxy"
nginx_h2_tls_config "$RUN/proxy" 18401
taskset -c 1 nginx -e "$RUN/proxy/nginx.log" -p "$RUN/proxy/" -c "$RUN/proxy/nginx.conf" &
NGINX_PID=$!
PIDS+=($NGINX_PID)

switchyard_tls_config "$RUN/switchyard.yaml" 18410 18490 health
taskset -c 1 "$BIN" -c "$RUN/switchyard.yaml" 2>"$RUN/switchyard.log" &
SY_PID=$!
PIDS+=($SY_PID)
for p in 18001 18002 18003 18401 18410; do wait_port $p; done
sleep 1.5

HZ=$(getconf CLK_TCK)
succeeded() { awk '/^requests:/ {print $8}'; }

requests_run() { # PORT PID -> "req/s mean us_per_req"
  local c0 c1 out ok
  c0=$(cpu_ticks "$2")
  out=$(taskset -c 0 h2load -n "$N" -c "$CONNS" -m "$STREAMS" "https://127.0.0.1:$1/" 2>&1)
  c1=$(cpu_ticks "$2")
  ok=$(echo "$out" | succeeded)
  [ "$ok" = "$N" ] || { echo "port $1: only $ok of $N requests succeeded" >&2; echo "$out" >&2; exit 1; }
  echo "$out" | grep -q "TLSv1.3" || { echo "port $1: not TLS 1.3" >&2; exit 1; }
  echo "$out" | grep -q "Application protocol: h2" || { echo "port $1: not h2" >&2; exit 1; }
  local rps mean
  rps=$(echo "$out" | awk '/^finished in/ {gsub(",", "", $4); print $4}')
  mean=$(echo "$out" | awk '/^time for request:/ {print $6}')
  awk -v c="$((c1 - c0))" -v n="$ok" -v hz="$HZ" -v rps="$rps" -v mean="$mean" \
    'BEGIN {printf "%s %s %.2f\n", rps, mean, c * 1e6 / hz / n}'
}
handshake_run() { # PORT PID -> "handshakes_per_cpu_second"
  local c0 c1 ok=0 out
  c0=$(cpu_ticks "$2")
  for _ in $(seq "$ROUNDS"); do
    out=$(taskset -c 0 h2load -n 100 -c 100 -m 1 "https://127.0.0.1:$1/" 2>&1)
    ok=$((ok + $(echo "$out" | succeeded)))
  done
  c1=$(cpu_ticks "$2")
  awk -v c="$((c1 - c0))" -v n="$ok" -v hz="$HZ" 'BEGIN {printf "%.0f %d\n", n / (c / hz), n}'
}

requests_run 18401 "$NGINX_PID" >/dev/null # warm-up
requests_run 18410 "$SY_PID" >/dev/null
for r in $(seq "$REPS"); do
  echo "nginx $(requests_run 18401 "$NGINX_PID") $(handshake_run 18401 "$NGINX_PID")" >>"$RUN/rows"
  echo "switchyard $(requests_run 18410 "$SY_PID") $(handshake_run 18410 "$SY_PID")" >>"$RUN/rows"
done
cat "$RUN/rows" >&2
col() { awk -v p="$1" -v c="$2" '$1 == p {print $c}' "$RUN/rows" | median; }
echo "HTTPS + HTTP/2 downstream (TLS 1.3, ECDSA P-256), HTTP/1.1 upstream; $REPS interleaved runs, medians"
echo "requests: h2load -n $N -c $CONNS -m $STREAMS; handshakes: $ROUNDS x h2load -n 100 -c 100 -m 1"
echo "| proxy | req/s | mean latency | proxy CPU µs/req | new TLS connections per CPU-second | RSS MiB | req/s vs NGINX | CPU/req vs NGINX | handshakes/CPU-s vs NGINX |"
echo "|---|---|---|---|---|---|---|---|---|"
for p in nginx switchyard; do
  pid=$NGINX_PID; [ $p = switchyard ] && pid=$SY_PID
  awk -v p=$p -v rps="$(col $p 2)" -v mean="$(col $p 3)" -v us="$(col $p 4)" -v hs="$(col $p 5)" \
    -v nr="$(col nginx 2)" -v nu="$(col nginx 4)" -v nh="$(col nginx 5)" -v rss="$(rss_kb $pid)" \
    'BEGIN {printf "| %s | %.0f | %s | %.2f | %.0f | %.1f | %.2f | %.2f | %.2f |\n", p, rps, mean, us, hs, rss / 1024, rps / nr, us / nu, hs / nh}'
done
