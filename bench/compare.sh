#!/usr/bin/env bash
# compare.sh -- Switchyard side by side with NGINX, HAProxy and bare Pingora (plain and with
# mimalloc), in one interleaved run of ../shared/bench/compare_proxies.sh: metrics on and off,
# and on Pingora's HTTP/1 loop instead of Switchyard's own (bench/switchyard-bench-pingora-loop.yaml).
# Build first: cargo build --release; and the anchors: ../shared/bench/build_pingora_bare.sh
# Usage: bench/compare.sh [extra compare_proxies.sh options, e.g. -d 10 -r 3]
set -eu
HERE=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED_BENCH:-$HERE/../shared/bench}
BIN=${SWITCHYARD_BIN:-$HERE/target/release/switchyard}
BARE=${PINGORA_BARE_DIR:-/tmp/pingora-bare}/target/release/pingora-lb-mimalloc
cd "$HERE"
extra=()
[ -x "$BARE" ] && extra+=(--proxy pingora-mimalloc 18120 "env LISTEN=\$BENCH_LISTEN BACKENDS=\$BENCH_BACKENDS THREADS=1 $BARE")
exec "$SHARED/compare_proxies.sh" "$@" "${extra[@]}" \
  --proxy switchyard 18110 "$BIN -c bench/switchyard-bench-metrics-on.yaml" \
  --proxy switchyard-nometrics 18111 "$BIN -c bench/switchyard-bench-metrics-off.yaml" \
  --proxy switchyard-pingora-loop 18113 "$BIN -c bench/switchyard-bench-pingora-loop.yaml"
