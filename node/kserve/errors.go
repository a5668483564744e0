package kserve

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/edgeai/edge-node/errdefs"
	"github.com/edgeai/edge-node/inference"
)

// Rejection reasons, the "reason" label of the rejected-requests metric. The
// set is fixed so that the label's cardinality is bounded.
const (
	reasonJSON         = "json"         // malformed or unexpected JSON
	reasonHeader       = "header"       // bad Inference-Header-Content-Length
	reasonInput        = "input"        // missing, unknown or duplicate input, bad datatype or shape
	reasonOutput       = "output"       // unknown or duplicate requested output
	reasonData         = "data"         // element values or counts that don't fit datatype and shape
	reasonBinary       = "binary"       // binary section sizes or layout
	reasonTooLarge     = "too_large"    // body over the configured limit
	reasonMethod       = "method"       // a route's wrong HTTP method
	reasonNotFound     = "not_found"    // unknown model or version
	reasonUnavailable  = "unavailable"  // model not ready, buffers exhausted, request cancelled
	reasonUnsupported  = "unsupported"  // a protocol feature we don't implement
	reasonInvalid      = "invalid"      // the model rejected the request
	reasonRunFailed    = "run_failed"   // ONNX Runtime failed running the model
	reasonInternal     = "internal"     // anything else
	reasonUnauthorized = "unauthorized" // repository control without the token
)

// apiError is an error with the HTTP status and rejection reason it maps to.
// Its message is what the client sees in {"error": "..."}.
type apiError struct {
	status int
	reason string
	msg    string
	err    error // the cause, if any; not shown beyond msg
}

func (e *apiError) Error() string { return e.msg }
func (e *apiError) Unwrap() error { return e.err }

// badRequest builds a 400 error.
func badRequest(reason, format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, reason: reason, msg: fmt.Sprintf(format, args...)}
}

// toAPIError maps any error to the status Triton would answer with, by
// the one mapper (errdefs.HTTPStatus): invalid argument 400, not found 404,
// unavailable (or a cancelled request) 503, unsupported 501, body over the
// limit 413, anything else 500. The reason label follows the status.
func toAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	status := errdefs.HTTPStatus(err)
	e := &apiError{status: status, reason: reasonInternal, msg: err.Error(), err: err}
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		e.reason, e.msg = reasonTooLarge, fmt.Sprintf("request body is larger than the limit of %d bytes", mbe.Limit)
	case status == http.StatusNotFound:
		e.reason = reasonNotFound
	case status == http.StatusServiceUnavailable:
		e.reason = reasonUnavailable
	case status == http.StatusNotImplemented:
		e.reason = reasonUnsupported
	case status == http.StatusBadRequest:
		e.reason = reasonInvalid
	case errors.Is(err, inference.ErrRunFailed):
		e.reason = reasonRunFailed
	}
	return e
}
