#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine with only the Rust toolchain: installs
# what the suite uses (system packages through apt-get, Python tools into a virtual
# environment under target/), then runs every test of the workspace (unit tests beside the
# code, end-to-end tests in tests/ that start the real binaries on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."

# A whole-suite run builds about 3 GB into target/ (the workspace's tests and the vendored
# crates' tests, sharing their dependencies) besides Cargo's registry; a full disk shows up as
# a linker or assembler error, so say up front how much there is.
echo "disk free for target/: $(df -Pm . | awk 'NR == 2 { print $4 }') MB"

SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"

# System packages: a C toolchain, cmake and pkg-config build pingora-core's zlib-ng and ring;
# python3-venv holds the EC2 emulator; prometheus (promtool), chromium, openssl, nginx,
# haproxy and redis-server are the real tools and peers the tests run against; procps has
# kill and ps.
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have cc || need+=(build-essential)
have cmake || need+=(cmake)
have pkg-config || need+=(pkg-config)
have python3 || need+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
have promtool || need+=(prometheus)
have chromium || need+=(chromium)
have openssl || need+=(openssl)
have nginx || [ -x /usr/sbin/nginx ] || need+=(nginx)
have haproxy || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
have redis-server || need+=(redis-server)
have kill && have ps || need+=(procps)
[ -e /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin:/sbin"

# The EC2 API emulator for the AWS tests, in a virtual environment of its own (Debian's
# system Python is externally managed: pip may not install into it).
VENV=target/test-venv
if [ ! -x "$VENV/bin/moto_server" ]; then
  echo "installing: moto[server] into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]"
fi
export PATH="$PWD/$VENV/bin:$PATH"
command -v moto_server >/dev/null || { echo "moto_server is missing from $VENV" >&2; exit 1; }

# AWS tests talk only to the emulator: never reach for instance metadata or real credentials.
export AWS_EC2_METADATA_DISABLED=true

# A clean build from scratch gains nothing from incremental compilation, whose caches would
# only double the disk the build takes (override with CARGO_INCREMENTAL=1 when iterating).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# Every test binds only loopback; give the suite enough file descriptors.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi

# Only on a whole-suite run (no filter given):
if [ $# -eq 0 ]; then
  # The end-to-end tests once more, every Switchyard started with `proxy.http1_path: pingora`
  # (Pingora's HTTP/1 loop, the fallback to Switchyard's own path): both loops must behave
  # alike.
  if cargo nextest --version >/dev/null 2>&1; then
    SWITCHYARD_E2E_HTTP1_PATH=pingora cargo nextest run --workspace --no-fail-fast --test e2e
  else
    SWITCHYARD_E2E_HTTP1_PATH=pingora cargo test --workspace --no-fail-fast --test e2e
  fi
  # The vendored Pingora crates' own unit tests, those of their patches among them
  # (vendor/README.md), on a copy that is a workspace of its own.
  ./scripts/vendor-tests.sh
fi
