package store_test

import (
	"context"
	"testing"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/models/store"
	"github.com/edgeai/edge-node/models/testsuite"
)

func newTestStore(t testing.TB, opts store.Options) *store.Store {
	t.Helper()
	if opts.Root == "" {
		opts = store.DefaultOptions(t.TempDir())
	}
	s, err := store.Open(context.Background(), opts, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func TestStoreSuite(t *testing.T) {
	testsuite.StoreSuite(t, func(t *testing.T) models.Store { return newTestStore(t, store.Options{}) })
}
