#!/usr/bin/env bash
# callgrind.sh -- which functions a proxied request's user-space instructions go to.
#
#   bench/callgrind.sh [N] [OUT] [BIN] [CONFIG]
#
# Starts three NGINX backends and Switchyard (bench/switchyard-bench-metrics-on.yaml) under
# valgrind's callgrind, sends N serial requests with hey (default 5000), stops the proxy and
# writes the profile to OUT (default /tmp/switchyard.callgrind). Read it with
# `callgrind_annotate --inclusive=yes OUT | head -80`. Counts include start-up: compare two
# profiles taken with the same N. Loopback only; bounded by N.
set -eu
HERE=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-5000}
OUT=${2:-/tmp/switchyard.callgrind}
BIN=${3:-$HERE/target/release/switchyard}
CONFIG=${4:-$HERE/bench/switchyard-bench-metrics-on.yaml}
. "$HERE/bench/lib.sh"
PORT=$(config_port "$CONFIG" 181)
bench_init callgrind
start_backends
valgrind --tool=callgrind --callgrind-out-file="$OUT" "$BIN" -c "$CONFIG" 2>"$RUN/vg.log" &
VG=$!
PIDS+=($VG)
for _ in $(seq 300); do
  [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/")" = 200 ] && break
  sleep 0.3
done
timeout 600 hey -n "$N" -c 1 "http://127.0.0.1:$PORT/" | grep -E "Requests/sec|\[200\]"
kill -INT "$VG"
wait "$VG" || true
echo "profile: $OUT"
