#!/usr/bin/env bash
# generate.sh regenerates the committed protobuf code (make generate):
# the Triton gRPC service in node/kserve/tritongrpc/inferencepb, with
# Debian's protoc (protobuf-compiler) and protoc-gen-go / protoc-gen-go-grpc
# at the versions go.mod's tool directives pin.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
command -v protoc >/dev/null || { echo "generate.sh: protoc not found: apt-get install -y protobuf-compiler" >&2; exit 1; }
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
$GO build -o "$bin/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
$GO build -o "$bin/protoc-gen-go-grpc" google.golang.org/grpc/cmd/protoc-gen-go-grpc
dir=node/kserve/tritongrpc/inferencepb
PATH="$bin:$PATH" protoc -I "$dir" \
  --go_out="$dir" --go_opt=paths=source_relative \
  --go-grpc_out="$dir" --go-grpc_opt=paths=source_relative \
  "$dir"/model_config.proto "$dir"/grpc_service.proto
echo "generated $dir"
