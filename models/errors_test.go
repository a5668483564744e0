package models

import (
	"errors"
	"fmt"
	"testing"

	"github.com/edgeai/edge-node/errdefs"
)

// The table in errors.go's doc holds: each sentinel, wrapped as the store
// wraps it, maps to its documented status, and the store's own sentinels
// stay apart from each other.
func TestSentinelStatuses(t *testing.T) {
	for _, c := range []struct {
		err    error
		status int
	}{
		{ErrNotFound, 404},
		{ErrExists, 409},
		{ErrInvalidTransition, 409},
		{ErrInUse, 409},
		{ErrInvalidArgument, 400},
		{ErrSignatureInvalid, 400},
		{ErrChecksumMismatch, 422},
		{ErrDiskFull, 507},
		{ErrLocked, 503},
		{ErrClosed, 503},
	} {
		err := fmt.Errorf("model m version 1: %w", c.err)
		if got := errdefs.HTTPStatus(err); got != c.status {
			t.Errorf("HTTPStatus(%q) = %d, want %d", err, got, c.status)
		}
	}
	if errors.Is(ErrInUse, ErrInvalidTransition) || errors.Is(ErrInvalidTransition, ErrInUse) {
		t.Error("ErrInUse and ErrInvalidTransition match each other")
	}
	if !errors.Is(ErrInUse, errdefs.ErrFailedPrecondition) || !errors.Is(ErrClosed, errdefs.ErrUnavailable) {
		t.Error("a store sentinel does not match its errdefs class")
	}
}
