#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what it needs, then runs every
# test of the workspace (unit tests beside the code, end-to-end tests in tests/).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"

# System packages: cmake builds pingora-core's zlib-ng; prometheus (with promtool) and
# chromium are the real tools the observability tests check the metrics and dashboard with.
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v promtool >/dev/null || need+=(prometheus)
command -v chromium >/dev/null || need+=(chromium)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The EC2 API emulator for the AWS tests. pip puts its scripts in Python's scripts directory,
# which is not always on PATH (pyenv, for one, needs a rehash for new commands).
PY_SCRIPTS=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
export PATH="$PY_SCRIPTS:$PATH"
if ! command -v moto_server >/dev/null; then
  echo "installing: moto[server] (pip)"
  python3 -m pip install --quiet "moto[server]"
  command -v pyenv >/dev/null && pyenv rehash || true
  hash -r
fi
command -v moto_server >/dev/null || { echo "moto_server is not on PATH after installing moto[server]" >&2; exit 1; }

# AWS tests talk only to the emulator: never reach for instance metadata or real credentials.
export AWS_EC2_METADATA_DISABLED=true

# Every test binds only loopback; give the suite enough file descriptors.
ulimit -n 65536 2>/dev/null || true

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
