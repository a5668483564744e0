// Package kubeedge makes the node a KubeEdge device: Kubernetes Device
// resources (through EdgeCore) say which model versions the node should run,
// and the node reports what it runs. Two transports carry the same twin
// properties: DMI gRPC (package kubeedge/dmi, KubeEdge v1beta1 mappers) and
// the EventBus MQTT twin topics (package kubeedge/eventbus).
//
// This package holds what both share: the property schema, the decoding of
// desired values, the encoding of reported values, and Twin, which turns
// desired values into a desired state for the node's reconciler (Applier)
// and the node's status into reported values.
//
// # Property schema
//
// KubeEdge twin names and values are limited to [a-zA-Z0-9-_.,:/@#] (names
// 1–128, values 1–512 characters), so no JSON and no weights: a model's
// state is spread over several properties named <model>.<field>. The model
// name is everything before the last '.', so model names containing dots
// work. For a model M:
//
//	M.version     ReadWrite  desired: the version to run ("none" or "": not wanted);
//	                         reported: the Active version, or "none"
//	M.rollout     ReadWrite  desired: "immediate" (default), "canary:P" (P 1–99 percent
//	                         of traffic) or "shadow:P" (P 1–100 percent mirrored);
//	                         reported: the accepted desired value, or "none"
//	M.sha256      ReadWrite  desired (optional): sha256 of the version's model.onnx,
//	                         64 lowercase hex; reported: that of the Active version
//	M.canary      ReadOnly   reported: the Canary version, or "none"
//	M.state       ReadOnly   reported: the desired version's state (Downloading, Ready,
//	                         Canary, Active, Failed, ...), or Rejected when the desired
//	                         values were refused
//	M.reason      ReadOnly   reported: why it is Failed or Rejected (a Reason code), or "none";
//	                         several refused properties: "field:Code,field:Code" in
//	                         field order (e.g. version:InvalidVersion,rollout:InvalidRollout)
//	M.p99_ms      ReadOnly   reported: p99 inference latency of the Active version in
//	                         milliseconds (FLOAT), "0" before any traffic
//	M.error_rate  ReadOnly   reported: fraction of failed requests (0–1, FLOAT),
//	                         "0" before any traffic
//
// A desired value on a ReadOnly property is refused (ReasonReadOnlyProperty).
// Weights never travel in twins: the reconciler fetches a version by the
// node's own transfer; the twin only names it.
//
// # Refusals keep the old state
//
// When a model's desired values are refused (malformed version, value
// outside the alphabet, unknown strategy, a model the Applier does not know),
// the model keeps the desired entry last accepted for it, so a typo in a
// Device resource never stops a model that serves; M.state reports Rejected
// and M.reason the code until the values are fixed.
package kubeedge
