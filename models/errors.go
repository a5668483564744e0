package models

import "errors"

// Sentinel errors. Every error the store returns wraps at most one of these
// (besides context errors and I/O errors), so callers such as the HTTP layer
// can map them with errors.Is:
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
var (
	// ErrNotFound: no such model, version, blob, chunk or ingest.
	ErrNotFound = errors.New("not found")
	// ErrExists: the model version (or blob) already exists with other content.
	ErrExists = errors.New("already exists")
	// ErrInvalidTransition: the version state machine forbids the move; the
	// wrapping error names both states.
	ErrInvalidTransition = errors.New("invalid state transition")
	// ErrInUse: the request would remove something that is serving (the
	// Active version, a Canary, a version being loaded).
	ErrInUse = errors.New("in use")
	// ErrInvalidArgument: a malformed name, version, digest, manifest or
	// config.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrChecksumMismatch: content does not hash to the sha256 it claims.
	ErrChecksumMismatch = errors.New("checksum mismatch")
	// ErrSignatureInvalid: a manifest is unsigned, signed by an unknown key,
	// or its signature does not verify.
	ErrSignatureInvalid = errors.New("signature invalid")
	// ErrDiskFull: the file system ran out of space (ENOSPC, EDQUOT) while
	// writing a blob.
	ErrDiskFull = errors.New("disk full")
	// ErrLocked: another process holds the catalog's file lock; returned
	// after the open timeout instead of blocking for ever.
	ErrLocked = errors.New("catalog locked by another process")
	// ErrClosed: the store has been closed.
	ErrClosed = errors.New("store closed")
)
