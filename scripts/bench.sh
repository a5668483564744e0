#!/usr/bin/env bash
# bench.sh runs the measurements of docs/performance.md in one go and writes
# everything to ${BENCH_OUT:-bench.txt}. Ratios in performance.md are always
# taken between rows of the same run (the machines are shared and noisy).
#   BENCHTIME   go test -benchtime (default 2s: silero_vad gets thousands of
#               iterations, ppocr_det tens)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${BENCH_OUT:-bench.txt}
t=${BENCHTIME:-2s}
{
  echo "# $(date -u +%FT%TZ) $(uname -m) $(nproc) cores, $(go version | cut -d' ' -f3)"
  echo "## Go benchmarks (-benchtime $t)"
  go test -run '^$' -bench . -benchmem -benchtime "$t" -count=1 -timeout 60m \
    ./node/ ./node/kserve/ ./inference/ ./cgo/pinned/ ./models/
  echo "## Pipelines: resize arms, 5 interleaved rounds; the ocr pipeline per stage"
  for i in 1 2 3 4 5; do go test -run '^$' -bench Resize -benchtime 20x -count=1 ./inference/pipeline/ | grep '^Benchmark'; done
  go test -run '^$' -bench OCRPipeline -benchtime 10x -count=1 ./inference/pipeline/ | grep '^Benchmark'
  echo "## ocr ensemble vs the client-side pipeline over REST vs in process (interleaved rounds)"
  EDGE_OCR_MEASURE=1 go test -count=1 -run 'TestMeasureOCR' -v ./node/ | grep 'ocr_measure_test'
  echo "## Triton frontends: raw vs REST binary vs gRPC vs gRPC shared memory (interleaved rounds)"
  EDGE_MEASURE_FRONTENDS=1 go test -count=1 -run 'TestMeasureFrontends|TestMeasureGRPCServerHeap' -v -timeout 30m ./node/kserve/tritongrpc/ | grep FIGURE
  echo "## Dynamic batching at c=8: raw vs session vs batched (interleaved rounds); version load CPU and warm-up"
  EDGE_MEASURE_BATCHING=1 go test -count=1 -run TestMeasureDynamicBatching -v -timeout 30m ./inference/ | grep FIGURE
  EDGE_MEASURE_LOAD=1 go test -count=1 -run 'TestMeasureLoadMetadata|TestMeasureOptimizedLoad' -v -timeout 30m ./inference/ | grep FIGURE
  echo "## Swaps: p99 during swaps / steady, loading at normal vs low priority (interleaved rounds)"
  EDGE_MEASURE_SWAP=1 go test -count=1 -run TestMeasureSwapP99 -v -timeout 30m ./inference/ | grep FIGURE
  echo "## A spinning worker vs Run on the caller's thread (interleaved rounds; not built)"
  EDGE_MEASURE_SPIN=1 go test -count=1 -run TestMeasureSpinWorker -v -timeout 30m ./inference/ | grep FIGURE
  echo "## Weight transfer: 100 MiB through mosquitto vs mosquitto_pub -f"
  EDGEAI_MEASURE=1 go test -count=1 -run 'MeasureThroughput' -v -timeout 600s ./sync/transfer/ | grep -v '^=== '
} 2>&1 | tee "$out"
