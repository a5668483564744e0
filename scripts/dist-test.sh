#!/usr/bin/env bash
# dist-test.sh proves the release archives work on the oldest glibc they
# claim (2.31: Ubuntu 20.04, JetPack 5), not just that they build. For each
# archive (linux/amd64 and linux/arm64) it checks the glibc symbol floor of
# every ELF file, then, on the Debian 11 sysroot's own loader, glibc 2.31,
# libstdc++ and libgcc (scripts/sysroot.sh) -- natively for amd64 (the
# sysroot's ld.so with --library-path), under qemu-user for arm64 -- runs
# `edge-node --version`, serves the silero_vad sample model with the
# archive's own libonnxruntime.so.1 and sample config, and runs one KServe v2
# inference against it.
# Usage: scripts/dist-test.sh [archive...]   (default: the newest dist/ archive of each arch)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${EDGE_CACHE_DIR:-$root/.cache}
glibc_max=${GLIBC_MAX:-2.31}
archives=("$@")
if [ ${#archives[@]} -eq 0 ]; then
  for arch in amd64 arm64; do
    a=$(ls -t "$root"/dist/edge-node-*-linux-$arch.tar.gz 2>/dev/null | head -1)
    [ -n "$a" ] || { echo "dist-test: no $arch archive: run make dist" >&2; exit 1; }
    archives+=("$a")
  done
fi
# shellcheck source=smoke.sh
. "$root/scripts/smoke.sh"
model=$cache/models/silero_vad/1/model.onnx
[ -f "$model" ] || { echo "dist-test: $model missing: run make setup" >&2; exit 1; }

# test_archive runs in a subshell per archive: its own work folder and cleanup.
test_archive() {
  local archive=$1
  work=$(mktemp -d)
  pid=
  cleanup() {
    local rc=$?
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
    exit "$rc"
  }
  trap cleanup EXIT
  case $archive in
    *-linux-amd64.tar.gz) arch=amd64; triplet=x86_64-linux-gnu; loader=ld-linux-x86-64.so.2 ;;
    *-linux-arm64.tar.gz) arch=arm64; triplet=aarch64-linux-gnu; loader=ld-linux-aarch64.so.1 ;;
    *) echo "dist-test: $archive: not a linux-amd64 or linux-arm64 archive" >&2; exit 1 ;;
  esac
  sysroot=$("$root/scripts/sysroot.sh" "$arch")
  libpath=$sysroot/lib/$triplet:$sysroot/usr/lib/$triplet
  tar -xzf "$archive" -C "$work"
  dir=$(echo "$work"/edge-node-*)
  for f in LICENSE THIRD_PARTY_NOTICES systemd/edge-node.service systemd/edge-node.sysusers sbom/edge-node.cdx.json sbom/edgectl.cdx.json; do
    [ -s "$dir/$f" ] || { echo "dist-test: the archive lacks $f" >&2; exit 1; }
  done
  grep -q '^ONNX Runtime ' "$dir/THIRD_PARTY_NOTICES" || { echo "dist-test: THIRD_PARTY_NOTICES has no ONNX Runtime entry" >&2; exit 1; }
  "$root/scripts/glibc-floor.sh" "$glibc_max" "$dir"/bin/* "$dir/lib/libonnxruntime.so.1"
  # The SBOMs list exactly the modules each binary's build info names (go
  # version -m), and edge-node's the archive's ONNX Runtime library by hash.
  for b in edge-node edgectl; do
    [ -s "$dir/sbom/$b.cdx.json" ] || { echo "dist-test: the archive lacks sbom/$b.cdx.json" >&2; exit 1; }
    lib=; [ "$b" = edge-node ] && lib=$dir/lib/libonnxruntime.so.1
    "$root/scripts/sbom-check.sh" "$dir/sbom/$b.cdx.json" "$dir/bin/$b" ${lib:+"$lib"}
  done
  # run: a program of the archive on the sysroot's glibc 2.31, not the host's.
  if [ "$arch" = arm64 ]; then
    qemu=$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)
    [ -n "$qemu" ] || { echo "dist-test: qemu-aarch64-static not found (apt-get install qemu-user-static)" >&2; exit 1; }
    # -L: the guest's /lib/ld-linux-aarch64.so.1 and /lib/aarch64-linux-gnu are the sysroot's.
    run=("$qemu" -L "$sysroot")
    how="under $(basename "$qemu") -L (glibc 2.31 sysroot)"
  else
    [ "$(uname -m)" = x86_64 ] || { echo "dist-test: the amd64 archive runs on an x86_64 host only" >&2; exit 1; }
    run=("$sysroot/lib/$triplet/$loader" --library-path "$libpath")
    how="on the glibc 2.31 sysroot's loader"
    # Every library the binary needs resolves inside the sysroot.
    for f in "$dir/bin/edge-node" "$dir/lib/libonnxruntime.so.1"; do
      if "${run[@]}" --list "$f" | grep '=>' | grep -v "=> $sysroot/"; then
        echo "dist-test: $f resolves libraries outside $sysroot" >&2; exit 1
      fi
    done
  fi
  run() { "${run[@]}" "$@"; }

  echo "dist-test: $(basename "$archive") $how" >&2
  ver=$(run "$dir/bin/edge-node" --version)
  echo "dist-test: $ver" >&2
  case $ver in "edge-node "*) ;; *) echo "dist-test: unexpected --version output: $ver" >&2; exit 1 ;; esac

  mkdir -p "$work/models/silero_vad/1"
  cp "$model" "$work/models/silero_vad/1/model.onnx"
  port=$(free_port)
  # The runner (qemu or ld.so) itself is the background process (not a shell
  # function's subshell), so that the cleanup's kill reaches the node; no cloud
  # link: a test must not take the embedded broker's port 1883 on the machine.
  "${run[@]}" "$dir/bin/edge-node" --config "$dir/config.example.yaml" --http-addr "127.0.0.1:$port" \
    --ort-lib "$dir/lib/libonnxruntime.so.1" --data-dir "$work/data" --model-repository "$work/models" \
    --cloud-disabled --log-format json >"$work/node.log" 2>&1 &
  pid=$!
  wait_ready "$port" "$pid" "$work/node.log"
  infer_silero "$port" "$work/node.log"
  echo "dist-test: $(basename "$archive"): ok on glibc 2.31" >&2
}

# The floor check can fail: a program linked against this host's glibc
# (2.36 on Debian 12) needs GLIBC_2.34 for __libc_start_main.
if [ "$(uname -m)" = x86_64 ] && command -v gcc >/dev/null; then
  probe=$(mktemp)
  printf 'int main(void) { return 0; }\n' | gcc -x c - -o "$probe"
  if "$root/scripts/glibc-floor.sh" "$glibc_max" "$probe" 2>/dev/null; then
    rm -f "$probe"; echo "dist-test: glibc-floor.sh accepted a program linked against the host's glibc" >&2; exit 1
  fi
  rm -f "$probe"
fi

for a in "${archives[@]}"; do ( test_archive "$a" ); done
