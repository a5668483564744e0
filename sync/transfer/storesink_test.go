package transfer

import (
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/models/store"
	"github.com/edgeai/edge-node/sync/fleet"
)

// TestStoreSinkFetchesIntoTheModelStore runs a Fetcher against the real
// model store (bbolt + blob files in t.TempDir()) through a real broker: the
// version verifies to Ready; a fetch cut off part-way and re-run with a new
// sink over a re-opened store (a node restart) writes no verified chunk
// again; and v2, which shares most chunks with v1, copies them locally.
func TestStoreSinkFetchesIntoTheModelStore(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	v1 := pseudoRandom(7, 3<<20)
	man1, _ := e.publish("1", v1, nil)
	v2 := append([]byte(nil), v1...)
	copy(v2[1<<20:], pseudoRandom(8, 4096)) // one edit in the middle
	man2, _ := e.publish("2", v2, fleet.ChunkSet(man1))

	root := t.TempDir()
	open := func() *store.Store {
		opts := store.DefaultOptions(root)
		opts.TrustedKeys = e.keys
		s, err := store.Open(ctx, opts, zerolog.Nop(), nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	announce := func(s *store.Store, m models.Manifest) {
		sm, err := models.SignManifest(m, e.key)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(sm)
		if _, err := s.Announce(ctx, b); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Transition(ctx, m.Model, m.Version, models.Downloading, models.TransitionOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	n := e.node(e.m.URL(), t.TempDir(), nil)
	fetch := func(s *store.Store, m models.Manifest, stopAfter int) (Result, error) {
		sink := NewStoreSink(s)
		defer sink.Close()
		f, err := NewFetcher(Config{Topics: topics, Window: 2, StallTimeout: 2 * time.Second}, n.link, sink, n.rej, zerolog.Nop(), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		fctx, fcancel := context.WithCancel(ctx)
		defer fcancel()
		return f.Fetch(fctx, m, func(p Progress) {
			if stopAfter > 0 && p.ChunksDone >= stopAfter {
				fcancel()
			}
		})
	}

	s := open()
	announce(s, man1)
	if _, err := fetch(s, man1, 3); err == nil {
		t.Fatal("the interrupted fetch finished")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open() // the restart
	defer s.Close()
	res, err := fetch(s, man1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.ChunksResumed < 3 || res.ChunksNetwork+res.ChunksResumed+res.ChunksLocal < len(man1.Files[0].Chunks) {
		t.Fatalf("resume: %+v", res)
	}
	t.Logf("v1 after restart: %d chunks resumed (not fetched again), %d from the network", res.ChunksResumed, res.ChunksNetwork)
	v, err := s.VerifyVersion(ctx, "det", "1")
	if err != nil || v.State != models.Ready {
		t.Fatalf("verify v1: %v %v", v.State, err)
	}
	p, err := s.BlobPath(ctx, man1.Files[0].SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); string(got) != string(v1) {
		t.Fatal("stored v1 differs")
	}

	announce(s, man2)
	res, err = fetch(s, man2, 0)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := s.VerifyVersion(ctx, "det", "2"); err != nil || v.State != models.Ready {
		t.Fatalf("verify v2: %v %v", v.State, err)
	}
	if res.BytesNetwork*4 > res.BytesTotal || res.ChunksLocal == 0 {
		t.Fatalf("v2 moved %d of %d bytes over the network: %+v", res.BytesNetwork, res.BytesTotal, res)
	}
	t.Logf("v2: %d of %d bytes over the network, %d local", res.BytesNetwork, res.BytesTotal, res.BytesLocal)
}
