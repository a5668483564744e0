// Package kserve is the node's inference frontend over HTTP: the KServe Open
// Inference Protocol v2 REST API (the protocol Triton, KServe, OpenVINO
// Model Server and MLServer speak) with Triton's binary tensor data
// extension and the model repository index, plus its Prometheus metrics and
// optional pprof. NewHandler returns an http.Handler; the daemon owns the
// http.Server, its timeouts and its shutdown.
//
// The handler depends only on the small interfaces it declares, Backend
// (Acquire, Ready) and optionally ModelIndexer (Index), on package
// inference's tensor types and on errdefs, whose HTTPStatus maps every error
// to its status. It imports nothing from the daemon (node), the model store
// (models) or the cloud link (sync); the serving owner implements Backend.
//
// Hot-path rules:
//   - Request tensors are decoded straight into buffers from a
//     request-scoped inference.Allocator (Options.NewAllocator: pinned host
//     memory on the zero-copy path, which ONNX Runtime reads in place); the
//     binary extension's sections are read from the body into those buffers
//     with no payload-sized intermediate copy, and the body is never read
//     whole.
//   - Binary outputs are written from the output tensors' memory straight to
//     the connection; the JSON header is appended into a pooled buffer.
//   - Sizes are checked against the datatype, shape and body limit before
//     anything is allocated; every rejection is counted by reason and logged,
//     rate-limited.
//
// This package must not import onnxruntime_go (it reaches ONNX Runtime only
// through package inference) and has no cgo; its one use of unsafe is in
// unsafe.go.
package kserve
