package inference

import (
	"errors"
	"fmt"
	"testing"

	"github.com/edgeai/edge-node/errdefs"
)

// This package's sentinels are errdefs', so one errors.Is works across
// packages, and each maps to the status the KServe frontend documents.
func TestSentinelStatuses(t *testing.T) {
	for _, c := range []struct {
		err    error
		class  error
		status int
	}{
		{ErrInvalidArgument, errdefs.ErrInvalidArgument, 400},
		{ErrNotFound, errdefs.ErrNotFound, 404},
		{ErrUnavailable, errdefs.ErrUnavailable, 503},
		{ErrUnsupported, errdefs.ErrUnsupported, 501},
		{ErrRunFailed, errdefs.ErrInternal, 500},
	} {
		err := fmt.Errorf("m/1: %w", c.err)
		if !errors.Is(err, c.class) {
			t.Errorf("%q is not %q", err, c.class)
		}
		if got := errdefs.HTTPStatus(err); got != c.status {
			t.Errorf("HTTPStatus(%q) = %d, want %d", err, got, c.status)
		}
	}
}
