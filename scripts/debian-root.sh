#!/usr/bin/env bash
# debian-root.sh prints the path of a minimal Debian 12 root filesystem as a
# tar (debootstrap --variant=minbase bookworm, amd64), made once and cached
# in .cache/debootstrap/. package-test.sh installs the packages into copies
# of it; image-test.sh makes the container bases from it.
# Needs root and debootstrap. DEBIAN_MIRROR overrides the mirror.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${EDGE_CACHE_DIR:-$root/.cache}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
base=$cache/debootstrap/bookworm-minbase-amd64.tar
if [ ! -f "$base" ]; then
  command -v debootstrap >/dev/null || { echo "debian-root: debootstrap not found (apt-get install debootstrap)" >&2; exit 1; }
  echo "debian-root: debootstrap --variant=minbase bookworm (once, about 90 s)" >&2
  mkdir -p "$(dirname "$base")"
  tmp=$(mktemp -d)
  debootstrap --variant=minbase --arch=amd64 bookworm "$tmp/root" "$mirror" >"$tmp/log" 2>&1 ||
    { tail -20 "$tmp/log" >&2; rm -rf "$tmp"; echo "debian-root: debootstrap failed" >&2; exit 1; }
  tar -C "$tmp/root" -cf "$base.tmp" .
  rm -rf "$tmp"
  mv "$base.tmp" "$base"
fi
echo "$base"
