#!/usr/bin/env bash
# Runs Switchyard on its built-in demo (demo backends in-process, conf/demo.yaml embedded):
# `cargo run --release -- --demo`, after installing what the build needs on a fresh machine.
# The first optimised build takes several minutes (LTO, AWS SDK); later runs start at once.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cmake >/dev/null; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"
  echo "installing cmake (pingora-core builds zlib-ng with it)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq cmake >/dev/null
fi
exec cargo run --release --bin switchyard -- --demo "$@"
