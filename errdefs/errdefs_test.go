package errdefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"
)

func TestMapping(t *testing.T) {
	inUse := Sentinel(ErrFailedPrecondition, "in use")
	runFailed := Sentinel(ErrInternal, "model run failed")
	for _, c := range []struct {
		name   string
		err    error
		status int
		code   codes.Code
	}{
		{"nil", nil, 200, codes.OK},
		{"not found", ErrNotFound, 404, codes.NotFound},
		{"not found wrapped", fmt.Errorf("model m version 1: %w", ErrNotFound), 404, codes.NotFound},
		{"already exists", fmt.Errorf("import m/1: %w", ErrAlreadyExists), 409, codes.AlreadyExists},
		{"failed precondition", ErrFailedPrecondition, 409, codes.FailedPrecondition},
		{"own sentinel maps as its class", fmt.Errorf("delete m/1: %w", inUse), 409, codes.FailedPrecondition},
		{"checksum mismatch", fmt.Errorf("blob: %w", ErrChecksumMismatch), 422, codes.DataLoss},
		{"checksum mismatch beats invalid argument", fmt.Errorf("%w: %w", ErrInvalidArgument, ErrChecksumMismatch), 422, codes.DataLoss},
		{"invalid argument", fmt.Errorf("input x: %w", ErrInvalidArgument), 400, codes.InvalidArgument},
		{"signature invalid", fmt.Errorf("manifest: %w", ErrSignatureInvalid), 400, codes.InvalidArgument},
		{"disk full", fmt.Errorf("ingest: write: %w: %w", ErrDiskFull, io.ErrShortWrite), 507, codes.ResourceExhausted},
		{"unavailable", fmt.Errorf("m/1 loading: %w", ErrUnavailable), 503, codes.Unavailable},
		{"locked", fmt.Errorf("open catalog: %w", ErrLocked), 503, codes.Unavailable},
		{"canceled", context.Canceled, 503, codes.Canceled},
		{"deadline", fmt.Errorf("waiting: %w", context.DeadlineExceeded), 503, codes.DeadlineExceeded},
		{"deadline beats unavailable", fmt.Errorf("waiting for a slot: %w: %w", ErrUnavailable, context.DeadlineExceeded), 503, codes.DeadlineExceeded},
		{"unsupported", ErrUnsupported, 501, codes.Unimplemented},
		{"internal", fmt.Errorf("run: %w", runFailed), 500, codes.Internal},
		{"body too large", fmt.Errorf("reading: %w", &http.MaxBytesError{Limit: 10}), 413, codes.ResourceExhausted},
		{"not found beats unavailable", errors.Join(ErrUnavailable, ErrNotFound), 404, codes.NotFound},
		{"unknown", errors.New("boom"), 500, codes.Unknown},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := HTTPStatus(c.err); got != c.status {
				t.Errorf("HTTPStatus(%v) = %d, want %d", c.err, got, c.status)
			}
			if got := GRPCCode(c.err); got != c.code {
				t.Errorf("GRPCCode(%v) = %v, want %v", c.err, got, c.code)
			}
		})
	}
}

func TestSentinel(t *testing.T) {
	inUse := Sentinel(ErrFailedPrecondition, "in use")
	transition := Sentinel(ErrFailedPrecondition, "invalid state transition")
	err := fmt.Errorf("delete m/1: %w", inUse)
	if !errors.Is(err, inUse) || !errors.Is(err, ErrFailedPrecondition) {
		t.Errorf("%v is not its sentinel and class", err)
	}
	if errors.Is(err, transition) || errors.Is(transition, inUse) {
		t.Error("two sentinels of one class match each other")
	}
	if inUse.Error() != "in use" || err.Error() != "delete m/1: in use" {
		t.Errorf("messages %q, %q", inUse, err)
	}
	if !errors.Is(ErrLocked, ErrUnavailable) {
		t.Error("ErrLocked is not ErrUnavailable")
	}
}
