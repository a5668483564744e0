package transfer

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/brokertest"
	"github.com/edgeai/edge-node/sync/fleet"
	"github.com/edgeai/edge-node/sync/wire"
)

// failDeadline bounds the fetches below. Before the fixes they ran into it
// (re-subscribing for ever) or failed with an untyped error; a fetch that
// now ends with the typed error ends long before it.
const failDeadline = 30 * time.Second

func shaHex(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// cloneManifest deep-copies m's file and chunk lists.
func cloneManifest(m models.Manifest) models.Manifest {
	m.Files = slices.Clone(m.Files)
	for i := range m.Files {
		m.Files[i].Chunks = slices.Clone(m.Files[i].Chunks)
	}
	return m
}

// shifted is m as version, with d bytes moved from chunk j to chunk i of the
// model file: the chunks still add up to the file, but chunk i's and j's
// sha256 no longer name the bytes at their offsets.
func shifted(m models.Manifest, version string, i, j int, d int64) models.Manifest {
	m = cloneManifest(m)
	m.Version = version
	m.Files[0].Chunks[i].Size += d
	m.Files[0].Chunks[j].Size -= d
	return m
}

// publishManifest signs m's exact JSON with the cloud's key, whatever m
// says (models.SignManifest would refuse an invalid one), and publishes it
// retained on its manifest topic.
func (e *env) publishManifest(m models.Manifest) {
	e.t.Helper()
	payload, err := json.Marshal(m)
	if err != nil {
		e.t.Fatal(err)
	}
	b, err := json.Marshal(models.SignedManifest{Payload: payload, KeyID: models.KeyID(e.key.Public().(ed25519.PublicKey)),
		Signature: ed25519.Sign(e.key, payload)})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if err := e.cloud.Publish(ctx, topics.Manifest(m.Model, m.Version), true, b); err != nil {
		e.t.Fatal(err)
	}
}

// replaceChunk makes the broker's retained copy of chunk sha other bytes.
func (e *env) replaceChunk(sha string, payload []byte) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if err := e.cloud.Publish(ctx, topics.Chunk(sha), true, payload); err != nil {
		e.t.Fatal(err)
	}
}

func notStored(t *testing.T, n *node, f models.FileRef) {
	t.Helper()
	if _, err := n.store.BlobPath(context.Background(), f.SHA256); err == nil {
		t.Fatalf("%s was committed", f.Path)
	}
}

// TestUnsatisfiableManifestFailsAtOnce: a signed manifest whose chunk sizes
// are shifted by one byte (they still add up to the file size, but the
// chunks' sha256 no longer name the bytes at their offsets) cannot be
// satisfied by any publisher: the chunk named by a sha256 has exactly one
// size. The Fetch ends with ErrUnsatisfiable (which is also an
// ErrChecksumMismatch, so the version fails) as soon as it sees the first
// such chunk, whether it comes over the network or from the store, instead
// of failing untyped (the node retried Downloading(TransferInterrupted)
// every 5 s for ever).
func TestUnsatisfiableManifestFailsAtOnce(t *testing.T) {
	e := newEnv(t)
	v1 := pseudoRandom(20, 2<<20)
	man1, _ := e.publish("1", v1, nil)
	if n := len(man1.Files[0].Chunks); n < 4 {
		t.Fatalf("model cut into %d chunks; the cases need at least 4", n)
	}
	// v2 shares every chunk with v1 but the last (so its file is not
	// stored, and its first chunks are copied from v1's blob).
	v2 := bytes.Clone(v1)
	copy(v2[len(v2)-1000:], pseudoRandom(21, 1000))
	man2, _ := e.publish("2", v2, fleet.ChunkSet(man1))
	last := len(man1.Files[0].Chunks) - 1

	cases := []struct {
		name    string
		haveV1  bool // v1 fetched first: its chunks are local
		version string
		m       models.Manifest
	}{
		{"sizes shifted, sum kept", false, "s1", shifted(man1, "s1", 0, 1, 1)},
		{"sizes shifted at the end", false, "s2", shifted(man1, "s2", last-1, last, 1)},
		{"sizes shifted the other way", false, "s3", shifted(man1, "s3", 1, 2, -1)},
		{"shifted chunks the store already has", true, "s4", shifted(man2, "s4", 0, 1, 1)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := e.nodeWith(e.m.URL(), t.TempDir(), nil, Config{Topics: topics, StallTimeout: failDeadline})
			defer n.stop()
			ctx, cancel := context.WithTimeout(context.Background(), 2*failDeadline)
			defer cancel()
			if c.haveV1 {
				if _, err := n.fetcher.Fetch(ctx, e.fetchManifest(n, "1"), nil); err != nil {
					t.Fatal(err)
				}
			}
			// The manifest is signed and structurally valid: the link accepts it.
			e.publishManifest(c.m)
			m := e.fetchManifest(n, c.version)
			start := time.Now()
			_, err := n.fetcher.Fetch(ctx, m, nil)
			if !errors.Is(err, ErrUnsatisfiable) || !errors.Is(err, ErrChecksumMismatch) || errors.Is(err, ErrStalled) {
				t.Fatalf("fetch after %v: err = %v, want ErrUnsatisfiable (and ErrChecksumMismatch)", time.Since(start).Round(time.Millisecond), err)
			}
			t.Logf("failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
			notStored(t, n, m.Files[0])
		})
	}
}

// TestInvalidChunkListRejectedBeforeAnyTransfer: a chunk list that cannot
// describe its file (sizes that do not add up, a zero or negative chunk,
// one sha256 with two sizes, a single chunk that is not the file) is
// refused by the link's manifest validation (the node reports
// Failed(InvalidManifest)), and a Fetch handed one anyway fails with
// ErrUnsatisfiable without subscribing to anything.
func TestInvalidChunkListRejectedBeforeAnyTransfer(t *testing.T) {
	e := newEnv(t)
	man, _ := e.publish("1", pseudoRandom(22, 1<<20), nil)
	n := e.node(e.m.URL(), t.TempDir(), nil)
	mut := func(version string, f func(m *models.Manifest)) models.Manifest {
		m := cloneManifest(man)
		m.Version = version
		f(&m)
		return m
	}
	cases := map[string]models.Manifest{
		"longer than the file":   mut("b1", func(m *models.Manifest) { m.Files[0].Chunks[0].Size++ }),
		"shorter than the file":  mut("b2", func(m *models.Manifest) { m.Files[0].Chunks[1].Size-- }),
		"zero-size chunk":        mut("b3", func(m *models.Manifest) { m.Files[0].Chunks[0].Size = 0 }),
		"negative chunk":         mut("b4", func(m *models.Manifest) { m.Files[0].Chunks[0].Size = -m.Files[0].Chunks[0].Size }),
		"one sha, two sizes":     mut("b5", func(m *models.Manifest) { c := &m.Files[0].Chunks; (*c)[1].SHA256 = (*c)[0].SHA256 }),
		"single chunk, not file": mut("b6", func(m *models.Manifest) { m.Files[1].Chunks[0].SHA256 = shaHex([]byte("not the file")) }),
		"no chunks":              mut("b7", func(m *models.Manifest) { m.Files[0].Chunks = nil }),
	}
	for name, m := range cases {
		t.Run(name, func(t *testing.T) {
			e.publishManifest(m)
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			_, ok, err := fleet.ReadManifest(ctx, n.link, topics, m.Model, m.Version, e.keys, 500*time.Millisecond)
			if _, reason := wire.ReasonOf(err); ok || reason != wire.ReasonBadField {
				t.Fatalf("link accepted it: ok=%v err=%v", ok, err)
			}
			fctx, fcancel := context.WithTimeout(ctx, failDeadline)
			defer fcancel()
			res, err := n.fetcher.Fetch(fctx, m, nil)
			if !errors.Is(err, ErrUnsatisfiable) || res.ChunksNetwork != 0 {
				t.Fatalf("fetch: %+v, err = %v, want ErrUnsatisfiable before any chunk", res, err)
			}
		})
	}
}

// TestWrongRetainedChunk: the broker's retained copy of one chunk is not the
// chunk and nobody repairs it. Bytes of another size than the manifest says
// are a publisher error: after the window's subscription and one
// re-subscription (StallTimeout) the Fetch ends with ErrUnsatisfiable. Bytes
// of the right size but the wrong hash prove nothing about the manifest (a
// republish may fix the copy): the Fetch ends with ErrStalled, which the
// caller retries within its budget.
func TestWrongRetainedChunk(t *testing.T) {
	e := newEnv(t)
	const stall = 2 * time.Second
	cases := []struct {
		name  string
		bytes func(size int64) []byte
		want  error
	}{
		{"another size", func(size int64) []byte { return pseudoRandom(23, int(size)+1) }, ErrUnsatisfiable},
		{"right size, wrong bytes", func(size int64) []byte { return pseudoRandom(24, int(size)) }, ErrStalled},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			man, _ := e.publish(string(rune('a'+i)), pseudoRandom(uint64(25+i), 1<<20), nil)
			victim := man.Files[0].Chunks[1]
			e.replaceChunk(victim.SHA256, c.bytes(victim.Size))
			n := e.nodeWith(e.m.URL(), t.TempDir(), nil, Config{Topics: topics, StallTimeout: stall})
			defer n.stop()
			ctx, cancel := context.WithTimeout(context.Background(), failDeadline)
			defer cancel()
			start := time.Now()
			res, err := n.fetcher.Fetch(ctx, e.fetchManifest(n, man.Version), nil)
			if !errors.Is(err, c.want) {
				t.Fatalf("fetch after %v: %+v, err = %v, want %v", time.Since(start).Round(time.Millisecond), res, err, c.want)
			}
			if c.want == ErrStalled && errors.Is(err, ErrChecksumMismatch) {
				t.Fatalf("a stall reads as a checksum mismatch: %v", err)
			}
			if n.rej.Count(wire.KindChunk, wire.ReasonChunkMismatch) == 0 {
				t.Fatal("the bad copy was not counted as rejected")
			}
			notStored(t, n, man.Files[0])
			t.Logf("after %v (%d re-subscriptions): %v", time.Since(start).Round(time.Millisecond), res.Resubscribes, err)
		})
	}
}

// TestNeverPublishedChunkStalls: a chunk that is never published makes no
// progress; after StallTimeout (connected, the window re-subscribed once
// half-way) the Fetch ends with ErrStalled — not a checksum error, so the
// caller counts it against a retry budget. Everything else was written: the
// next Fetch, once the chunk is published, resumes.
func TestNeverPublishedChunkStalls(t *testing.T) {
	e := newEnv(t)
	model := pseudoRandom(30, 2<<20)
	dir := t.TempDir()
	// Publish, then take one chunk away.
	man, _ := e.publish("1", model, nil)
	missing := man.Files[0].Chunks[2].SHA256
	e.replaceChunk(missing, nil) // an empty retained publish deletes it
	n := e.nodeWith(e.m.URL(), dir, nil, Config{Topics: topics, StallTimeout: 2 * time.Second})
	m := e.fetchManifest(n, "1")
	ctx, cancel := context.WithTimeout(context.Background(), failDeadline)
	defer cancel()
	start := time.Now()
	res, err := n.fetcher.Fetch(ctx, m, nil)
	if !errors.Is(err, ErrStalled) || errors.Is(err, ErrChecksumMismatch) {
		t.Fatalf("fetch after %v: %+v, err = %v, want ErrStalled", time.Since(start).Round(time.Millisecond), res, err)
	}
	if res.Resubscribes < 1 {
		t.Fatalf("stalled without re-subscribing the window: %+v", res)
	}
	t.Logf("stalled after %v: %v", time.Since(start).Round(time.Millisecond), err)

	e.publish("1", model, nil) // the chunk appears
	res, err = n.fetcher.Fetch(ctx, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.ChunksNetwork != 1 || res.ChunksResumed == 0 {
		t.Fatalf("second fetch did not resume: %+v", res)
	}
	checkFiles(t, n.store, m, map[string][]byte{"model.onnx": model})
}

// TestOfflineIsNotAStall: time without a broker does not count towards
// StallTimeout (offline is the normal case); the Fetch goes on after the
// link is back.
func TestOfflineIsNotAStall(t *testing.T) {
	e := newEnv(t)
	model := pseudoRandom(31, 3<<20)
	e.publish("1", model, nil)
	const stall = 2 * time.Second
	proxy := brokertest.NewProxy(t, e.m.Addr())
	n := e.nodeWith(proxy.URL(), t.TempDir(), nil, Config{Topics: topics, Window: 2, StallTimeout: stall})
	m := e.fetchManifest(n, "1")
	ctx, cancel := context.WithTimeout(context.Background(), failDeadline)
	defer cancel()
	cut := make(chan struct{})
	var once bool
	done := make(chan error, 1)
	go func() {
		_, err := n.fetcher.Fetch(ctx, m, func(p Progress) {
			if !once && p.ChunksDone >= 2 {
				once = true
				proxy.SetDown(true)
				close(cut)
			}
		})
		done <- err
	}()
	select {
	case <-cut:
	case err := <-done:
		t.Fatalf("fetch ended before the cut: %v", err)
	}
	time.Sleep(3 * stall) // offline for longer than StallTimeout
	proxy.SetDown(false)
	if err := <-done; err != nil {
		t.Fatalf("fetch after an outage: %v", err)
	}
	checkFiles(t, n.store, m, map[string][]byte{"model.onnx": model})
}
