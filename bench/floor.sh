#!/usr/bin/env bash
# floor.sh -- how low a tokio HTTP/1.1 proxy goes: Switchyard beside bench/floor-proxy (one task
# per connection, no channels, no header maps; see its doc comment) and NGINX and HAProxy, in
# one interleaved run of ../shared/bench/compare_proxies.sh.
#
#   bench/floor.sh [extra compare_proxies.sh options, e.g. -d 10 -r 5]
#
# With bare Pingora built (../shared/bench/build_pingora_bare.sh), also `pingora` and
# `pingora-mimalloc`, its example proxy with glibc's allocator and with mimalloc.
# Builds bench/floor-proxy first (its own workspace and lock file, offline, into
# target/floor-proxy; seconds). Build Switchyard first: cargo build --release.
# Targets: nginx, haproxy, switchyard (`preserve`, the default), switchyard-lowercase,
# floor (current-thread runtime), floor-mt (multi-thread runtime, one worker, as Pingora's
# default), floor-mt-timeouts (the same with a 60 s timer on every read) and floor-mt-maps (the
# same again with both heads built as `http::HeaderMap`s and written out from them).
# Loopback only; every load run is bounded by compare_proxies.sh's -d.
set -eu
HERE=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED_BENCH:-$HERE/../shared/bench}
BIN=${SWITCHYARD_BIN:-$HERE/target/release/switchyard}
cd "$HERE/bench/floor-proxy"
cargo build --release --locked --offline --target-dir "$HERE/target/floor-proxy" >&2
FLOOR=$HERE/target/floor-proxy/release/floor-proxy
BARE=${PINGORA_BARE_DIR:-/tmp/pingora-bare}/target/release/pingora-lb-mimalloc
cd "$HERE"
ARGS='--listen $BENCH_LISTEN --upstreams $BENCH_BACKENDS'
extra=()
[ -x "$BARE" ] && extra+=(--proxy pingora-mimalloc 18124 "env LISTEN=\$BENCH_LISTEN BACKENDS=\$BENCH_BACKENDS THREADS=1 $BARE")
exec "$SHARED/compare_proxies.sh" --no-direct "$@" "${extra[@]}" \
  --proxy switchyard 18110 "$BIN -c bench/switchyard-bench-metrics-on.yaml" \
  --proxy switchyard-lowercase 18112 "$BIN -c bench/switchyard-bench-lowercase.yaml" \
  --proxy floor 18120 "$FLOOR $ARGS" \
  --proxy floor-mt 18121 "$FLOOR $ARGS --runtime multi" \
  --proxy floor-mt-timeouts 18122 "$FLOOR $ARGS --runtime multi --read-timeout-ms 60000" \
  --proxy floor-mt-maps 18123 "$FLOOR $ARGS --runtime multi --read-timeout-ms 60000 --header-maps"
