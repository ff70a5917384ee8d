#!/usr/bin/env bash
# dhat-idle.sh -- what each idle keep-alive connection holds on Switchyard's heap, block by
# block: valgrind's DHAT on a build with the system allocator, CONNS connections held idle
# (bench/hold-connections.py, one request answered on each), the heap at its peak listed by
# allocation site, per connection (bench/dhat-sites.py).
#
#   bench/dhat-idle.sh [--tls] [CONNS]
#
# Needs valgrind and a build with the system allocator (DHAT cannot see inside mimalloc):
#   cargo build --release --features system-allocator --target-dir target/system-allocator
# (or SWITCHYARD_SYSALLOC_BIN=path). NGINX backends on 127.0.0.1:18001-18003, Switchyard on
# bench/switchyard-bench-lowercase.yaml (with --tls: the same on a TLS listener with a
# self-signed certificate). CONNS defaults to 400. Loopback only; bounded by CONNS and a 60 s hold.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
. "$HERE/bench/lib.sh"

TLS=()
if [ "${1:-}" = "--tls" ]; then TLS=(--tls); shift; fi
CONNS=${1:-400}
BIN=${SWITCHYARD_SYSALLOC_BIN:-$HERE/target/system-allocator/release/switchyard}
if [ ! -x "$BIN" ]; then
  echo "no $BIN: cargo build --release --features system-allocator --target-dir target/system-allocator" >&2
  exit 1
fi

bench_init dhat-idle
start_backends 0
PORT=18112
CONFIG=$HERE/bench/switchyard-bench-lowercase.yaml
if [ ${#TLS[@]} -gt 0 ]; then
  tls_cert
  CONFIG=$RUN/switchyard-tls.yaml
  SWITCHYARD_HEADER_CASE=lowercase switchyard_tls_config "$CONFIG" "$PORT" 18192
fi
OUT=${DHAT_OUT:-$RUN/dhat.json}

valgrind --tool=dhat --dhat-out-file="$OUT" "$BIN" -c "$CONFIG" >"$RUN/valgrind.log" 2>&1 &
VALGRIND=$!
PIDS+=($VALGRIND)
for _ in $(seq 200); do
  (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.3
done
python3 "$HERE/bench/hold-connections.py" "$PORT" "$CONNS" 60 "${TLS[@]}" >"$RUN/hold.out" &
HOLD=$!
PIDS+=($HOLD)
for _ in $(seq 120); do
  grep -q '^ready' "$RUN/hold.out" && break
  sleep 1
done
cat "$RUN/hold.out"
sleep 3
# DHAT writes its profile when the process exits; the heap's peak is while the connections
# are held.
kill -INT "$VALGRIND"
wait "$VALGRIND" || true
python3 "$HERE/bench/dhat-sites.py" "$OUT" "$CONNS"
