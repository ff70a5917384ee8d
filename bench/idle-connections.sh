#!/usr/bin/env bash
# idle-connections.sh -- resident set of each proxy with many idle keep-alive client
# connections open.
#
#   bench/idle-connections.sh [--tls] [CONNS] [ROUNDS]
#
# Three NGINX backends (pinned to CPU 0), then, one at a time and pinned to CPU 1: Switchyard
# (bench/switchyard-bench-lowercase.yaml), NGINX with `keepalive 1024` upstream
# (../shared/bench/nginx-proxy-ka1024.conf) and HAProxy (the configuration of
# ../shared/bench/compare_proxies.sh). bench/hold-connections.py opens CONNS connections
# (default 5000), one request on each, and holds them idle; the proxy's resident set (with
# children) is read at rest, while they are held, and 3 s after they close. With --tls every
# proxy listens with TLS (one self-signed ECDSA P-256 certificate) and the connections are TLS
# 1.3 with HTTP/1.1 (NGINX and HAProxy then run configurations of their own, below). Build Switchyard
# first (cargo build --release). Loopback only; bounded by CONNS, ROUNDS (default 1) and the
# holder's 10 s.
# Switchyard runs on its own HTTP/1 path (the default); with SWITCHYARD_HTTP1_PATH=pingora, on Pingora's loop.
set -eu
HERE=$(cd "$(dirname "$0")/.." && pwd)
TLS=""
[ "${1:-}" = --tls ] && { TLS=--tls; shift; }
CONNS=${1:-5000}
ROUNDS=${2:-1}
. "$HERE/bench/lib.sh"
BIN=${SWITCHYARD_BIN:-$HERE/target/release/switchyard}
bench_init idle-connections
ulimit -n "$(ulimit -Hn)"
start_backends 0
nginx_ka1024
BIND=""
if [ -n "$TLS" ]; then
  tls_cert
  cat "$RUN/cert.pem" "$RUN/key.pem" >"$RUN/bundle.pem"
  BIND="ssl crt $RUN/bundle.pem"
  # NGINX with `keepalive 1024` upstream, listening with TLS.
  mkdir -p "$RUN/nginx-tls"
  cat >"$RUN/nginx-tls/nginx.conf" <<CFG
worker_processes 1;
daemon off;
pid $RUN/nginx-tls/nginx.pid;
worker_rlimit_nofile 20000;
events { worker_connections 10000; }
http {
  access_log off;
  keepalive_timeout 300s;
  upstream be {
    server 127.0.0.1:18001; server 127.0.0.1:18002; server 127.0.0.1:18003;
    keepalive 1024;
  }
  server {
    listen 127.0.0.1:18104 ssl;
    ssl_certificate $RUN/cert.pem;
    ssl_certificate_key $RUN/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://be;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CFG
  NGINX_KA1024=(nginx -e "$RUN/nginx-tls/nginx.log" -p "$RUN/nginx-tls/" -c "$RUN/nginx-tls/nginx.conf")
  SWITCHYARD_HEADER_CASE=lowercase switchyard_tls_config "$RUN/switchyard-tls.yaml" 18112 18192 health
  SWITCHYARD_CONFIG=$RUN/switchyard-tls.yaml
else
  SWITCHYARD_CONFIG=$(bench_config "$HERE/bench/switchyard-bench-lowercase.yaml")
fi

cat >"$RUN/haproxy.cfg" <<CFG
global
  nbthread 1
  maxconn $((CONNS + 1000))
  pidfile $RUN/haproxy.pid
defaults
  mode http
  maxconn $((CONNS + 1000))
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:18102 $BIND
  default_backend be
backend be
  balance roundrobin
  server b1 127.0.0.1:18001
  server b2 127.0.0.1:18002
  server b3 127.0.0.1:18003
CFG

# measure NAME PORT COMMAND...: one target's resident set around CONNS idle connections.
measure() {
  local name=$1 port=$2
  start_at_rest "$@"
  local pid=$PROXY rest=$REST held after ready
  taskset -c 0 python3 "$HERE/bench/hold-connections.py" "$port" "$CONNS" 10 $TLS >"$RUN/hold.txt" &
  local holder=$!
  for _ in $(seq 600); do
    grep -q ready "$RUN/hold.txt" 2>/dev/null && break
    sleep 0.2
  done
  sleep 2
  ready=$(awk '/ready/ {print $2}' "$RUN/hold.txt")
  held=$(rss_kb $pid)
  wait $holder
  sleep 3
  after=$(rss_kb $pid)
  printf '| %s | %s | %s | %s | %s | %s |\n' "$name" "$rest" "$held" "$after" "${ready:-0}" \
    "$(( (held - rest) * 1024 / CONNS ))"
  stop_proxy $pid
}

echo "| target | at rest kB | $CONNS idle connections kB | 3 s after kB | answered 200 | bytes per connection |"
echo "|---|---|---|---|---|---|"
for _ in $(seq "$ROUNDS"); do
  measure switchyard-lowercase 18112 "$BIN" -c "$SWITCHYARD_CONFIG"
  measure nginx-ka1024 18104 "${NGINX_KA1024[@]}"
  measure haproxy 18102 haproxy -db -f "$RUN/haproxy.cfg"
done
