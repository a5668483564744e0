package transfer

import (
	"context"
	"crypto/sha256"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/mqttlink"
	"github.com/edgeai/edge-node/sync/wire"
)

// simClock is a simulated clock: a wait on it advances it at once by the
// time waited, so a test sees what a rate limit does to bytes per
// (simulated) second without sleeping.
type simClock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

func (c *simClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *simClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	c.now = c.now.Add(d)
	now := c.now
	c.mu.Unlock()
	ch := make(chan time.Time, 1)
	ch <- now
	return ch
}

// serveLink is a Link that answers every chunk subscription at once with
// the chunk's bytes (a broker holding them all retained) and records, per
// subscription, the simulated time and the bytes asked for so far.
type serveLink struct {
	nopLink
	clock  *simClock
	chunks map[string][]byte // topic → payload

	mu    sync.Mutex // guards asked, log
	asked int64
	log   []subscription
}

type subscription struct {
	at    time.Time
	asked int64 // bytes subscribed up to and including this one
}

func (l *serveLink) Subscribe(_ context.Context, h mqttlink.Handler, filters ...string) error {
	for _, topic := range filters {
		l.mu.Lock()
		l.asked += int64(len(l.chunks[topic]))
		l.log = append(l.log, subscription{l.clock.Now(), l.asked})
		l.mu.Unlock()
		go h(topic, l.chunks[topic])
	}
	return nil
}

// syntheticManifest is a one-file manifest of n pseudo-random chunks of
// size bytes, whose chunks link serves.
func syntheticManifest(link *serveLink, n, size int) models.Manifest {
	var file []byte
	var refs []models.ChunkRef
	for i := range n {
		c := pseudoRandom(uint64(i), size)
		sum := sha256.Sum256(c)
		sha := fmt.Sprintf("%x", sum)
		link.chunks[topics.Chunk(sha)] = c
		refs = append(refs, models.ChunkRef{SHA256: sha, Size: int64(size)})
		file = append(file, c...)
	}
	sum := sha256.Sum256(file)
	return models.Manifest{Protocol: 1, Model: "m", Version: "1", Created: "2026-01-01T00:00:00Z",
		Files: []models.FileRef{{Path: "model.onnx", Role: "model", SHA256: fmt.Sprintf("%x", sum), Size: int64(len(file)), Chunks: refs}}}
}

// TestDownloadRateBoundsBytesPerSimulatedSecond: with Config.DownloadRate
// set, the Fetcher subscribes no chunk before the budget holds its bytes:
// at every subscription the bytes asked for so far are at most the burst
// (one largest chunk) plus the rate times the simulated time since the
// start. The clock only moves when the Fetcher waits on it, so the check
// is exact and takes no wall-clock time.
func TestDownloadRateBoundsBytesPerSimulatedSecond(t *testing.T) {
	const (
		nChunks   = 24
		chunkSize = 256 << 10
		rateBps   = 512 << 10
	)
	clock := &simClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	start := clock.Now()
	link := &serveLink{clock: clock, chunks: map[string][]byte{}}
	m := syntheticManifest(link, nChunks, chunkSize)

	ss := NewStoreSink(openStore(t, t.TempDir()))
	t.Cleanup(func() { ss.Close() })
	rej, _ := wire.NewRejecter(nil, zerolog.Nop())
	f, err := NewFetcher(Config{Topics: topics, DownloadRate: rateBps, Now: clock.Now, After: clock.After}, link, ss, rej, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	res, err := f.Fetch(ctx, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.ChunksNetwork != nChunks {
		t.Fatalf("%d chunks from the network, want %d", res.ChunksNetwork, nChunks)
	}
	burst := int64(wire.MaxChunkBytes)
	link.mu.Lock()
	defer link.mu.Unlock()
	if len(link.log) != nChunks {
		t.Fatalf("%d subscriptions, want %d", len(link.log), nChunks)
	}
	for i, s := range link.log {
		allowed := burst + int64(s.at.Sub(start).Seconds()*rateBps)
		if s.asked > allowed {
			t.Errorf("subscription %d at +%v: %d bytes asked for, the budget allows %d", i, s.at.Sub(start), s.asked, allowed)
		}
	}
	elapsed := clock.Now().Sub(start)
	total := int64(nChunks * chunkSize)
	if min := time.Duration(float64(total-burst) / rateBps * float64(time.Second)); elapsed < min {
		t.Errorf("%d bytes in %v of simulated time; at %d B/s with a %d-byte burst it takes at least %v", total, elapsed, rateBps, burst, min)
	}
	t.Logf("%d bytes in %v simulated: %.0f B/s against a limit of %d B/s", total, elapsed, float64(total)/elapsed.Seconds(), rateBps)
}
