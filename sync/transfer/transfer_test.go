package transfer

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/internal/testwait"
	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/models/store"
	"github.com/edgeai/edge-node/sync/brokertest"
	"github.com/edgeai/edge-node/sync/fleet"
	"github.com/edgeai/edge-node/sync/mqttlink"
	"github.com/edgeai/edge-node/sync/mqttlink/mqttlinktest"
	"github.com/edgeai/edge-node/sync/wire"
)

const deadline = 60 * time.Second

var topics = wire.Topics{Root: wire.DefaultRoot}

func pseudoRandom(seed uint64, n int) []byte {
	out := make([]byte, 0, n+32)
	var ctr [16]byte
	binary.LittleEndian.PutUint64(ctr[8:], seed)
	for i := uint64(0); len(out) < n; i++ {
		binary.LittleEndian.PutUint64(ctr[:8], i)
		s := sha256.Sum256(ctr[:])
		out = append(out, s[:]...)
	}
	return out[:n]
}

// runLink starts a session as client id on url and waits until it is up;
// stop ends it (it also ends with the test).
func runLink(t *testing.T, url, id string) (*mqttlink.Link, func()) {
	t.Helper()
	cfg := mqttlink.DefaultConfig()
	cfg.BrokerURL, cfg.ClientID = url, id
	l, stop := mqttlinktest.Start(t, cfg, mqttlinktest.Options{})
	mqttlinktest.WaitUp(t, l)
	return l, stop
}

// countingSink wraps the store's sink and records every (blob, offset)
// written, to prove no verified chunk is written twice across interruptions.
type countingSink struct {
	*StoreSink
	mu     *sync.Mutex
	writes map[string]int
}

func (c countingSink) WriteChunk(ctx context.Context, blob string, off int64, data []byte) error {
	if err := c.StoreSink.WriteChunk(ctx, blob, off, data); err != nil {
		return err // not durable: may be written again
	}
	c.mu.Lock()
	c.writes[fmt.Sprint(blob, off)]++
	c.mu.Unlock()
	return nil
}

func (c countingSink) maxWrites() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := 0
	for _, n := range c.writes {
		m = max(m, n)
	}
	return m
}

// openStore opens the real model store (bbolt catalog and blob files) at
// root until the test ends.
func openStore(t *testing.T, root string) *store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	s, err := store.Open(ctx, store.DefaultOptions(root), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

type env struct {
	t      *testing.T
	m      *brokertest.Mosquitto
	cloud  *mqttlink.Link
	key    ed25519.PrivateKey
	keys   models.KeySet
	srcDir string
}

func newEnv(t *testing.T) *env {
	m := brokertest.StartMosquitto(t, brokertest.Options{})
	cloud, _ := runLink(t, m.URL(), "edgectl-test")
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keys := models.KeySet{}
	keys.Add(key.Public().(ed25519.PublicKey))
	return &env{t: t, m: m, cloud: cloud, key: key, keys: keys, srcDir: t.TempDir()}
}

// publish writes the files and publishes them as model/version.
func (e *env) publish(version string, model []byte, skip map[string]bool) (models.Manifest, fleet.PublishStats) {
	e.t.Helper()
	dir := filepath.Join(e.srcDir, version)
	_ = os.MkdirAll(dir, 0o755)
	mp, cp := filepath.Join(dir, "model.onnx"), filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(mp, model, 0o644); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(cp, []byte("max_batch_size: 8\n"), 0o644); err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	man, st, err := fleet.PublishModel(ctx, e.cloud, topics, "det", version, []fleet.FileSpec{
		{Path: mp, Name: "model.onnx", Role: wire.RoleModel},
		{Path: cp, Name: "config.yaml", Role: wire.RoleConfig},
	}, e.key, fleet.PublishOptions{Skip: skip})
	if err != nil {
		e.t.Fatal(err)
	}
	return man, st
}

type node struct {
	link    *mqttlink.Link
	stop    func()
	store   *store.Store
	sink    countingSink
	fetcher *Fetcher
	rej     *wire.Rejecter
}

// node starts a node's side of a transfer: its link to url and a Fetcher
// into the model store at storeDir (counts, if set, carries the write
// counts of an earlier node over the same store).
func (e *env) node(url, storeDir string, counts *countingSink) *node {
	e.t.Helper()
	return e.nodeWith(url, storeDir, counts, Config{Topics: topics, StallTimeout: 5 * time.Second})
}

// nodeWith is node with the Fetcher's Config.
func (e *env) nodeWith(url, storeDir string, counts *countingSink, cfg Config) *node {
	e.t.Helper()
	link, stop := runLink(e.t, url, "edge-node-n1")
	st := openStore(e.t, storeDir)
	ss := NewStoreSink(st)
	e.t.Cleanup(func() { ss.Close() })
	cs := countingSink{StoreSink: ss, mu: &sync.Mutex{}, writes: map[string]int{}}
	if counts != nil {
		cs.mu, cs.writes = counts.mu, counts.writes
	}
	rej, err := wire.NewRejecter(nil, zerolog.Nop())
	if err != nil {
		e.t.Fatal(err)
	}
	f, err := NewFetcher(cfg, link, cs, rej, zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		e.t.Fatal(err)
	}
	return &node{link: link, stop: stop, store: st, sink: cs, fetcher: f, rej: rej}
}

// fetchSigned reads the manifest as a node does (retained, signature checked).
func (e *env) fetchManifest(n *node, version string) models.Manifest {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	m, ok, err := fleet.ReadManifest(ctx, n.link, topics, "det", version, e.keys, 500*time.Millisecond)
	if err != nil || !ok {
		e.t.Fatalf("manifest %s: ok=%v err=%v", version, ok, err)
	}
	return m
}

// checkFiles checks that every file of m is a committed blob of s, with the
// bytes of want where want names the file.
func checkFiles(t *testing.T, s *store.Store, m models.Manifest, want map[string][]byte) {
	t.Helper()
	for _, f := range m.Files {
		p, err := s.BlobPath(context.Background(), f.SHA256)
		if err != nil {
			t.Fatalf("%s not stored: %v", f.Path, err)
		}
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("%s not stored: %v", f.Path, err)
		}
		if w, ok := want[f.Path]; ok && !bytes.Equal(got, w) {
			t.Fatalf("%s: stored bytes differ", f.Path)
		}
	}
}

func TestPublishThenFetchVerifiesAll(t *testing.T) {
	e := newEnv(t)
	model := pseudoRandom(1, 6<<20)
	man, pst := e.publish("1", model, nil)
	n := e.node(e.m.URL(), t.TempDir(), nil)
	m := e.fetchManifest(n, "1")
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	var last Progress
	res, err := n.fetcher.Fetch(ctx, m, func(p Progress) { last = p })
	if err != nil {
		t.Fatal(err)
	}
	checkFiles(t, n.store, m, map[string][]byte{"model.onnx": model})
	if res.ChunksNetwork != res.UniqueMissing || res.ChunksNetwork != pst.Chunks {
		t.Fatalf("result %+v, publisher sent %d chunks", res, pst.Chunks)
	}
	if last.BytesDone != last.BytesTotal || last.BytesTotal != man.Files[0].Size+man.Files[1].Size {
		t.Fatalf("last progress %+v", last)
	}
	// A second fetch of the same version moves nothing.
	res2, err := n.fetcher.Fetch(ctx, m, nil)
	if err != nil || res2.FilesStored != 2 || res2.ChunksNetwork != 0 {
		t.Fatalf("refetch: %+v %v", res2, err)
	}
}

func TestBrokerRestartMidTransferResumes(t *testing.T) {
	e := newEnv(t)
	model := pseudoRandom(2, 8<<20)
	e.publish("1", model, nil)
	n := e.node(e.m.URL(), t.TempDir(), nil)
	m := e.fetchManifest(n, "1")
	ctx, cancel := context.WithTimeout(context.Background(), 2*deadline)
	defer cancel()
	var once sync.Once
	restarted := make(chan struct{})
	res, err := n.fetcher.Fetch(ctx, m, func(p Progress) {
		if p.ChunksDone >= p.ChunksTotal/3 {
			once.Do(func() {
				e.m.Stop() // SIGTERM: mosquitto saves retained chunks and sessions
				e.m.Start()
				close(restarted)
			})
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-restarted:
	default:
		t.Fatal("broker was never restarted")
	}
	checkFiles(t, n.store, m, map[string][]byte{"model.onnx": model})
	if w := n.sink.maxWrites(); w != 1 {
		t.Fatalf("a chunk was written %d times", w)
	}
	if res.ChunksNetwork != res.UniqueMissing {
		t.Fatalf("result %+v", res)
	}
	t.Logf("broker restart: %+v", res)
}

func TestClientRestartMidTransferResumes(t *testing.T) {
	e := newEnv(t)
	model := pseudoRandom(3, 8<<20)
	e.publish("1", model, nil)
	storeDir := t.TempDir()
	n := e.node(e.m.URL(), storeDir, nil)
	m := e.fetchManifest(n, "1")
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	_, err := n.fetcher.Fetch(ctx, m, func(p Progress) {
		if p.ChunksDone >= p.ChunksTotal/2 {
			cancel() // the node goes down half way
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("first fetch: %v", err)
	}
	n.stop()
	n.sink.Close()
	if err := n.store.Close(); err != nil { // the node goes down
		t.Fatal(err)
	}

	n2 := e.node(e.m.URL(), storeDir, &n.sink)
	ctx2, cancel2 := context.WithTimeout(context.Background(), deadline)
	defer cancel2()
	res, err := n2.fetcher.Fetch(ctx2, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkFiles(t, n2.store, m, map[string][]byte{"model.onnx": model})
	if res.ChunksResumed == 0 || res.ChunksNetwork != res.UniqueMissing {
		t.Fatalf("second fetch did not resume: %+v", res)
	}
	if w := n2.sink.maxWrites(); w != 1 {
		t.Fatalf("a chunk was written %d times across the restart", w)
	}
	t.Logf("client restart: resumed %d chunks (%d bytes), fetched %d", res.ChunksResumed, res.BytesResumed, res.ChunksNetwork)
}

func TestFineTuneMovesOnlyChangedChunks(t *testing.T) {
	e := newEnv(t)
	v1 := pseudoRandom(4, 24<<20)
	v2 := bytes.Clone(v1)
	copy(v2[10<<20:], pseudoRandom(5, 256<<10)) // one changed 256 KiB tensor
	_, res, pst2 := fineTune(t, e, v1, v2)
	frac := float64(res.BytesNetwork) / float64(res.BytesTotal)
	t.Logf("fine-tune: node fetched %d of %d bytes (%.2f%%), copied %d locally; publisher sent %d of %d bytes",
		res.BytesNetwork, res.BytesTotal, 100*frac, res.BytesLocal, pst2.BytesSent, pst2.BytesTotal)
	if frac > 0.10 {
		t.Fatalf("fine-tune moved %.1f%% of the bytes", 100*frac)
	}
}

func TestHostileChunkRejectedThenRecovered(t *testing.T) {
	e := newEnv(t)
	model := pseudoRandom(6, 2<<20)
	man, _ := e.publish("1", model, nil)
	victim := man.Files[0].Chunks[1].SHA256
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	// An attacker replaces a retained chunk with other bytes.
	if err := e.cloud.Publish(ctx, topics.Chunk(victim), true, []byte("not the chunk")); err != nil {
		t.Fatal(err)
	}
	// A StallTimeout longer than the republish takes: the bad copy is of
	// another size, which a stall would report as ErrUnsatisfiable.
	n := e.nodeWith(e.m.URL(), t.TempDir(), nil, Config{Topics: topics, StallTimeout: deadline / 2})
	m := e.fetchManifest(n, "1")
	type out struct {
		res Result
		err error
	}
	done := make(chan out, 1)
	go func() { r, err := n.fetcher.Fetch(ctx, m, nil); done <- out{r, err} }()
	testwait.For(t, "the bad chunk rejected", func() bool { return n.rej.Count(wire.KindChunk, wire.ReasonChunkMismatch) > 0 }, deadline)
	// The cloud republishes the version; the stall timer re-subscribes.
	e.publish("1", model, nil)
	o := <-done
	if o.err != nil {
		t.Fatal(o.err)
	}
	checkFiles(t, n.store, m, map[string][]byte{"model.onnx": model})
	if o.res.Resubscribes == 0 {
		t.Logf("recovered without a stall re-subscribe (republish arrived on the live subscription)")
	}
}

// nopLink is a Link that subscribes to nothing: for handler-only tests.
type nopLink struct{}

func (nopLink) Subscribe(context.Context, mqttlink.Handler, ...string) error { return nil }
func (nopLink) Unsubscribe(context.Context, ...string) error                 { return nil }
func (nopLink) HandleUnmatched(string, mqttlink.Handler)                     {}
func (nopLink) Connected() <-chan struct{}                                   { return closed }

var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func newHandlerFetcher(t testing.TB) (*Fetcher, *wire.Rejecter, *fetchState, string) {
	rej, _ := wire.NewRejecter(nil, zerolog.Nop())
	ctx := context.Background()
	ms, err := store.Open(ctx, store.DefaultOptions(t.TempDir()), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ms.Close() })
	ss := NewStoreSink(ms)
	t.Cleanup(func() { ss.Close() })
	f, err := NewFetcher(Config{}, nopLink{}, ss, rej, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("wanted chunk")
	sum := sha256.Sum256(data)
	sha := fmt.Sprintf("%x", sum)
	ref := models.FileRef{Path: "m", Role: "model", SHA256: sha, Size: int64(len(data)), Chunks: []models.ChunkRef{{SHA256: sha, Size: int64(len(data))}}}
	if _, err := ss.Begin(ctx, ref); err != nil {
		t.Fatal(err)
	}
	st := &fetchState{wanted: map[string][]placement{sha: {{sha, 0}}}, sizes: map[string]int64{sha: int64(len(data))},
		wrongCopy: map[string]int{}, remaining: map[string]int{sha: 1},
		got: map[string]bool{}, arrived: make(chan string, 2), failed: make(chan struct{}, 1), ctx: ctx}
	f.active[st] = struct{}{}
	return f, rej, st, sha
}

func TestChunkHandlerRejects(t *testing.T) {
	f, rej, st, sha := newHandlerFetcher(t)
	other := fmt.Sprintf("%x", sha256.Sum256([]byte("x")))
	cases := []struct {
		name, topic string
		payload     []byte
		kind, why   string
	}{
		{"not a chunk topic", "edgeai/v1/nodes/x/status", []byte("x"), wire.KindTopic, wire.ReasonBadTopic},
		{"upper-case sha", "edgeai/v1/chunks/" + fmt.Sprintf("%X", sha256.Sum256(nil)), []byte("x"), wire.KindChunk, wire.ReasonBadTopic},
		{"short sha", "edgeai/v1/chunks/abc", []byte("x"), wire.KindChunk, wire.ReasonBadTopic},
		{"unknown blob's chunk", topics.Chunk(other), []byte("x"), wire.KindChunk, wire.ReasonUnsolicitedChunk},
		{"mismatch", topics.Chunk(sha), []byte("other bytes"), wire.KindChunk, wire.ReasonChunkMismatch},
		{"oversize", topics.Chunk(sha), make([]byte, wire.MaxChunkBytes+1), wire.KindChunk, wire.ReasonOversize},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := rej.Count(c.kind, c.why)
			f.onChunk(c.topic, c.payload)
			if rej.Count(c.kind, c.why) != before+1 {
				t.Fatalf("not counted as %s/%s", c.kind, c.why)
			}
		})
	}
	if len(st.wanted) != 1 {
		t.Fatal("a rejected message changed the transfer state")
	}
	f.onChunk(topics.Chunk(sha), []byte("wanted chunk"))
	f.onChunk(topics.Chunk(sha), []byte("wanted chunk")) // duplicate
	if st.res.ChunksNetwork != 1 || st.res.Duplicates != 1 || <-st.arrived != sha {
		t.Fatalf("good chunk: %+v", st.res)
	}
}

func FuzzChunkHandler(f *testing.F) {
	f.Add("edgeai/v1/chunks/"+fmt.Sprintf("%x", sha256.Sum256([]byte("wanted chunk"))), []byte("wanted chunk"))
	f.Add("edgeai/v1/chunks/zz", []byte{})
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		fe, _, st, _ := newHandlerFetcher(t)
		fe.onChunk(topic, payload)
		if st.res.ChunksNetwork > 1 {
			t.Fatal("more chunks than wanted")
		}
	})
}

// fineTune publishes v1 and then v2 (sending only chunks v1 lacks), has a
// node fetch v1 and then v2, checks v2's file and returns v1's manifest, the
// v2 fetch's result and the v2 publish's stats.
func fineTune(t *testing.T, e *env, v1, v2 []byte) (models.Manifest, Result, fleet.PublishStats) {
	t.Helper()
	man1, _ := e.publish("1", v1, nil)
	_, pst2 := e.publish("2", v2, fleet.ChunkSet(man1))
	n := e.node(e.m.URL(), t.TempDir(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if _, err := n.fetcher.Fetch(ctx, e.fetchManifest(n, "1"), nil); err != nil {
		t.Fatal(err)
	}
	m2 := e.fetchManifest(n, "2")
	res, err := n.fetcher.Fetch(ctx, m2, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkFiles(t, n.store, m2, map[string][]byte{"model.onnx": v2})
	return man1, res, pst2
}
