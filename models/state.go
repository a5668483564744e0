package models

import (
	"fmt"
	"slices"
)

// State is a model version's place in its lifecycle on this node:
//
//	Announced → Downloading → Verifying → Ready → Loading → Warming → (Canary | Shadow) → Active → Retired
//
// and Failed(reason) from any step. The full table of legal moves is
// Transitions; CheckTransition enforces it.
type State string

// The version states.
const (
	// Announced: a (signature-checked) manifest is recorded; no bytes yet.
	Announced State = "Announced"
	// Downloading: blobs are being fetched (chunks) or copied.
	Downloading State = "Downloading"
	// Verifying: all blobs are present; whole-file hashes are being checked.
	Verifying State = "Verifying"
	// Ready: every blob is in the store and verified; the version can be
	// loaded. Local imports enter the catalog here.
	Ready State = "Ready"
	// Loading: the engine is creating a session from the materialised files.
	Loading State = "Loading"
	// Warming: the session is running warm-up (golden) requests.
	Warming State = "Warming"
	// Canary: serving a fraction of traffic beside Active.
	Canary State = "Canary"
	// Shadow: receiving a copy of traffic; its answers are compared, not returned.
	Shadow State = "Shadow"
	// Active: the version that serves the model's traffic. At most one per model.
	Active State = "Active"
	// Retired: was Active (or a candidate) and was replaced; the previous
	// Active version is the instant rollback target.
	Retired State = "Retired"
	// Failed: stopped at some step; Reason says why.
	Failed State = "Failed"
)

// Reason says why a version is Failed.
type Reason string

// Failure reasons.
const (
	ReasonChecksumMismatch Reason = "ChecksumMismatch"
	ReasonSignatureInvalid Reason = "SignatureInvalid"
	ReasonLoadError        Reason = "LoadError"
	ReasonWarmupFailed     Reason = "WarmupFailed"
	ReasonHealthRegression Reason = "HealthRegression"
	ReasonDiskFull         Reason = "DiskFull"
	// ReasonInterrupted: the node restarted while the version was Loading
	// or Warming. Treated as a load failure so that a model that crashes the
	// process cannot put the node into a crash loop; Retry clears it.
	ReasonInterrupted Reason = "Interrupted"
	// ReasonMissingBlob: a blob the version needs is gone from disk.
	ReasonMissingBlob Reason = "MissingBlob"
	// ReasonTransferStalled: the version's transfer made no progress for
	// its whole retry budget (a chunk is never published). A newer
	// desired-state generation or an explicit retry tries again.
	ReasonTransferStalled Reason = "TransferStalled"
	// ReasonInvalidManifest: the signed manifest breaks a rule of the
	// protocol (docs/protocol.md) or cannot be satisfied (its chunks do
	// not make up its files); it never reaches the store as a version.
	ReasonInvalidManifest Reason = "InvalidManifest"
)

// Reasons lists every failure reason (the reasons a stored version may be
// Failed with).
var Reasons = []Reason{
	ReasonChecksumMismatch, ReasonSignatureInvalid, ReasonLoadError, ReasonWarmupFailed,
	ReasonHealthRegression, ReasonDiskFull, ReasonInterrupted, ReasonMissingBlob,
	ReasonTransferStalled, ReasonInvalidManifest,
}

// The node's one status vocabulary. A version the store holds is in one of
// States (Failed with one of Reasons). A desired version the node has not
// recorded (yet) is Pending or Waiting, and a stored version on its way to
// Active carries a progress reason; the reconciler, MQTT status, events,
// the admin API and the KubeEdge reported properties all use these words.
const (
	// Pending: a desired version accepted and not looked at yet.
	Pending State = "Pending"
	// Waiting: a desired version the node cannot work on now; the reason
	// says why (ReasonBrokerUnreachable, ReasonManifestNotPublished,
	// ReasonNoCloudLink, ReasonOverridden).
	Waiting State = "Waiting"
)

// Progress and waiting reasons (never a stored failure reason).
const (
	// ReasonBrokerUnreachable: the version must be fetched and the cloud
	// link is down (never published through the broker while it is up).
	ReasonBrokerUnreachable Reason = "BrokerUnreachable"
	// ReasonManifestNotPublished: no retained signed manifest on its topic.
	ReasonManifestNotPublished Reason = "ManifestNotPublished"
	// ReasonNoCloudLink: the version is not in the store and the node runs
	// without a cloud link, so it cannot be fetched.
	ReasonNoCloudLink Reason = "NoCloudLink"
	// ReasonTransferInterrupted: a transfer stopped before its end (the
	// broker went away, no progress for a while); it resumes from the
	// store, up to the retry budget.
	ReasonTransferInterrupted Reason = "TransferInterrupted"
	// ReasonOutsideFetchWindow: a transfer waits for cloud.fetch_window to
	// open before it asks for more chunks (Downloading; it resumes in the
	// next window from what the store holds).
	ReasonOutsideFetchWindow Reason = "OutsideFetchWindow"
	// ReasonRollingOut: an on-device rollout of the version is running.
	ReasonRollingOut Reason = "RollingOut"
	// ReasonHeld: the rollout's candidate failed its gates with
	// on_failure: hold; an operator activates or aborts it.
	ReasonHeld Reason = "Held"
	// ReasonOverridden: a local admin action (activate, rollback) holds the
	// model on another version until a newer desired-state generation names
	// the model (docs/architecture.md, precedence).
	ReasonOverridden Reason = "Overridden"
	// ReasonStoreError: the model store failed; the node tries again.
	ReasonStoreError Reason = "StoreError"
)

// States lists every state in lifecycle order.
var States = []State{Announced, Downloading, Verifying, Ready, Loading, Warming, Canary, Shadow, Active, Retired, Failed}

// Transitions is the table of legal moves. Every state may also move to
// Failed (with a reason); Failed may move back to Downloading or Verifying
// (a retry, e.g. after ChecksumMismatch or DiskFull).
//
// Retired → Active is the instant rollback to a version that is still
// loaded; Retired → Loading reloads one that was unloaded.
var Transitions = map[State][]State{
	Announced:   {Downloading, Verifying},
	Downloading: {Verifying},
	Verifying:   {Ready},
	Ready:       {Loading},
	Loading:     {Warming},
	Warming:     {Canary, Shadow, Active},
	Canary:      {Active, Retired},
	Shadow:      {Canary, Active, Retired},
	Active:      {Retired},
	Retired:     {Loading, Active},
	Failed:      {Downloading, Verifying},
}

// Valid reports whether s is one of the states.
func (s State) Valid() bool { return slices.Contains(States, s) }

// Serving reports whether a version in state s may be answering requests
// (or about to): such versions are never garbage-collected or deleted.
func (s State) Serving() bool {
	switch s {
	case Loading, Warming, Canary, Shadow, Active:
		return true
	}
	return false
}

// HasBlobs reports whether a version in state s must have all its blobs in
// the store (the boot check verifies them).
func (s State) HasBlobs() bool {
	switch s {
	case Ready, Loading, Warming, Canary, Shadow, Active, Retired:
		return true
	}
	return false
}

// Valid reports whether r is one of the reasons.
func (r Reason) Valid() bool { return slices.Contains(Reasons, r) }

// TransitionError is returned for an illegal move; it names both states and
// wraps ErrInvalidTransition.
type TransitionError struct {
	Model, Version string
	From, To       State
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("model %s version %s: %s → %s: %v", e.Model, e.Version, e.From, e.To, ErrInvalidTransition)
}

// Unwrap returns ErrInvalidTransition.
func (e *TransitionError) Unwrap() error { return ErrInvalidTransition }

// CheckTransition returns nil if from → to is legal (with reason, which
// must be set exactly when to is Failed), or an error wrapping
// ErrInvalidTransition (a *TransitionError for a forbidden move) or
// ErrInvalidArgument (an unknown state or a missing/unexpected reason).
func CheckTransition(from, to State, reason Reason) error {
	if !from.Valid() || !to.Valid() {
		return fmt.Errorf("transition %q → %q: unknown state: %w", from, to, ErrInvalidArgument)
	}
	if to == Failed {
		if !reason.Valid() {
			return fmt.Errorf("transition %s → Failed: reason %q: %w", from, reason, ErrInvalidArgument)
		}
		if from == Failed {
			return &TransitionError{From: from, To: to}
		}
		return nil
	}
	if reason != "" {
		return fmt.Errorf("transition %s → %s: reason %q given for a non-failure: %w", from, to, reason, ErrInvalidArgument)
	}
	if slices.Contains(Transitions[from], to) {
		return nil
	}
	return &TransitionError{From: from, To: to}
}
