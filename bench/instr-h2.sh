#!/usr/bin/env bash
# instr-h2.sh -- user-space instructions per request for HTTP/2 over TLS 1.3 downstream,
# HTTP/1.1 upstream, counted by valgrind (callgrind).
#
#   bench/instr-h2.sh [N1 N2] [BIN...]
#
# For each binary: start it under callgrind with a TLS listener in front of the three NGINX
# backends, send N1 requests with `h2load -c 10 -m 10`, stop it; again with N2 requests;
# instructions per request = (Ir(N2) - Ir(N1)) / (N2 - N1), which cancels start-up, the ten
# TLS handshakes and shutdown. The HTTP/2 counterpart of ../shared/bench/instr_per_req.sh
# (HTTP/1.1, serial). Kernel work is not counted. Loopback only; bounded by N2.
# Defaults: 2000 12000, target/release/switchyard. Profiles are kept in /tmp/instr-h2-*.out.
set -eu
HERE=$(cd "$(dirname "$0")/.." && pwd)
N1=2000; N2=12000
if [ $# -ge 2 ] && [[ $1 =~ ^[0-9]+$ ]]; then N1=$1; N2=$2; shift 2; fi
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || BINS=("$HERE/target/release/switchyard")
. "$HERE/bench/lib.sh"
for tool in h2load nginx openssl valgrind callgrind_annotate; do
  command -v "$tool" >/dev/null || { echo "$tool is missing" >&2; exit 1; }
done
bench_init instr-h2
tls_cert
start_backends
for p in 18001 18002 18003; do wait_port $p; done
switchyard_tls_config "$RUN/switchyard.yaml" 18430 18530

total_ir() { # BIN N OUT -> total instructions of one run
  valgrind --tool=callgrind --callgrind-out-file="$3" "$1" -c "$RUN/switchyard.yaml" \
    2>"$RUN/vg.log" &
  local vg=$!
  for _ in $(seq 300); do
    [ "$(curl -sk -m 2 -o /dev/null -w '%{http_code}' https://127.0.0.1:18430/)" = 200 ] && break
    sleep 0.3
  done
  local ok
  ok=$(h2load -n "$2" -c 10 -m 10 https://127.0.0.1:18430/ 2>&1 | awk '/^requests:/ {print $8}')
  kill -INT "$vg"
  wait "$vg" || true
  [ "$ok" = "$2" ] || { echo "$1: only $ok of $2 requests succeeded" >&2; exit 1; }
  callgrind_annotate "$3" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
}

echo "| binary | Ir(N=$N1) | Ir(N=$N2) | user-space instructions / request |"
echo "|---|---|---|---|"
i=0
for bin in "${BINS[@]}"; do
  a=$(total_ir "$bin" "$N1" "/tmp/instr-h2-$i-$N1.out")
  b=$(total_ir "$bin" "$N2" "/tmp/instr-h2-$i-$N2.out")
  echo "| $bin | $a | $b | $(( (b - a) / (N2 - N1) )) |"
  i=$((i + 1))
done
