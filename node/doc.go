// Package node is the edge-node daemon's wiring: its configuration
// (Config, the YAML file, validation), its lifecycle (New → Run(ctx) →
// Close) and the start and stop order of the parts, which live in its
// subpackages:
//
//   - node/serving: the one owner of what is loaded and routed;
//   - node/kserve: the KServe v2 / Triton REST frontend;
//   - node/admin: the admin API;
//   - node/reconcile: desired state from MQTT and KubeEdge through one
//     intake, the node's side of the cloud link, the KubeEdge applier.
//
// Start-up order (New): metrics registry → pinned buffer pool → ONNX Runtime
// environment → model store → serving owner Boot (every Active version
// loaded, the model repository imported) → HTTP listener → cloud link and
// reconciler → KubeEdge bridges. Readiness turns true only after every
// Active model is loaded, and nothing that needs the network runs before
// that. Shutdown (Run's return, then Close) runs in reverse: stop intake,
// drain in-flight requests (bounded by Config.DrainTimeout), stop the
// bridges, the reconciler and the cloud link, abort rollouts, close
// sessions, close ONNX Runtime, close the store, free the pinned pool.
//
// Request tensors are decoded straight into buffers from a request-scoped
// inference.Allocator backed by the pinned pool (pinned host memory on the
// zero-copy path). This package must not import onnxruntime_go and has no
// cgo; its subpackages never import it back.
package node
