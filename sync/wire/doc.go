// Package wire is the cloud link's wire protocol (docs/protocol.md): topic
// names under a configurable root, the JSON payloads (desired state, status,
// presence, events, signed manifests), raw chunk payloads, the limits on every
// size, and strict decoders for all of them.
//
// Every decoder of outside input returns a *RejectError (kind and reason) for
// a message that must be dropped; Rejecter counts those in a Prometheus metric
// and logs them rate-limited. Nothing in this package panics on any input.
package wire
