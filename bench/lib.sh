# lib.sh -- what the whole-process benchmarks in bench/ share; sourced, not run.
#
#   bench_init NAME           a scratch directory in $RUN; everything added to PIDS is stopped
#                             (TERM, then KILL) and $RUN removed when the script exits
#   start_backends [CPU]      three NGINX backends on 127.0.0.1:18001-18003 answering
#                             "hello world!\n" (the backends of ../shared/bench/compare_proxies.sh),
#                             pinned to CPU when given
#   wait_port PORT            until 127.0.0.1:PORT accepts connections (10 s at most)
#   start_proxy PORT LOG COMMAND...
#                             COMMAND pinned to CPU 1, output to LOG, until PORT accepts
#                             connections; its pid in $PROXY (and in PIDS)
#   stop_proxy PID            stops a proxy start_proxy started and waits for it
#   nginx_ka1024              sets NGINX_KA1024 to the command of an NGINX proxy with
#                             `keepalive 1024` upstream on 127.0.0.1:18104
#                             (../shared/bench/nginx-proxy-ka1024.conf), its files in $RUN/ka1024
#   cpu_ticks PID             utime+stime of PID and its children (NGINX: master and workers)
#   rss_kb PID                resident set of PID and its children, in KiB
#   median                    the median of the numbers on standard input
#   config_port FILE PREFIX   the port of the first `address: 127.0.0.1:PREFIX…` line of the
#                             Switchyard config FILE (bench configs: 181 for the listener, 1819
#                             for the admin listener)
#   tls_cert                  a self-signed ECDSA P-256 certificate for localhost and 127.0.0.1:
#                             $RUN/cert.pem and $RUN/key.pem
#   nginx_h2_tls_config DIR PORT
#                             an NGINX proxy config in DIR/nginx.conf (its pid and log in DIR): one
#                             worker, TLS 1.2/1.3 with tls_cert's files and HTTP/2 on PORT,
#                             HTTP/1.1 with keep-alive (64) to the three backends
#   switchyard_tls_config FILE PORT ADMIN [HEALTH]
#                             a Switchyard config in FILE: one worker, a TLS listener on PORT
#                             (tls_cert's files), admin on ADMIN, round robin over the three
#                             backends; active health checks every second when HEALTH is `health`;
#                             `proxy.header_case` from $SWITCHYARD_HEADER_CASE (default preserve),
#                             `proxy.http1_path` from $SWITCHYARD_HTTP1_PATH (default switchyard)
#   bench_config FILE         FILE, or with $SWITCHYARD_HTTP1_PATH set a copy of it in $RUN with
#                             `proxy.http1_path` set to it (the scripts' default configs, on
#                             either HTTP/1 path: `pingora` for Pingora's loop); prints the file
export PATH="$PATH:/usr/sbin:/sbin"

bench_init() {
  RUN=$(mktemp -d "/tmp/switchyard-$1.XXXXXX")
  PIDS=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$RUN"
}

start_backends() {
  cat >"$RUN/backends.conf" <<EOF
worker_processes 1;
daemon off;
pid $RUN/backends.pid;
error_log $RUN/backends.log warn;
events { worker_connections 10000; multi_accept on; }
http {
  access_log off;
  default_type text/plain;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  server { listen 127.0.0.1:18001 reuseport backlog=4096; location / { return 200 "hello world!\n"; } }
  server { listen 127.0.0.1:18002 reuseport backlog=4096; location / { return 200 "hello world!\n"; } }
  server { listen 127.0.0.1:18003 reuseport backlog=4096; location / { return 200 "hello world!\n"; } }
}
EOF
  local pin=()
  [ -n "${1:-}" ] && pin=(taskset -c "$1")
  "${pin[@]}" nginx -e "$RUN/backends.log" -p "$RUN/" -c "$RUN/backends.conf" &
  PIDS+=($!)
}

wait_port() {
  for _ in $(seq 100); do
    (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1 never opened" >&2
  exit 1
}

start_proxy() {
  local port=$1 log=$2
  shift 2
  taskset -c 1 "$@" >"$log" 2>&1 &
  PROXY=$!
  PIDS+=($PROXY)
  wait_port "$port"
}

# start_at_rest NAME PORT COMMAND...: start_proxy with its log in $RUN/NAME.log, give it a
# second to settle, and set REST to its resident set then (kB). $PROXY is its pid.
start_at_rest() {
  local name=$1 port=$2
  shift 2
  start_proxy "$port" "$RUN/$name.log" "$@"
  sleep 1
  REST=$(rss_kb "$PROXY")
}

stop_proxy() {
  kill "$1"
  wait "$1" 2>/dev/null || true
}

nginx_ka1024() {
  local shared=${SHARED_BENCH:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../shared/bench" && pwd)}
  mkdir -p "$RUN/ka1024"
  NGINX_KA1024=(nginx -p "$RUN/ka1024/" -e "$RUN/ka1024/err" -c "$shared/nginx-proxy-ka1024.conf"
    -g "pid $RUN/ka1024/pid;")
}

proc_tree() { echo "$1"; pgrep -P "$1" || true; }
cpu_ticks() { for p in $(proc_tree "$1"); do cat "/proc/$p/stat"; done | awk '{s += $14 + $15} END {print s}'; }
rss_kb() { for p in $(proc_tree "$1"); do cat "/proc/$p/status"; done | awk '/VmRSS/ {s += $2} END {print s}'; }
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

tls_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$RUN/key.pem" -out "$RUN/cert.pem" 2>/dev/null
}

nginx_h2_tls_config() {
  cat >"$1/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $1/nginx.pid;
error_log $1/nginx.log warn;
events { worker_connections 10000; }
http {
  access_log off;
  upstream backends {
    server 127.0.0.1:18001; server 127.0.0.1:18002; server 127.0.0.1:18003;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$2 ssl http2;
    ssl_certificate $RUN/cert.pem;
    ssl_certificate_key $RUN/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    keepalive_requests 100000000;
    http2_max_requests 100000000;
    location / {
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
}

switchyard_tls_config() {
  local health=""
  [ "${4:-}" = health ] && health="    health_check:
      path: /
      interval: 1s
      timeout: 500ms
"
  cat >"$1" <<EOF
version: 1
threads: 1
pid_file: $1.pid
upgrade_sock: $1.sock
grace_period_seconds: 0
graceful_shutdown_timeout_seconds: 1
upstream_keepalive_pool_size: 1024
listeners:
  - address: 127.0.0.1:$2
    tls:
      cert: $RUN/cert.pem
      key: $RUN/key.pem
admin:
  address: 127.0.0.1:$3
  metrics: true
proxy:
  access_log: false
  via: ""
  header_case: ${SWITCHYARD_HEADER_CASE:-preserve}
  http1_path: ${SWITCHYARD_HTTP1_PATH:-switchyard}
target_groups:
  - name: bench
    strategy: round_robin
    backends:
      - address: 127.0.0.1:18001
      - address: 127.0.0.1:18002
      - address: 127.0.0.1:18003
${health}routes:
  - path_prefix: /
    target_group: bench
EOF
}

bench_config() {
  if [ -z "${SWITCHYARD_HTTP1_PATH:-}" ]; then
    echo "$1"
    return
  fi
  local copy
  copy="$RUN/$(basename "$1" .yaml)-http1-$SWITCHYARD_HTTP1_PATH.yaml"
  sed -e "/^  http1_path: /d" -e "s/^proxy:\$/proxy:\n  http1_path: $SWITCHYARD_HTTP1_PATH/" "$1" >"$copy"
  grep -q "^  http1_path: " "$copy" || { echo "bench_config: no proxy: section in $1" >&2; return 1; }
  echo "$copy"
}

config_port() {
  awk -v p="address: 127.0.0.1:$2" 'index($0, p) {split($NF, a, ":"); print a[2]; exit}' "$1"
}
