#!/usr/bin/env bash
# Proves that the test command works on a really fresh machine: a minimal Debian bookworm
# root made with debootstrap, with only the Rust toolchain copied in (as on a new CI machine)
# and this checkout's committed files, runs ./scripts/test.sh as root inside it.
#   sudo scripts/prove-fresh-debian.sh [ROOT_DIR]        (MIRROR=… to pick a Debian mirror)
# Needs debootstrap on the host (apt-get install debootstrap). Everything it starts is inside
# the chroot; the mounts are undone on exit.
set -euo pipefail
ROOT=${1:-/tmp/switchyard-fresh-debian}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
REPO=$(cd "$(dirname "$0")/.." && pwd)
command -v debootstrap >/dev/null || { echo "needs debootstrap: apt-get install debootstrap" >&2; exit 1; }

if [ ! -x "$ROOT/bin/bash" ]; then
  debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR"
fi
# The Rust toolchain, as the CI machine has it (rustup's toolchains, cargo's binaries).
mkdir -p "$ROOT/root/.cargo"
cp -a "$HOME/.rustup" "$ROOT/root/"
cp -a "$HOME/.cargo/bin" "$ROOT/root/.cargo/"
nextest=$(command -v cargo-nextest || true)
[ -n "$nextest" ] && cp "$nextest" "$ROOT/root/.cargo/bin/"
# A clean copy of the committed tree.
rm -rf "$ROOT/src" && mkdir -p "$ROOT/src"
git -C "$REPO" archive HEAD | tar -x -C "$ROOT/src"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"

cleanup() {
  for m in dev/pts dev proc sys; do umount -l "$ROOT/$m" 2>/dev/null || true; done
}
trap cleanup EXIT
mount -t proc proc "$ROOT/proc"
mount -t sysfs sys "$ROOT/sys"
mount --bind /dev "$ROOT/dev"
mount --bind /dev/pts "$ROOT/dev/pts"

# Behind a TLS-intercepting proxy the host trusts a CA the fresh root does not know: hand the
# host's bundle to pip and cargo inside (the machine's own trust store stays Debian's).
tls_env=()
if [ -n "${SSL_CERT_FILE:-}" ] && [ -f "$SSL_CERT_FILE" ]; then
  cp "$SSL_CERT_FILE" "$ROOT/root/host-ca-bundle.crt"
  for v in SSL_CERT_FILE PIP_CERT REQUESTS_CA_BUNDLE CARGO_HTTP_CAINFO CURL_CA_BUNDLE; do
    tls_env+=("$v=/root/host-ca-bundle.crt")
  done
fi

chroot "$ROOT" /usr/bin/env -i HOME=/root TERM=dumb "${tls_env[@]}" \
  PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  /bin/bash -c 'cd /src && ./scripts/test.sh'
