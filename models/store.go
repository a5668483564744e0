package models

import (
	"context"
	"time"
)

// Store is the node's model store: content-addressed blobs plus the bbolt
// catalog, seen as one thing. models/store implements it; the conformance
// suite in models/testsuite checks any implementation. All methods are safe
// for concurrent use.
type Store interface {
	// Models lists every model with its versions (for the admin API).
	Models(ctx context.Context) ([]ModelInfo, error)
	// Model returns one model with its versions.
	Model(ctx context.Context, name string) (ModelInfo, error)
	// Version returns one version.
	Version(ctx context.Context, model, version string) (VersionInfo, error)

	// Import copies local files into the store and records the version as
	// Ready (it was hashed while being copied). Importing the same content
	// again is a no-op; the same version with other content is ErrExists.
	Import(ctx context.Context, req ImportRequest) (VersionInfo, error)
	// Announce records a signed manifest from the cloud as Announced, or as
	// Failed(SignatureInvalid) when it does not verify (the error then wraps
	// ErrSignatureInvalid). A forged manifest never changes an existing
	// version.
	Announce(ctx context.Context, signed []byte) (VersionInfo, error)
	// Transition moves a version to another state in one catalog
	// transaction; illegal moves wrap ErrInvalidTransition.
	Transition(ctx context.Context, model, version string, to State, opts TransitionOptions) (VersionInfo, error)
	// Fail moves a version to Failed(reason). If it was Active, Previous
	// becomes Active in the same transaction.
	Fail(ctx context.Context, model, version string, reason Reason, detail string) (VersionInfo, error)
	// Activate makes a version Active in one call: a Ready (or Retired,
	// Failed-then-verified) version is materialised and driven through
	// Loading → Warming → Active with loader doing the work between;
	// a Warming/Canary/Shadow version, or a Retired one when loader is nil
	// (still loaded), moves to Active directly. The old Active becomes
	// Retired and Previous. A loader error leaves the old Active serving and
	// the version Failed(LoadError or WarmupFailed).
	Activate(ctx context.Context, model, version string, loader Loader) (VersionInfo, error)
	// Rollback makes the model's Previous version Active again.
	Rollback(ctx context.Context, model string, opts RollbackOptions) (VersionInfo, error)
	// Delete removes a version's record (its blobs go at the next GC).
	// Refused (ErrInUse) for a serving version.
	Delete(ctx context.Context, model, version string) error
	// Retry moves a Failed version back through Verifying: Ready if its
	// blobs are all present and verify, Downloading if some are missing.
	Retry(ctx context.Context, model, version string) (VersionInfo, error)
	// SetOverride records (o non-nil) or clears (nil) the local operator's
	// override of a model's desired state, in one catalog transaction (the
	// model record is created if needed).
	SetOverride(ctx context.Context, model string, o *Override) error

	// Materialize returns a folder that holds the version's files under
	// their manifest paths (hard links to the blobs), ready for ONNX
	// Runtime: model.onnx with its external-data files side by side.
	Materialize(ctx context.Context, model, version string) (string, error)
	// BlobPath returns the on-disk path of a stored blob (read only).
	BlobPath(ctx context.Context, digest string) (string, error)

	// Boot checks the store after a restart (see BootOptions on the
	// implementation) and returns what to serve before any network.
	Boot(ctx context.Context) (BootReport, error)
	// GC removes unreferenced blobs, stale ingests and old versions.
	GC(ctx context.Context) (GCStats, error)

	// Reports returns up to limit pending outbox reports, oldest first;
	// AckReports removes those with Seq ≤ upTo.
	Reports(ctx context.Context, limit int) ([]Report, error)
	AckReports(ctx context.Context, upTo uint64) error

	// Close releases the catalog; it is idempotent.
	Close() error
}

// ChunkStore is what the cloud link needs to fetch a version as
// content-defined chunks: find chunks it already has, assemble blobs from
// chunks in any order (resumable across restarts), then verify the version.
type ChunkStore interface {
	// HaveChunks returns, for each of the given chunk sha256s that some
	// stored blob contains, where it is. Unknown hashes are absent.
	HaveChunks(ctx context.Context, chunks []string) (map[string]ChunkLocation, error)
	// ReadChunk reads a chunk from a stored blob and verifies its hash.
	ReadChunk(ctx context.Context, loc ChunkLocation) ([]byte, error)
	// OpenIngest starts or resumes assembling the blob described by file.
	// If the blob is already stored, it returns an ingest whose Missing is
	// empty and whose Commit is a no-op.
	OpenIngest(ctx context.Context, file FileRef) (ChunkIngest, error)
	// VerifyVersion moves a Downloading version through Verifying to Ready
	// (or to Failed(ChecksumMismatch), removing the bad blob, or back to
	// Downloading if a blob is still missing).
	VerifyVersion(ctx context.Context, model, version string) (VersionInfo, error)
}

// ChunkIngest is one blob being assembled from chunks. Chunks may arrive in
// any order and more than once; each is verified against its sha256 before
// it is written, and the verified ranges are recorded in the catalog so a
// restart resumes where it stopped.
type ChunkIngest interface {
	// WriteChunk verifies sha256(data) == chunkSHA256 and writes data at
	// offset. The range is durable (file fsync'd, catalog updated) when it
	// returns. A chunk already recorded is skipped.
	WriteChunk(ctx context.Context, offset int64, data []byte, chunkSHA256 string) error
	// Missing returns the byte ranges not yet written and verified.
	Missing() []Range
	// Commit verifies the whole blob's sha256 and size and moves it into
	// the store; a mismatch removes the ingest and wraps
	// ErrChecksumMismatch.
	Commit(ctx context.Context) error
	// Abort removes the partial blob and its record.
	Abort(ctx context.Context) error
	// Close releases the file; the ingest stays resumable.
	Close() error
}

// Range is a half-open byte range [Start, End).
type Range struct {
	Start int64 `json:"start"`
	End   int64 `json:"end"`
}

// ChunkLocation says where a chunk lives: bytes [Offset, Offset+Size) of
// the stored blob Blob.
type ChunkLocation struct {
	Chunk  string `json:"chunk"`
	Blob   string `json:"blob"`
	Offset int64  `json:"offset"`
	Size   int64  `json:"size"`
}

// Loader is what the inference engine does to bring a version up; Activate
// calls it between state transitions. dir is the materialised folder.
type Loader interface {
	// Load creates a session (state Loading). An error fails the version
	// with ReasonLoadError.
	Load(ctx context.Context, v VersionInfo, dir string) error
	// Warmup runs warm-up requests (state Warming). An error fails the
	// version with ReasonWarmupFailed; the result is recorded either way.
	Warmup(ctx context.Context, v VersionInfo) (WarmupResult, error)
}

// Committer is a Loader that makes the store's final transaction and what
// its caller does next one step for the caller's readers. When the Loader
// given to Activate, Rollback or Stage is a Committer, the store runs the
// transaction that records the version brought up through Commit, which
// returns commit's result, or an error of what it did after it. The
// serving owner routes the version there, under the lock its readers take,
// so that nobody sees the store call a version Active before the router
// serves it.
type Committer interface {
	Commit(commit func() (VersionInfo, error)) (VersionInfo, error)
}

// ImportRequest names local files to import as one model version.
type ImportRequest struct {
	Model, Version string
	// ModelFile is the .onnx graph; it is stored under the manifest path
	// "model.onnx". Empty for a version with no graph of its own (an
	// ensemble), which then needs a Config.
	ModelFile string
	// ExtraFiles are ONNX external-data files, stored under their base
	// names beside model.onnx (ONNX resolves external data relative to the
	// model file).
	ExtraFiles []string
	// Config is the model's config.yaml bytes, if any.
	Config []byte
}

// TransitionOptions carries what a transition records besides the state.
type TransitionOptions struct {
	Reason   Reason        // required when moving to Failed
	Detail   string        // free text (an error message)
	Provider string        // execution provider the version runs on
	Warmup   *WarmupResult // warm-up outcome
}

// RollbackOptions controls Rollback.
type RollbackOptions struct {
	// FailReason, if set, marks the demoted Active version Failed with this
	// reason (e.g. HealthRegression) instead of Retired.
	FailReason Reason
	Detail     string
	// Loader reloads Previous if the engine no longer has it loaded; nil
	// means it is still loaded (the instant rollback).
	Loader Loader
}

// WarmupResult is the outcome of a version's warm-up.
type WarmupResult struct {
	Provider string        `json:"provider"`
	Cases    int           `json:"cases"`
	Passed   int           `json:"passed"`
	Duration time.Duration `json:"duration_ns"`
	Error    string        `json:"error,omitempty"`
}

// TransferStats says where the bytes of one completed transfer came from.
type TransferStats struct {
	BytesTotal int64 `json:"bytes_total"`
	// From the broker, copied from blobs already stored (shared chunks),
	// and written by an earlier, interrupted attempt.
	BytesNetwork  int64 `json:"bytes_network"`
	BytesLocal    int64 `json:"bytes_local"`
	BytesResumed  int64 `json:"bytes_resumed"`
	ChunksNetwork int   `json:"chunks_network"`
	ChunksLocal   int   `json:"chunks_local"`
	ChunksResumed int   `json:"chunks_resumed"`
	// UniqueMissing is how many distinct chunks had to come from the
	// network; Duplicates counts chunk messages received again after being
	// written; Resubscribes counts window re-subscriptions after a stall.
	UniqueMissing int `json:"unique_missing"`
	Duplicates    int `json:"duplicates"`
	Resubscribes  int `json:"resubscribes"`
}

// StateChange is one entry of a version's history.
type StateChange struct {
	From   State     `json:"from,omitempty"`
	To     State     `json:"to"`
	Reason Reason    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// VersionInfo is a version as the catalog records it.
type VersionInfo struct {
	Model   string `json:"model"`
	Version string `json:"version"`
	State   State  `json:"state"`
	// Reason and Detail explain the last failure (Reason set only while
	// Failed; Detail kept for the last transition that gave one).
	Reason Reason `json:"reason,omitempty"`
	Detail string `json:"detail,omitempty"`
	// Source is "import" or "cloud".
	Source   string   `json:"source"`
	Manifest Manifest `json:"manifest"`
	// Signed is the signed manifest as received (cloud versions only).
	Signed   []byte        `json:"signed,omitempty"`
	Provider string        `json:"provider,omitempty"`
	Warmup   *WarmupResult `json:"warmup,omitempty"`
	// Transfer says where the bytes of a cloud version came from (its
	// last completed transfer).
	Transfer *TransferStats `json:"transfer,omitempty"`
	Created  time.Time      `json:"created"`
	Updated  time.Time      `json:"updated"`
	// History holds the most recent state changes, oldest first (capped).
	History []StateChange `json:"history,omitempty"`
}

// ModelInfo is a model with its version pointers.
type ModelInfo struct {
	Name     string `json:"name"`
	Active   string `json:"active,omitempty"`
	Canary   string `json:"canary,omitempty"`
	Previous string `json:"previous,omitempty"`
	// Override is the local operator's decision that holds the model on a
	// version against desired state, if any.
	Override *Override     `json:"override,omitempty"`
	Versions []VersionInfo `json:"versions"`
}

// Override is a local operator's decision about one model — an admin
// activate or rollback — that takes precedence over desired state from
// every source until one of them accepts a newer generation that names the
// model (the precedence table in docs/architecture.md).
type Override struct {
	Version string `json:"version"`
	// Action is what the operator did: "activate", "rollback", or through
	// Triton's repository control "load" or "unload" (Version "": the
	// model is held unloaded).
	Action string `json:"action"`
	// Generations are the desired-state generations accepted per source
	// (as in Store.DesiredGenerations) when the override was made: a
	// source whose generation grows past its entry, naming the model,
	// supersedes the override.
	Generations map[string]uint64 `json:"generations,omitempty"`
	At          time.Time         `json:"at"`
}

// SupersededBy reports whether a desired state from source at generation
// gen, naming the model, ends the override.
func (o *Override) SupersededBy(source string, gen uint64) bool {
	return gen > o.Generations[source]
}

// Report is one outbox entry for the cloud: a state change, or a rollout
// decision (Event set), written in the same transaction as the change
// itself.
type Report struct {
	Seq     uint64    `json:"seq"`
	At      time.Time `json:"at"`
	Model   string    `json:"model"`
	Version string    `json:"version"`
	From    State     `json:"from,omitempty"`
	To      State     `json:"to"`
	Reason  Reason    `json:"reason,omitempty"`
	Detail  string    `json:"detail,omitempty"`
	// Event is a rollout decision's event (EventStarted, EventPromoted,
	// …); empty for a plain state change. To is then the version's state
	// after the decision, Detail the decision's reason.
	Event   string             `json:"event,omitempty"`
	Phase   RolloutPhase       `json:"phase,omitempty"`
	Figures map[string]float64 `json:"figures,omitempty"`
}

// Serving is one version the node must serve, with its files' folder.
type Serving struct {
	Model, Version string
	State          State
	Dir            string
	Info           VersionInfo
}

// BootReport says what Boot found and did.
type BootReport struct {
	// Serve lists every Active version, materialised: the node loads these
	// before it connects to anything.
	Serve []Serving
	// Failed lists versions the check moved to Failed.
	Failed []VersionInfo
	// RolledBack lists models whose Active failed the check and whose
	// Previous became Active.
	RolledBack []string
	// Checked is how many blobs were checked; Rehashed how many were fully
	// re-hashed.
	Checked, Rehashed int
}

// GCStats says what GC removed.
type GCStats struct {
	Versions     int
	Blobs        int
	BlobBytes    int64
	Ingests      int
	Materialised int
}
