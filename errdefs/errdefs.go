// Package errdefs is the node's one family of sentinel errors and the one
// place that maps them to protocol status codes (containerd's errdefs shape).
//
// Packages wrap these sentinels, directly or through a sentinel of their own
// made with Sentinel, and every frontend (the KServe v2 REST layer, the
// admin API, gRPC servers) maps the result with HTTPStatus or GRPCCode, so a
// single errors.Is works across packages:
//
//	return fmt.Errorf("model %s version %s: %w", m, v, errdefs.ErrNotFound)
//
// models and inference re-export the sentinels under the names their callers
// already use (models.ErrNotFound is errdefs.ErrNotFound, the same value);
// sentinels with a narrower meaning, such as models.ErrInUse, are distinct
// values made with Sentinel that also match their class.
//
// This package imports only the standard library and grpc's codes.
package errdefs

import (
	"context"
	"errors"
	"net/http"

	"google.golang.org/grpc/codes"
)

// Classes: what went wrong, from the caller's point of view. Each maps to
// one HTTP status and one gRPC code (the table in HTTPStatus).
var (
	// ErrInvalidArgument: the request is malformed or does not fit (a bad
	// name, version, digest, manifest, config; a tensor of the wrong
	// dtype, shape or size). Retrying it unchanged will not help.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotFound: no such model, version, blob, chunk or ingest.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: the thing being created exists already (with other
	// content).
	ErrAlreadyExists = errors.New("already exists")
	// ErrFailedPrecondition: the request is well formed but the current
	// state forbids it (a state transition the version state machine does
	// not allow; removing something that is serving).
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrUnavailable: the thing exists but cannot serve now (loading,
	// closing, out of buffers, locked); retrying later may succeed.
	ErrUnavailable = errors.New("unavailable")
	// ErrUnsupported: a feature the model, the protocol frontend or this
	// build does not implement.
	ErrUnsupported = errors.New("unsupported")
	// ErrInternal: a failure inside the node that the caller cannot fix
	// (ONNX Runtime failing a run, for instance).
	ErrInternal = errors.New("internal error")
)

// Shared sentinels with a meaning (and a status) of their own.
var (
	// ErrChecksumMismatch: content does not hash to the sha256 it claims.
	ErrChecksumMismatch = errors.New("checksum mismatch")
	// ErrSignatureInvalid: a manifest is unsigned, signed by an unknown
	// key, or its signature does not verify.
	ErrSignatureInvalid = errors.New("signature invalid")
	// ErrDiskFull: the file system ran out of space (ENOSPC, EDQUOT).
	ErrDiskFull = errors.New("disk full")
	// ErrLocked: another process holds a file lock (the catalog's); it is
	// also ErrUnavailable.
	ErrLocked = Sentinel(ErrUnavailable, "locked by another process")
)

// Sentinel returns a new sentinel error with message msg that is also class
// under errors.Is, for a package's own sentinels with a narrower meaning:
//
//	ErrInUse = errdefs.Sentinel(errdefs.ErrFailedPrecondition, "in use")
//
// errors.Is(err, ErrInUse) tells it apart from other failed preconditions,
// and HTTPStatus and GRPCCode map it as its class.
func Sentinel(class error, msg string) error {
	return &sentinel{msg: msg, class: class}
}

type sentinel struct {
	msg   string
	class error
}

func (e *sentinel) Error() string { return e.msg }
func (e *sentinel) Unwrap() error { return e.class }

// mapping is the table HTTPStatus and GRPCCode read; the first entry err
// matches wins, so where an error wraps several sentinels the more specific
// (ErrChecksumMismatch before ErrInvalidArgument, a context error before
// ErrUnavailable) decides.
var mapping = []struct {
	err    error
	status int
	code   codes.Code
}{
	{ErrNotFound, http.StatusNotFound, codes.NotFound},
	{ErrAlreadyExists, http.StatusConflict, codes.AlreadyExists},
	{ErrFailedPrecondition, http.StatusConflict, codes.FailedPrecondition},
	{ErrChecksumMismatch, http.StatusUnprocessableEntity, codes.DataLoss},
	{context.Canceled, http.StatusServiceUnavailable, codes.Canceled},
	{context.DeadlineExceeded, http.StatusServiceUnavailable, codes.DeadlineExceeded},
	{ErrUnavailable, http.StatusServiceUnavailable, codes.Unavailable},
	{ErrUnsupported, http.StatusNotImplemented, codes.Unimplemented},
	{ErrInvalidArgument, http.StatusBadRequest, codes.InvalidArgument},
	{ErrSignatureInvalid, http.StatusBadRequest, codes.InvalidArgument},
	{ErrDiskFull, http.StatusInsufficientStorage, codes.ResourceExhausted},
	{ErrInternal, http.StatusInternalServerError, codes.Internal},
}

// HTTPStatus maps err to the HTTP status a frontend answers with:
//
//	ErrNotFound                          404
//	ErrAlreadyExists                     409
//	ErrFailedPrecondition                409 (invalid state transition, in use)
//	ErrChecksumMismatch                  422
//	context.Canceled, DeadlineExceeded   503
//	ErrUnavailable (and ErrLocked)       503
//	ErrUnsupported                       501
//	ErrInvalidArgument                   400
//	ErrSignatureInvalid                  400
//	ErrDiskFull                          507
//	*http.MaxBytesError                  413 (a body over the limit)
//	ErrInternal, anything else           500
//
// nil is 200.
func HTTPStatus(err error) int {
	if err == nil {
		return http.StatusOK
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return http.StatusRequestEntityTooLarge
	}
	for _, m := range mapping {
		if errors.Is(err, m.err) {
			return m.status
		}
	}
	return http.StatusInternalServerError
}

// GRPCCode maps err to the gRPC status code a gRPC frontend answers with,
// from the same table as HTTPStatus: NotFound, AlreadyExists,
// FailedPrecondition, DataLoss (checksum mismatch), Canceled,
// DeadlineExceeded, Unavailable, Unimplemented, InvalidArgument (also an
// invalid signature), ResourceExhausted (disk full, a body over the limit),
// Internal; anything else is Unknown. nil is OK.
func GRPCCode(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return codes.ResourceExhausted
	}
	for _, m := range mapping {
		if errors.Is(err, m.err) {
			return m.code
		}
	}
	return codes.Unknown
}
