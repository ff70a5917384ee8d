#!/usr/bin/env bash
# h2spec.sh -- HTTP/2 conformance (h2spec's 146 cases of RFC 7540 and RFC 7541) of Switchyard's
# listeners, beside NGINX's with `http2` on the same three NGINX backends, in one run.
#
#   H2SPEC=/path/to/h2spec bench/h2spec.sh [OUT_DIR]
#
# Three targets, each given every case with a 5 s timeout:
#  1. Switchyard, TLS listener (HTTP/2 chosen by ALPN);
#  2. Switchyard, plain listener with `proxy.h2c: true` (HTTP/2 by prior knowledge, HTTP/1.1
#     otherwise);
#  3. NGINX, `listen … ssl http2`.
# Prints each target's summary line and Switchyard's failed cases, and keeps h2spec's whole
# reports in OUT_DIR (default: a scratch directory removed at exit). Exits non-zero when a case
# fails on Switchyard's TLS listener.
#
# h2spec is a Go program with no Debian package. It builds offline from its repository
# (github.com/summerwind/h2spec) with Debian's Go and the Debian packages of its dependencies:
#   apt-get install golang-go golang-github-fatih-color-dev golang-github-spf13-cobra-dev \
#     golang-golang-x-net-dev golang-github-mattn-go-colorable-dev \
#     golang-github-mattn-go-isatty-dev golang-github-spf13-pflag-dev \
#     golang-golang-x-sys-dev golang-github-inconshreveable-mousetrap-dev
#   # with the repository at $GOPATH/src/github.com/summerwind/h2spec:
#   GO111MODULE=off GOPATH=$GOPATH:/usr/share/gocode go build -o h2spec ./cmd/h2spec
# Build Switchyard first: cargo build --release. Loopback only.
set -eu
HERE=$(cd "$(dirname "$0")/.." && pwd)
BIN=${SWITCHYARD_BIN:-$HERE/target/release/switchyard}
H2SPEC=${H2SPEC:-$(command -v h2spec || true)}
[ -x "$H2SPEC" ] || { echo "h2spec is missing: set H2SPEC (see the head of this script)" >&2; exit 1; }
. "$HERE/bench/lib.sh"
for tool in nginx openssl; do command -v "$tool" >/dev/null || { echo "$tool is missing" >&2; exit 1; }; done
bench_init h2spec
OUT=${1:-$RUN/reports}
mkdir -p "$OUT"

tls_cert
start_backends 0

mkdir -p "$RUN/proxy"
nginx_h2_tls_config "$RUN/proxy" 18401
start_proxy 18401 "$RUN/proxy/out.log" nginx -e "$RUN/proxy/nginx.log" -p "$RUN/proxy/" \
  -c "$RUN/proxy/nginx.conf"

switchyard_tls_config "$RUN/tls.yaml" 18410 18490 health
start_proxy 18410 "$RUN/tls.log" "$BIN" -c "$RUN/tls.yaml"

# The same config with a plain listener and h2c.
sed -e 's/18410/18411/; s/18490/18491/; s/\.yaml\./-h2c.yaml./' -e '/^    tls:$/,/^      key:/d' \
  -e 's/^proxy:$/proxy:\n  h2c: true/' "$RUN/tls.yaml" >"$RUN/h2c.yaml"
start_proxy 18411 "$RUN/h2c.log" "$BIN" -c "$RUN/h2c.yaml"
sleep 1.5

run() { # NAME PORT [h2spec options]
  local name=$1 port=$2
  shift 2
  "$H2SPEC" -h 127.0.0.1 -p "$port" -o 5 "$@" >"$OUT/$name.txt" 2>&1 || true
  printf '%-26s %s\n' "$name" "$(tail -1 "$OUT/$name.txt")"
  # The failed cases of Switchyard's listeners (NGINX's are in its report).
  [ "${name#switchyard}" != "$name" ] || return 0
  sed -n '/^Failures:/,$p' "$OUT/$name.txt" | grep -E '^\s+(×|->|Expected|Actual)' | sed 's/^/    /' || true
}
run switchyard-tls 18410 -t -k
run switchyard-h2c 18411
run nginx-tls 18401 -t -k
grep -q ' 0 failed' "$OUT/switchyard-tls.txt"
