// Package tritongrpc is the node's gRPC inference frontend: Triton's
// inference.GRPCInferenceService (a superset of KServe's grpc_predict_v2)
// over the same consumer-side interfaces as the REST frontend
// (kserve.Backend, ModelIndexer, StatsReader, RepositoryController), so the
// daemon serves both from one serving owner. Health, server and model
// metadata, ModelInfer with raw_input_contents/raw_output_contents (and
// typed contents), the bidirectional ModelStreamInfer, model configuration,
// statistics, the repository index and repository load/unload. Errors go
// through errdefs.GRPCCode; gzip compression is registered.
//
// Memory: a request is unmarshalled by the protobuf codec onto the Go heap
// (bounded by Options.MaxMessageBytes, after decompression); raw input
// bytes are handed to ONNX Runtime as they are (no further copy), typed
// contents are packed once into little-endian bytes. Outputs are allocated
// on the Go heap (inference.HeapAllocator), because a unary response is
// marshalled after the handler returns, when a request-scoped pinned lease
// would already be released; raw_output_contents alias them. With system
// shared memory, inputs are the region's mapping and, when every output goes
// to a region, outputs come from Options.NewAllocator (the node's pinned
// leases) and are copied into their regions before the handler returns.
//
// Like node/kserve it imports nothing of the daemon (node), the store
// (models) or the cloud link (sync).
package tritongrpc
