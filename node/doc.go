// Package node is the edge-node daemon: its configuration, its lifecycle
// (New → Run(ctx) → Close), and its REST surface — the KServe Open Inference
// Protocol v2 endpoints (with Triton's binary tensor data extension and the
// model repository index), the admin API, health, and Prometheus metrics.
//
// Start-up order (New): metrics registry → pinned buffer pool → ONNX Runtime
// environment → model store → models loaded into the router → HTTP listener.
// Readiness turns true only after every Active model is loaded. Shutdown
// (Run's return, then Close) runs in reverse: stop intake, drain in-flight
// requests (bounded by Config.DrainTimeout), close sessions, close ONNX
// Runtime, close the store, free the pinned pool.
//
// The HTTP layer depends on the Backend interface defined here, not on
// package inference's Router. Request tensors are decoded straight into
// buffers from a request-scoped inference.Allocator (pinned host memory on
// the zero-copy path), and binary outputs are written from the output
// tensors' memory straight to the connection.
//
// This package must not import onnxruntime_go and has no cgo.
package node
