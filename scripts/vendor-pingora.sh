#!/usr/bin/env bash
# vendor-pingora.sh -- rebuild vendor/<crate>/ from the published crate and the patch set in
# vendor/patches/, or check that the committed copy is exactly that (--check).
#
#   scripts/vendor-pingora.sh [--check]
#
# Each patch is named NNNN-<crate>-<what>.patch and applies with `patch -p1` inside the
# crate's directory. The published crate comes from Cargo's download cache, or else from
# crates.io, and is verified against the checksum Cargo.lock had for it before the patch
# (PINNED below). See vendor/README.md.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
VERSION=0.9.1
# sha256 of the published .crate files, as recorded in Cargo.lock before vendoring.
declare -A PINNED=(
  [pingora-core]=a535f47f65fdcb003f9e1df04cd18e614c128dfe9388acce3f211ae38ac14d68
  [pingora-runtime]=09d2c5be0a8fcffa36c23d21b3d6ec5bad113395086f5b4e1a0c50b300c674c0
  [pingora-http]=3f38e9e519d53fab09eb320f7be2cd27ef9e66f755eba3bd84cc68852108d841
  [pingora-proxy]=8e3d5670490740405ecc8c6f75c3fcbce4d24f7adaffb355ca44550e7918e358
  [pingora-pool]=ecda093a10bad5e887d73286f052dd0fc78ad0d6c7654235e507ed0f85b64af1
)
CHECK=0
[ "${1:-}" = "--check" ] && CHECK=1

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for crate in "${!PINNED[@]}"; do
  file="$work/$crate-$VERSION.crate"
  cached=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$crate-$VERSION.crate" 2>/dev/null | head -1 || true)
  if [ -n "$cached" ]; then
    cp "$cached" "$file"
  else
    curl -sSfL -o "$file" "https://static.crates.io/crates/$crate/$crate-$VERSION.crate"
  fi
  echo "${PINNED[$crate]}  $file" | sha256sum -c --quiet
  tar -xzf "$file" -C "$work"
  src="$work/$crate-$VERSION"
  for p in "$HERE"/vendor/patches/*-"$crate"-*.patch; do
    [ -e "$p" ] || continue
    patch -s -p1 -d "$src" < "$p"
  done
  if [ "$CHECK" = 1 ]; then
    diff -r "$src" "$HERE/vendor/$crate" && echo "vendor/$crate: published $VERSION + patches"
  else
    rm -rf "$HERE/vendor/$crate"
    cp -r "$src" "$HERE/vendor/$crate"
    echo "vendor/$crate rebuilt"
  fi
done
