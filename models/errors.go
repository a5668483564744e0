package models

import "github.com/edgeai/edge-node/errdefs"

// Sentinel errors. Every error the store returns wraps at most one of these
// (besides context errors and I/O errors). They are the errdefs family under
// the store's names: ErrNotFound is errdefs.ErrNotFound (and so also
// inference.ErrNotFound), and ErrInvalidTransition, ErrInUse and ErrClosed
// are the store's own sentinels of an errdefs class. The HTTP layer maps
// them with errdefs.HTTPStatus:
//
//	errors.Is(err, models.ErrNotFound)          → 404
//	errors.Is(err, models.ErrExists)            → 409
//	errors.Is(err, models.ErrInvalidTransition) → 409
//	errors.Is(err, models.ErrInUse)             → 409
//	errors.Is(err, models.ErrInvalidArgument)   → 400
//	errors.Is(err, models.ErrSignatureInvalid)  → 400 (and the version is Failed)
//	errors.Is(err, models.ErrChecksumMismatch)  → 422 (and the blob is removed)
//	errors.Is(err, models.ErrDiskFull)          → 507
//	errors.Is(err, models.ErrLocked)            → 503 (another process holds the catalog)
//	errors.Is(err, models.ErrClosed)            → 503 (the node is shutting down)
var (
	// ErrNotFound: no such model, version, blob, chunk or ingest.
	ErrNotFound = errdefs.ErrNotFound
	// ErrExists: the model version (or blob) already exists with other content.
	ErrExists = errdefs.ErrAlreadyExists
	// ErrInvalidTransition: the version state machine forbids the move; the
	// wrapping error names both states. It is an errdefs.ErrFailedPrecondition.
	ErrInvalidTransition = errdefs.Sentinel(errdefs.ErrFailedPrecondition, "invalid state transition")
	// ErrInUse: the request would remove something that is serving (the
	// Active version, a Canary, a version being loaded). It is an
	// errdefs.ErrFailedPrecondition.
	ErrInUse = errdefs.Sentinel(errdefs.ErrFailedPrecondition, "in use")
	// ErrInvalidArgument: a malformed name, version, digest, manifest or
	// config.
	ErrInvalidArgument = errdefs.ErrInvalidArgument
	// ErrChecksumMismatch: content does not hash to the sha256 it claims.
	ErrChecksumMismatch = errdefs.ErrChecksumMismatch
	// ErrSignatureInvalid: a manifest is unsigned, signed by an unknown key,
	// or its signature does not verify.
	ErrSignatureInvalid = errdefs.ErrSignatureInvalid
	// ErrDiskFull: the file system ran out of space (ENOSPC, EDQUOT) while
	// writing a blob.
	ErrDiskFull = errdefs.ErrDiskFull
	// ErrLocked: another process holds the catalog's file lock; returned
	// after the open timeout instead of blocking for ever.
	ErrLocked = errdefs.ErrLocked
	// ErrClosed: the store has been closed. It is an errdefs.ErrUnavailable.
	ErrClosed = errdefs.Sentinel(errdefs.ErrUnavailable, "store closed")
)
