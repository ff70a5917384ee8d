#!/usr/bin/env bash
# Runs Switchyard on its built-in demo (demo backends in-process, conf/demo.yaml embedded,
# 127.0.0.1 only): `cargo run --release -- --demo`, after installing what the build needs on
# a fresh Debian or Ubuntu machine. The first optimised build takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v cc >/dev/null || need+=(build-essential)
command -v cmake >/dev/null || need+=(cmake)
command -v pkg-config >/dev/null || need+=(pkg-config)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"
  echo "installing ${need[*]} (the build needs a C compiler; pingora-core builds zlib-ng with cmake)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
exec cargo run --release --bin switchyard -- --demo "$@"
