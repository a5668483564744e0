package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/models/store"
)

func TestDesiredGenerationsSurviveReopen(t *testing.T) {
	ctx := context.Background()
	opts := store.DefaultOptions(t.TempDir())
	s, err := store.Open(ctx, opts, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for src, g := range map[string]uint64{"node": 7, "group/cams": 3, "kubeedge": 1} {
		if err := s.SetDesiredGeneration(ctx, src, g); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetDesiredGeneration(ctx, "node", 9); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "a b", string(make([]byte, 129))} {
		if err := s.SetDesiredGeneration(ctx, bad, 1); !errors.Is(err, models.ErrInvalidArgument) {
			t.Errorf("source %q: %v", bad, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = newTestStore(t, opts)
	got, err := s.DesiredGenerations(ctx)
	if err != nil || len(got) != 3 || got["node"] != 9 || got["group/cams"] != 3 || got["kubeedge"] != 1 {
		t.Fatalf("after reopen: %v, %v", got, err)
	}
}
