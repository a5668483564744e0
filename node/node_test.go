package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/node/kserve/kservetest"
)

// The daemon tests run whole nodes: real ONNX Runtime (the process-wide
// inferencetest.Env, handed to newNode), the real sample models, a real
// bbolt store in t.TempDir() and HTTP over loopback. Nodes are created one
// after the other (no t.Parallel): each holds its store's file lock.

// testConfig is a node on a free loopback port with its store in dataDir.
func testConfig(t testing.TB, dataDir, repo string) Config {
	cfg := DefaultConfig()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.GRPCAddr = "127.0.0.1:0"
	cfg.DataDir = dataDir
	cfg.ModelRepository = repo
	cfg.ORTLibrary = inferencetest.LibraryPath(t)
	cfg.DrainTimeout = time.Minute
	cfg.Pinned.BudgetBytes = 64 << 20
	cfg.Pinned.MaxWait = 10 * time.Second
	cfg.Log.Level = "warn"
	// The cloud tests (cloud_test.go) turn the link on with their own broker.
	cfg.Cloud.Disabled = true
	return cfg
}

func testLogger(t testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Timestamp().Logger()
}

// modelBytes returns a sample model's bytes. A non-empty variant appends a
// protobuf field that ONNX does not define (field 1000, length-delimited):
// ONNX Runtime ignores it, so the variant computes exactly what the original
// does, but it hashes differently, so it is a distinct version with its own
// blob in the store.
func modelBytes(t testing.TB, name, variant string) []byte {
	t.Helper()
	b, err := os.ReadFile(inferencetest.ModelPath(t, name))
	if err != nil {
		t.Fatal(err)
	}
	if variant != "" {
		if len(variant) > 127 {
			t.Fatal("variant too long")
		}
		b = append(append(b, 0xC2, 0x3E, byte(len(variant))), variant...)
	}
	return b
}

// addToRepo writes <repo>/<name>/<version>/model.onnx (a copy, so that the
// test may corrupt the store's blobs without touching .cache) and a
// config.yaml.
func addToRepo(t testing.TB, repo, name, version string, model []byte) {
	t.Helper()
	dir := filepath.Join(repo, name, version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "model.onnx"), model, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, name, "config.yaml"), []byte("intra_op_threads: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// runningNode is a node whose Run goroutine is going.
type runningNode struct {
	*Node
	url    string
	cancel context.CancelFunc
	done   chan error
}

// startNode builds a node on the shared ONNX Runtime environment, checks
// that it is not ready before Run, runs it and waits for /v2/health/ready.
// The node is stopped and closed at the end of the test if the test did not.
func startNode(t testing.TB, cfg Config) *runningNode {
	t.Helper()
	return startNodeLogging(t, cfg, testLogger(t))
}

// logCapture keeps the JSON lines a node logs, for tests that assert on
// them (and shows them in the test's output).
type logCapture struct {
	t   testing.TB
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *logCapture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t.Logf("%s", bytes.TrimSpace(p))
	return c.buf.Write(p)
}

// lines returns the captured lines that contain every one of want.
func (c *logCapture) lines(want ...string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, l := range strings.Split(c.buf.String(), "\n") {
		match := l != ""
		for _, w := range want {
			match = match && strings.Contains(l, w)
		}
		if match {
			out = append(out, l)
		}
	}
	return out
}

// startNodeCapturing is startNode with the node's warnings and errors
// captured.
func startNodeCapturing(t testing.TB, cfg Config) (*runningNode, *logCapture) {
	t.Helper()
	c := &logCapture{t: t}
	return startNodeLogging(t, cfg, zerolog.New(c).Level(zerolog.WarnLevel).With().Timestamp().Logger()), c
}

func startNodeLogging(t testing.TB, cfg Config, logger zerolog.Logger) *runningNode {
	t.Helper()
	n, err := newNode(context.Background(), cfg, logger, inferencetest.Env(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if n.Ready() {
		t.Error("ready before Run")
	}
	ctx, cancel := context.WithCancel(context.Background())
	rn := &runningNode{Node: n, url: "http://" + n.Addr(), cancel: cancel, done: make(chan error, 1)}
	go func() { rn.done <- n.Run(ctx) }()
	t.Cleanup(func() { rn.stop(t) })
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := http.Get(rn.url + "/v2/health/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return rn
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("node at %s not ready after 30s", rn.url)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop cancels Run, checks that it returns context.Canceled, and closes the
// node. It is safe to call more than once.
func (rn *runningNode) stop(t testing.TB) {
	t.Helper()
	if rn.cancel == nil {
		return
	}
	rn.cancel()
	rn.cancel = nil
	select {
	case err := <-rn.done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("Run did not return 2 minutes after cancel")
	}
	if rn.Ready() {
		t.Error("still ready after Run returned")
	}
	if err := rn.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// call makes one HTTP request and returns the status, header and body.
func call(t testing.TB, method, url string, header http.Header, body []byte) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, url, err)
	}
	return resp.StatusCode, resp.Header, b
}

// clsInput is a 1×3×48×192 text-line crop for ppocr_cls.
func clsInput() []inference.Tensor {
	img := make([]float32, 3*48*192)
	for i := range img {
		img[i] = float32(math.Sin(float64(i)/13)) * 0.8
	}
	return []inference.Tensor{{Name: "x", DataType: inference.FP32, Shape: []int64{1, 3, 48, 192}, Data: f32le(img...)}}
}

// inferAndCompare runs inputs through the node over HTTP (binary in, binary
// out) and checks the outputs byte for byte against a raw onnxruntime_go
// run of the sample model file. It returns the version that answered.
func inferAndCompare(t testing.TB, url, model, sample string, inputs []inference.Tensor) string {
	t.Helper()
	want := inferencetest.RawRun(t, inferencetest.ModelPath(t, sample), inputs)
	resp := inferResponse(t, url, model, inputs)
	if resp.ModelName != model || len(resp.Outputs) != len(want) {
		t.Fatalf("infer %s: model %q with %d outputs, want %d", model, resp.ModelName, len(resp.Outputs), len(want))
	}
	for i, o := range resp.Outputs {
		if o.Name != want[i].Name || !bytes.Equal(o.Raw, want[i].Data) {
			t.Errorf("infer %s: output %s differs from the raw onnxruntime_go run", model, o.Name)
		}
	}
	return resp.ModelVersion
}

// inferResponse runs inputs through the node over HTTP (binary in, binary
// out) and returns the parsed response; a status other than 200 fails t.
func inferResponse(t testing.TB, url, model string, inputs []inference.Tensor) kservetest.Response {
	t.Helper()
	body, n := binaryRequest(t, "cmp", inputs, true)
	code, hdr, got := call(t, "POST", url+"/v2/models/"+model+"/infer", http.Header{headerContentLength: {strconv.Itoa(n)}}, body)
	if code != http.StatusOK {
		t.Fatalf("infer %s: status %d: %s", model, code, got)
	}
	return parseResponse(t, hdr, got)
}

// adminModel is GET /admin/models/{model}.
func adminModel(t testing.TB, url, model string) models.ModelInfo {
	t.Helper()
	code, _, body := call(t, "GET", url+"/admin/models/"+model, nil, nil)
	if code != http.StatusOK {
		t.Fatalf("GET /admin/models/%s: %d %s", model, code, body)
	}
	var mi models.ModelInfo
	if err := json.Unmarshal(body, &mi); err != nil {
		t.Fatal(err)
	}
	return mi
}

func versionOf(mi models.ModelInfo, version string) (models.VersionInfo, bool) {
	for _, v := range mi.Versions {
		if v.Version == version {
			return v, true
		}
	}
	return models.VersionInfo{}, false
}

// TestNodeServesRepositoryAndStops: New → Run → ready → inference over HTTP
// gives the raw ONNX Runtime numbers → cancel → Run returns
// context.Canceled, readiness is false, the port is closed, and Close is
// idempotent.
func TestNodeServesRepositoryAndStops(t *testing.T) {
	repo := t.TempDir()
	addToRepo(t, repo, "silero_vad", "1", modelBytes(t, "silero_vad", ""))
	addToRepo(t, repo, "ppocr_cls", "1", modelBytes(t, "ppocr_cls", ""))
	n := startNode(t, testConfig(t, t.TempDir(), repo))

	if v := inferAndCompare(t, n.url, "silero_vad", "silero_vad", sileroInputs()); v != "1" {
		t.Errorf("silero_vad answered as version %q", v)
	}
	if v := inferAndCompare(t, n.url, "ppocr_cls", "ppocr_cls", clsInput()); v != "1" {
		t.Errorf("ppocr_cls answered as version %q", v)
	}
	for _, name := range []string{"silero_vad", "ppocr_cls"} {
		if mi := adminModel(t, n.url, name); mi.Active != "1" {
			t.Errorf("%s: store Active %q, want 1", name, mi.Active)
		}
	}

	n.stop(t) // checks Run's context.Canceled and the first Close
	if err := n.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if resp, err := http.Get(n.url + "/v2/health/live"); err == nil {
		resp.Body.Close()
		t.Errorf("a request after shutdown got %d", resp.StatusCode)
	}
}

// TestNodeBootsOfflineFromStore: a node that imported a repository once
// serves every Active version from its store on the next boot, with the
// repository gone (and no network configured at all).
func TestNodeBootsOfflineFromStore(t *testing.T) {
	repo, data := t.TempDir(), t.TempDir()
	addToRepo(t, repo, "silero_vad", "1", modelBytes(t, "silero_vad", ""))
	addToRepo(t, repo, "ppocr_cls", "7", modelBytes(t, "ppocr_cls", ""))
	first := startNode(t, testConfig(t, data, repo))
	first.stop(t)
	if err := os.RemoveAll(repo); err != nil {
		t.Fatal(err)
	}

	n := startNode(t, testConfig(t, data, ""))
	if v := inferAndCompare(t, n.url, "silero_vad", "silero_vad", sileroInputs()); v != "1" {
		t.Errorf("silero_vad answered as version %q", v)
	}
	if v := inferAndCompare(t, n.url, "ppocr_cls", "ppocr_cls", clsInput()); v != "7" {
		t.Errorf("ppocr_cls answered as version %q", v)
	}
}

// TestNodeBootFallsBackFromBadActive: the Active version's blob is damaged
// on disk while the node is down; at the next boot that version is Failed
// and the Previous one serves (store state through /admin, and an infer).
func TestNodeBootFallsBackFromBadActive(t *testing.T) {
	for _, tc := range []struct {
		name       string
		bootVerify string
		damage     func(t *testing.T, path string)
		reason     models.Reason
	}{
		{"bit flip caught by the re-hash of Active blobs", "active", func(t *testing.T, p string) {
			flipByte(t, p, -1)
		}, models.ReasonChecksumMismatch},
		{"truncation caught by the size check", "size", func(t *testing.T, p string) {
			if err := os.Truncate(p, 1000); err != nil {
				t.Fatal(err)
			}
		}, ""}, // a size mismatch: the reason is the blob store's to choose
		{"unparseable model that passes the size check fails to load", "size", func(t *testing.T, p string) {
			flipByte(t, p, 0) // the first protobuf tag: ONNX Runtime cannot parse the file
		}, models.ReasonLoadError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo, data := t.TempDir(), t.TempDir()
			// Boot 1 serves version 1; boot 2 finds version 2 in the
			// repository and activates it, so 1 is Previous (Retired).
			addToRepo(t, repo, "silero_vad", "1", modelBytes(t, "silero_vad", ""))
			startNode(t, testConfig(t, data, repo)).stop(t)
			addToRepo(t, repo, "silero_vad", "2", modelBytes(t, "silero_vad", "v2"))
			n := startNode(t, testConfig(t, data, repo))
			mi := adminModel(t, n.url, "silero_vad")
			if mi.Active != "2" || mi.Previous != "1" {
				t.Fatalf("after the upgrade: active %q previous %q, want 2 and 1", mi.Active, mi.Previous)
			}
			v2, _ := versionOf(mi, "2")
			n.stop(t)

			tc.damage(t, filepath.Join(data, "store", "blobs", "sha256", v2.Manifest.Files[0].SHA256))
			cfg := testConfig(t, data, "")
			cfg.Store.BootVerify = tc.bootVerify
			n = startNode(t, cfg)
			mi = adminModel(t, n.url, "silero_vad")
			v2, _ = versionOf(mi, "2")
			if mi.Active != "1" || v2.State != models.Failed || (tc.reason != "" && v2.Reason != tc.reason) {
				t.Errorf("after the damage: active %q, version 2 %s(%s) %q; want active 1, version 2 Failed(%s)",
					mi.Active, v2.State, v2.Reason, v2.Detail, tc.reason)
			}
			if v := inferAndCompare(t, n.url, "silero_vad", "silero_vad", sileroInputs()); v != "1" {
				t.Errorf("answered as version %q, want 1", v)
			}
		})
	}
}

// flipByte inverts one byte of the file at path: at offset at, or in the
// middle of the file when at is negative.
func flipByte(t *testing.T, path string, at int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if at < 0 {
		st, err := f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		at = st.Size() / 2
	}
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xFF
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
}

// TestNewFailsCleanly: a start-up that fails part-way returns an error and
// leaves nothing open (the same data dir opens again at once).
func TestNewFailsCleanly(t *testing.T) {
	data := t.TempDir()
	cfg := testConfig(t, data, filepath.Join(t.TempDir(), "absent"))
	if n, err := newNode(context.Background(), cfg, testLogger(t), inferencetest.Env(t)); err == nil {
		n.Close()
		t.Fatal("New accepted a model repository that does not exist")
	}
	taken := startNode(t, testConfig(t, data, ""))
	cfg = testConfig(t, t.TempDir(), "")
	cfg.HTTPAddr = taken.Addr()
	if n, err := newNode(context.Background(), cfg, testLogger(t), inferencetest.Env(t)); err == nil {
		n.Close()
		t.Fatal("New accepted an address in use")
	} else if !bytes.Contains([]byte(err.Error()), []byte("http_addr")) {
		t.Errorf("error %q does not name http_addr", err)
	}
}
