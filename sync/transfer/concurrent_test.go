package transfer

import (
	"context"
	"testing"
	"time"
)

// TestConcurrentFetches: a Fetch that cannot finish (a chunk is never
// published) does not hold up another Fetch on the same Fetcher, though
// both versions share a file (their config.yaml): the second completes
// while the first still waits, and the first, once the chunk appears,
// completes too.
func TestConcurrentFetches(t *testing.T) {
	e := newEnv(t)
	stuck, good := pseudoRandom(51, 2<<20), pseudoRandom(52, 2<<20)
	m1, _ := e.publish("1", stuck, nil)
	missing := m1.Files[0].Chunks[3].SHA256
	e.replaceChunk(missing, nil) // never there
	e.publish("2", good, nil)
	n := e.nodeWith(e.m.URL(), t.TempDir(), nil, Config{Topics: topics, StallTimeout: time.Minute})
	v1, v2 := e.fetchManifest(n, "1"), e.fetchManifest(n, "2")
	if v1.Files[1].SHA256 != v2.Files[1].SHA256 {
		t.Fatal("the two versions should share their config.yaml")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	done1 := make(chan error, 1)
	go func() { _, err := n.fetcher.Fetch(ctx, v1, nil); done1 <- err }()

	start := time.Now()
	if _, err := n.fetcher.Fetch(ctx, v2, nil); err != nil {
		t.Fatalf("the second fetch: %v", err)
	}
	took := time.Since(start)
	select {
	case err := <-done1:
		t.Fatalf("the stuck fetch ended (%v) before its chunk was published", err)
	default:
	}
	checkFiles(t, n.store, v2, map[string][]byte{"model.onnx": good})
	t.Logf("v2 fetched in %v while v1 waited for a chunk", took.Round(time.Millisecond))

	e.publish("1", stuck, nil) // the missing chunk appears
	select {
	case err := <-done1:
		if err != nil {
			t.Fatalf("the first fetch: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the first fetch did not complete after its chunk was published")
	}
	checkFiles(t, n.store, v1, map[string][]byte{"model.onnx": stuck})
}
