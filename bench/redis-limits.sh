#!/usr/bin/env bash
# redis-limits.sh -- what a shared rate limit costs: one interleaved run of
# ../shared/bench/compare_proxies.sh over NGINX and three Switchyard configurations on the
# same backends -- no rate limit, a local token bucket, the bucket in Redis -- and the Redis
# server's own CPU per call.
#
#   bench/redis-limits.sh [compare_proxies.sh options, e.g. -d 10 -r 3]
#
# The limits are set far above the offered load (nothing is refused): every request pays for
# the bucket update and is then proxied, as in a real deployment below its limit. redis-server
# (Debian's package) runs on loopback port 18379, pinned with wrk and the backends to CPU 0;
# its CPU time (utime+stime from /proc) over the whole run is divided by the EVALSHA/EVAL calls
# it served (INFO commandstats). Everything started here is stopped on exit.
set -eu
HERE=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED_BENCH:-$HERE/../shared/bench}
BIN=${SWITCHYARD_BIN:-$HERE/target/release/switchyard}
REDIS_PORT=18379
RUN=$(mktemp -d /tmp/switchyard-redis-bench.XXXXXX)
REDIS_PID=""
cleanup() {
  [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null
  rm -rf "$RUN"
}
trap cleanup EXIT

taskset -c 0 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$RUN" --daemonize no --loglevel warning >"$RUN/redis.log" 2>&1 &
REDIS_PID=$!
for _ in $(seq 50); do
  redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
  sleep 0.1
done

# One config per variant, derived from the metrics-on benchmark config: own ports and files.
variant() { # NAME PORT ADMIN_PORT RATE_LIMIT_YAML
  local f="$RUN/$1.yaml"
  sed -e "s/127.0.0.1:18110/127.0.0.1:$2/" -e "s/127.0.0.1:18190/127.0.0.1:$3/" \
    -e "s#/tmp/switchyard-bench-on#$RUN/$1#" "$HERE/bench/switchyard-bench-metrics-on.yaml" >"$f"
  [ -n "$4" ] && printf '%s\n' "$4" >>"$f"
  "$BIN" -t -c "$f" >/dev/null
  echo "$f"
}
LIMIT='    rate_limit:
      rate: 100000000
      burst: 100000000
      key: client_ip'
NONE=$(variant nolimit 18130 18230 "")
LOCAL=$(variant local 18131 18231 "$LIMIT")
REDIS=$(variant redis 18132 18232 "$LIMIT
      store: redis://127.0.0.1:$REDIS_PORT/0
      expected_nodes: 1")

cpu() { awk '{print $14 + $15}' "/proc/$REDIS_PID/stat"; }
calls() {
  redis-cli -p "$REDIS_PORT" info commandstats |
    awk -F'[:=,]' '/^cmdstat_(evalsha|eval):/ {s += $3} END {print s + 0}'
}
c0=$(cpu); n0=$(calls)
"$SHARED/compare_proxies.sh" "$@" --no-direct --only nginx,no-limit,local-limit,redis-limit \
  --proxy no-limit 18130 "$BIN -c $NONE" \
  --proxy local-limit 18131 "$BIN -c $LOCAL" \
  --proxy redis-limit 18132 "$BIN -c $REDIS"
c1=$(cpu); n1=$(calls)
hz=$(getconf CLK_TCK)
awk -v c="$((c1 - c0))" -v n="$((n1 - n0))" -v hz="$hz" 'BEGIN {
  if (n == 0) { print "redis-server: no script calls seen"; exit 1 }
  us = c * 1e6 / hz / n
  printf "redis-server: %d script calls, %.2f CPU us per call -> one Redis core: ~%d calls/s\n", n, us, 1e6 / us
}'
