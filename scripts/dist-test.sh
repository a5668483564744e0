#!/usr/bin/env bash
# dist-test.sh proves the linux/arm64 release archive works, not just that it
# builds: under qemu-user (Debian's qemu-user-static, arm64 libc and libstdc++
# from the cross packages), it runs `edge-node --version`, then serves the
# silero_vad sample model with the archive's own libonnxruntime.so.1 and
# sample config, and runs one KServe v2 inference against it.
# Usage: scripts/dist-test.sh [archive]   (default: the newest dist/*linux-arm64.tar.gz)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${EDGE_CACHE_DIR:-$root/.cache}
archive=${1:-$(ls -t "$root"/dist/edge-node-*-linux-arm64.tar.gz 2>/dev/null | head -1)}
[ -n "$archive" ] && [ -f "$archive" ] || { echo "dist-test: no arm64 archive: run make dist" >&2; exit 1; }
qemu=$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)
[ -n "$qemu" ] || { echo "dist-test: qemu-aarch64-static not found (apt-get install qemu-user-static)" >&2; exit 1; }
sysroot=${QEMU_LD_PREFIX:-/usr/aarch64-linux-gnu}
[ -e "$sysroot/lib/ld-linux-aarch64.so.1" ] || { echo "dist-test: no arm64 loader in $sysroot (apt-get install libc6-dev-arm64-cross)" >&2; exit 1; }
model=$cache/models/silero_vad/1/model.onnx
[ -f "$model" ] || { echo "dist-test: $model missing: run make setup" >&2; exit 1; }

work=$(mktemp -d)
pid=
cleanup() {
  local rc=$?
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
tar -xzf "$archive" -C "$work"
dir=$(echo "$work"/edge-node-*)
for f in LICENSE THIRD_PARTY_NOTICES systemd/edge-node.service systemd/edge-node.sysusers; do
  [ -s "$dir/$f" ] || { echo "dist-test: the archive lacks $f" >&2; exit 1; }
done
grep -q '^ONNX Runtime ' "$dir/THIRD_PARTY_NOTICES" || { echo "dist-test: THIRD_PARTY_NOTICES has no ONNX Runtime entry" >&2; exit 1; }
run() { "$qemu" -L "$sysroot" "$@"; }

echo "dist-test: $(basename "$archive") under $(basename "$qemu")" >&2
ver=$(run "$dir/bin/edge-node" --version)
echo "dist-test: $ver" >&2
case $ver in "edge-node "*) ;; *) echo "dist-test: unexpected --version output: $ver" >&2; exit 1 ;; esac

mkdir -p "$work/models/silero_vad/1"
cp "$model" "$work/models/silero_vad/1/model.onnx"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# qemu itself is the background process (not a shell function's subshell), so
# that the cleanup's kill reaches the node; no cloud link: a test must not
# take the embedded broker's port 1883 on the machine.
"$qemu" -L "$sysroot" "$dir/bin/edge-node" --config "$dir/config.example.yaml" --http-addr "127.0.0.1:$port" \
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
echo "dist-test: ok" >&2
