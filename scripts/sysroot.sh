#!/usr/bin/env bash
# sysroot.sh makes a Debian 11 (bullseye, glibc 2.31) sysroot for one
# architecture in the cache, once, and prints its path:
#   .cache/sysroot/bullseye-glibc2.31-13+deb11u11-<arch>/
# Release builds link against it (scripts/dist.sh), so that the binaries need
# no glibc symbol newer than 2.31: they run on Ubuntu 20.04 and JetPack 5
# (glibc 2.31), where binaries linked on this Debian 12 host need 2.34
# (__libc_start_main, pthread_create, dlopen and res_search moved into libc
# in 2.34). dist-test runs the archives on it too (its libstdc++ and libgcc
# are what ONNX Runtime needs), so "runs on glibc 2.31" is tried, not assumed.
#
# It holds the .deb files' contents only (libc6, libc6-dev, linux-libc-dev,
# libgcc-s1, libstdc++6), from Debian's own archive, each checked against a
# pinned sha256; bullseye's final point release (11.11) froze these versions.
# Absolute symbolic links (libm.so -> /lib/...) are made relative, so that
# nothing resolves into the host's own libraries.
# Usage: scripts/sysroot.sh amd64|arm64
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${EDGE_CACHE_DIR:-$root/.cache}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
arch=${1:?usage: scripts/sysroot.sh amd64|arm64}
glibc=2.31-13+deb11u11
gcc10=10.2.1-6
kernel=5.10.223-1

case $arch in
  amd64)
    declare -A SHA=(
      [pool/main/g/glibc/libc6_${glibc}_amd64.deb]=05f7264da867b37f4c5ce49266b558ea1e81e05a9464f623152fca70f3550282
      [pool/main/g/glibc/libc6-dev_${glibc}_amd64.deb]=e7f7b45d9c5cfcf37609f0b6efd3c645272c812144703af89dfd32218fcb0fd3
      [pool/main/l/linux/linux-libc-dev_${kernel}_amd64.deb]=e3be603bd12377bb90fcfb0f2048ca3a81c886e49d6f09945b82159d1c54f7b2
      [pool/main/g/gcc-10/libgcc-s1_${gcc10}_amd64.deb]=e478f2709d8474165bb664de42e16950c391f30eaa55bc9b3573281d83a29daf
      [pool/main/g/gcc-10/libstdc++6_${gcc10}_amd64.deb]=5c155c58935870bf3b4bfe769116841c0d286a74f59eccfd5645693ac23f06b1
    ) ;;
  arm64)
    declare -A SHA=(
      [pool/main/g/glibc/libc6_${glibc}_arm64.deb]=baaa9aa184e2f21738c5819055e6740cc5b22f198e3f416e33f82b40ff6933d8
      [pool/main/g/glibc/libc6-dev_${glibc}_arm64.deb]=28d478134722dcd4b0bd2045a199301d18713bf95947b9fce66634e7aeacab2e
      [pool/main/l/linux/linux-libc-dev_${kernel}_arm64.deb]=8b6374a64412d33eac61d74f77b8f932da4b8a707ea8a614791e2a35b8917618
      [pool/main/g/gcc-10/libgcc-s1_${gcc10}_arm64.deb]=e2fcdb378d3c1ad1bcb64d4fb6b37aab44011152beca12a4944f435a2582df1f
      [pool/main/g/gcc-10/libstdc++6_${gcc10}_arm64.deb]=7869aa540cc46e9f3d4267d5bde2af0e5b429a820c1d6f1a4cfccfe788c31890
    ) ;;
  *) echo "sysroot: unsupported arch $arch (amd64, arm64)" >&2; exit 1 ;;
esac

dir=$cache/sysroot/bullseye-glibc$glibc-$arch
if [ -f "$dir/.complete" ]; then echo "$dir"; exit 0; fi
command -v dpkg-deb >/dev/null || { echo "sysroot: dpkg-deb is needed (apt-get install dpkg)" >&2; exit 1; }
debs=$cache/sysroot/debs
mkdir -p "$debs"
rm -rf "$dir.tmp"
mkdir -p "$dir.tmp"
for path in "${!SHA[@]}"; do
  f=$debs/$(basename "$path")
  if [ ! -f "$f" ] || [ "$(sha256sum "$f" | cut -d' ' -f1)" != "${SHA[$path]}" ]; then
    echo "sysroot: fetching $mirror/$path" >&2
    curl -fsS --connect-timeout 20 --max-time 300 -o "$f.tmp" "$mirror/$path" ||
      { rm -f "$f.tmp"; echo "sysroot: cannot fetch $mirror/$path (set DEBIAN_MIRROR, e.g. http://archive.debian.org/debian once bullseye is archived)" >&2; exit 1; }
    got=$(sha256sum "$f.tmp" | cut -d' ' -f1)
    [ "$got" = "${SHA[$path]}" ] || { rm -f "$f.tmp"; echo "sysroot: $path has sha256 $got, want ${SHA[$path]}" >&2; exit 1; }
    mv "$f.tmp" "$f"
  fi
  dpkg-deb -x "$f" "$dir.tmp"
done
rm -rf "$dir.tmp/usr/share" # documentation only
# libm.so -> /lib/x86_64-linux-gnu/libm.so.6 would point into the host.
while IFS= read -r -d '' link; do
  ln -sfnr "$dir.tmp$(readlink "$link")" "$link"
done < <(find "$dir.tmp" -type l -lname '/*' -print0)
touch "$dir.tmp/.complete"
rm -rf "$dir"
mv "$dir.tmp" "$dir"
echo "sysroot: $dir" >&2
echo "$dir"
