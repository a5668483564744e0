// Package node is the edge-node daemon: its configuration, its lifecycle
// (New → Run(ctx) → Close), and its REST surface — the KServe Open Inference
// Protocol v2 endpoints, the admin API, health, and Prometheus metrics.
//
// Start-up order (New): metrics registry → pinned buffer pool → ONNX Runtime
// environment → model store → models loaded into the router → HTTP listener.
// Readiness turns true only after every Active model is loaded. Shutdown
// (Close) runs in reverse: stop intake, drain in-flight requests (bounded by
// Config.DrainTimeout), close sessions, close the store, free the pool.
package node
