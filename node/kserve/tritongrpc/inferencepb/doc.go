// Package inferencepb is the generated code of Triton's gRPC inference
// protocol (package inference: GRPCInferenceService and the part of
// ModelConfig the node fills), from the .proto files beside it, which
// follow triton-inference-server/common's grpc_service.proto and
// model_config.proto name for name and field number for field number.
// Regenerate with `make generate` (protoc from Debian's protobuf-compiler,
// protoc-gen-go and protoc-gen-go-grpc pinned by go.mod's tool directives);
// do not edit the .pb.go files.
package inferencepb
