// Package node is the edge inference daemon. This part of it serves the
// KServe Open Inference Protocol v2 over HTTP (with Triton's binary tensor
// data extension and an optional model repository index), health and
// readiness, and Prometheus metrics for every request.
//
// The HTTP layer depends on the Backend interface defined here, not on
// package inference's Router, so that it can be wired to anything that hands
// out inference.Model values. Request tensors are decoded straight into
// buffers from a request-scoped inference.Allocator (pinned host memory on
// the zero-copy path), and binary outputs are written from the output
// tensors' memory straight to the connection.
//
// This package must not import onnxruntime_go and has no cgo.
package node
