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
  for f in LICENSE THIRD_PARTY_NOTICES systemd/edge-node.service systemd/edge-node.sysusers; do
    [ -s "$dir/$f" ] || { echo "dist-test: the archive lacks $f" >&2; exit 1; }
  done
  grep -q '^ONNX Runtime ' "$dir/THIRD_PARTY_NOTICES" || { echo "dist-test: THIRD_PARTY_NOTICES has no ONNX Runtime entry" >&2; exit 1; }
  "$root/scripts/glibc-floor.sh" "$glibc_max" "$dir"/bin/* "$dir/lib/libonnxruntime.so.1"
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
    if "${run[@]}" --list "$dir/bin/edge-node" | grep '=>' | grep -v "=> $sysroot/"; then
      echo "dist-test: edge-node resolves libraries outside $sysroot" >&2; exit 1
    fi
  fi
  run() { "${run[@]}" "$@"; }

  echo "dist-test: $(basename "$archive") $how" >&2
  ver=$(run "$dir/bin/edge-node" --version)
  echo "dist-test: $ver" >&2
  case $ver in "edge-node "*) ;; *) echo "dist-test: unexpected --version output: $ver" >&2; exit 1 ;; esac

  mkdir -p "$work/models/silero_vad/1"
  cp "$model" "$work/models/silero_vad/1/model.onnx"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  # The runner (qemu or ld.so) itself is the background process (not a shell
  # function's subshell), so that the cleanup's kill reaches the node; no cloud
  # link: a test must not take the embedded broker's port 1883 on the machine.
  "${run[@]}" "$dir/bin/edge-node" --config "$dir/config.example.yaml" --http-addr "127.0.0.1:$port" \
    --ort-lib "$dir/lib/libonnxruntime.so.1" --data-dir "$work/data" --model-repository "$work/models" \
    --cloud-disabled --log-format json >"$work/node.log" 2>&1 &
  pid=$!
  # ONNX Runtime under emulation starts slowly; wait for readiness (or exit).
  for _ in $(seq 1 600); do
    if ! kill -0 "$pid" 2>/dev/null; then echo "dist-test: edge-node exited:" >&2; cat "$work/node.log" >&2; exit 1; fi
    [ "$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$port/v2/health/ready")" = 200 ] && break
    sleep 0.5
  done
  zeros() { printf 0; for ((i = 1; i < $1; i++)); do printf ,0; done; }
  body='{"inputs":[{"name":"input","datatype":"FP32","shape":[1,512],"data":['"$(zeros 512)"']},
   {"name":"sr","datatype":"INT64","shape":[],"data":[16000]},
   {"name":"h","datatype":"FP32","shape":[2,1,64],"data":['"$(zeros 128)"']},
   {"name":"c","datatype":"FP32","shape":[2,1,64],"data":['"$(zeros 128)"']}],"outputs":[{"name":"output"}]}'
  resp=$(curl -s -w '\n%{http_code}' "127.0.0.1:$port/v2/models/silero_vad/infer" -d "$body")
  code=${resp##*$'\n'}; resp=${resp%$'\n'*}
  echo "dist-test: infer -> HTTP $code: $resp" >&2
  [ "$code" = 200 ] && grep -q '"name":"output"' <<<"$resp" || { echo "dist-test: inference failed" >&2; cat "$work/node.log" >&2; exit 1; }
  grep -o '"onnxruntime":"[^"]*"' "$work/node.log" | head -1 >&2 || true
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
