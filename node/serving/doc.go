// Package serving is the one owner of what the node has loaded and routed.
// Every change to it — activate, rollback, delete, import, a rollout's
// start, staging, promotion, hold, rollback and abort, the boot — is a
// method of Owner; the KServe frontends, the admin API and the reconciler
// are its clients and never touch the store's version pointers or the
// router themselves.
//
// # One lock
//
// Owner.mu serialises every version change. Each is a store transition
// (one bbolt transaction) and the matching router change, made together
// under the lock, so that whenever the lock is free the router's default
// version of every model is the version the store calls Active. A
// rollout's goroutine waits for gate evidence without the lock and takes it
// for each change it makes, first checking that no one ended the rollout
// meanwhile (an abort, an activation), so a verdict reached at the same
// moment as an operator's or the fleet's decision is dropped rather than
// undoing it.
//
// # Precedence
//
// The table is in docs/architecture.md; in short:
//   - A desired state (any source: MQTT, KubeEdge) naming version X aborts
//     any running or held rollout of another version and brings the model
//     to X — immediately, or with X's own rollout strategy (Apply).
//   - A local admin action (Activate, Rollback, StartRollout) is recorded in
//     the store as the model's Override, with the desired-state generations
//     accepted at that moment. It holds against desired state until a
//     source accepts a newer generation that names the model; ClearOverride
//     hands the model back at once. An admin action while a rollout of
//     another version runs is refused (models.ErrInUse, naming the rollout)
//     unless the caller asks to abort it.
//   - An admin rollout that ends without promoting drops its override: the
//     model is back on the version it served, under desired state.
//
// # Change notifications
//
// Subscribe returns a channel that gets a (coalesced) value after each
// change; status reporting, the KubeEdge bridges and the event outbox
// consume it instead of polling.
//
// # Memory
//
// The Previous version stays loaded as the instant rollback target while
// the memory budget allows (budget.go). This package must not import
// onnxruntime_go and has no cgo.
package serving
