package kserve

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/errdefs"
	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
	"github.com/edgeai/edge-node/node/kserve/kservetest"
)

// testBackend serves real inference.Sessions by name and version. It is a
// lookup table, not a stand-in for ONNX Runtime: every Run is a real one.
type testBackend struct {
	models      map[string]*inference.Session // "name" (default version) and "name/version"
	unavailable map[string]bool               // names that answer ErrUnavailable
	ready       bool
}

func (b *testBackend) Acquire(model, version string) (inference.Model, func(), error) {
	if b.unavailable[model] {
		return nil, nil, fmt.Errorf("model %q is loading: %w", model, inference.ErrUnavailable)
	}
	key := model
	if version != "" {
		key += "/" + version
	}
	s, ok := b.models[key]
	if !ok {
		// inference.Router's wording (Triton's).
		if version != "" && b.models[model] != nil {
			return nil, nil, errdefs.Sentinel(inference.ErrNotFound, "Request for unknown model: '"+model+"' version "+version+" is not found")
		}
		return nil, nil, errdefs.Sentinel(inference.ErrNotFound, "Request for unknown model: '"+model+"' is not found")
	}
	return s, func() {}, nil
}

func (b *testBackend) Ready() bool { return b.ready }

func (b *testBackend) Index(context.Context) []RepositoryEntry {
	var out []RepositoryEntry
	for k, s := range b.models {
		if strings.Contains(k, "/") {
			out = append(out, RepositoryEntry{Name: s.Name(), Version: s.Version(), State: "READY"})
		}
	}
	out = append(out, RepositoryEntry{Name: "loading", Version: "3", State: "LOADING", Reason: "warming up"})
	return out
}

var (
	sessionsOnce sync.Once
	sessions     map[string]*inference.Session
)

// testSessions loads silero_vad and ppocr_det once per test process (they
// are closed by the process exit, as inferencetest's Environment is).
func testSessions(t testing.TB) map[string]*inference.Session {
	t.Helper()
	sessionsOnce.Do(func() {
		env := inferencetest.Env(t)
		sessions = map[string]*inference.Session{}
		for _, name := range []string{"silero_vad", "ppocr_det"} {
			s, err := env.Load(context.Background(), inference.LoadSpec{
				Model: name, Version: "1", Path: inferencetest.ModelPath(t, name),
				Config: inference.SessionConfig{IntraOpThreads: 1},
			})
			if err != nil {
				t.Fatalf("load %s: %v", name, err)
			}
			sessions[name] = s
		}
	})
	if sessions == nil {
		t.Fatal("sessions failed to load in an earlier test")
	}
	return sessions
}

func newTestBackend(t testing.TB) *testBackend {
	b := &testBackend{models: map[string]*inference.Session{}, unavailable: map[string]bool{"loading": true}, ready: true}
	for name, s := range testSessions(t) {
		b.models[name] = s
		b.models[name+"/1"] = s
	}
	return b
}

func newTestHandler(t testing.TB, b Backend, mod func(*Options)) (*Handler, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts := DefaultOptions()
	opts.Registerer = reg
	opts.MaxBodyBytes = 32 << 20
	if mod != nil {
		mod(&opts)
	}
	h, err := NewHandler(b, zerolog.Nop(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return h, reg
}

func do(h http.Handler, method, path string, header http.Header, body []byte) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, bytes.NewReader(body))
	for k, v := range header {
		r.Header[k] = v
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestHealthAndMetadata(t *testing.T) {
	b := newTestBackend(t)
	h, _ := newTestHandler(t, b, nil)
	for _, tc := range []struct {
		method, path string
		status       int
		body         string // substring of the body
	}{
		{"GET", "/v2/health/live", 200, ""},
		{"GET", "/v2/health/ready", 200, ""},
		{"GET", "/v2", 200, `"extensions":["binary_tensor_data","model_configuration","model_repository"]`},
		{"GET", "/v2/models/silero_vad", 200, `"inputs":[{"name":"input","datatype":"FP32","shape":[-1,-1]},{"name":"sr","datatype":"INT64","shape":[]}`},
		{"GET", "/v2/models/silero_vad", 200, `"versions":["1"],"platform":"onnxruntime_onnx"`},
		{"GET", "/v2/models/ppocr_det/versions/1", 200, `"outputs":[{"name":"sigmoid_0.tmp_0","datatype":"FP32","shape":[-1,1,-1,-1]}]`},
		{"GET", "/v2/models/silero_vad/ready", 200, `{"name":"silero_vad","ready":true}`},
		{"GET", "/v2/models/silero_vad/versions/1/ready", 200, `"ready":true`},
		{"GET", "/v2/models/loading/ready", 503, `"ready":false`},
		{"GET", "/v2/models/nope", 404, `{"error":"Request for unknown model: 'nope' is not found"}`},
		{"GET", "/v2/models/silero_vad/versions/9", 404, `version 9 is not found`},
		{"GET", "/v2/models/nope/ready", 404, `"error"`},
		{"POST", "/v2/repository/index", 200, `"state":"LOADING","reason":"warming up"`},
		{"GET", "/v2/nothing/here", 404, `no route for GET /v2/nothing/here`},
	} {
		w := do(h, tc.method, tc.path, nil, nil)
		if w.Code != tc.status || !strings.Contains(w.Body.String(), tc.body) {
			t.Errorf("%s %s: %d %s, want %d and %q", tc.method, tc.path, w.Code, w.Body, tc.status, tc.body)
		}
	}
	w := do(h, "POST", "/v2/repository/index", nil, []byte(`{"ready":true}`))
	if strings.Contains(w.Body.String(), "LOADING") || !strings.Contains(w.Body.String(), "silero_vad") {
		t.Errorf("index with ready=true: %s", w.Body)
	}
	b.ready = false
	if w := do(h, "GET", "/v2/health/ready", nil, nil); w.Code != 503 {
		t.Errorf("ready while not ready: %d", w.Code)
	}
}

// indexCtxBackend records the context Index is called with.
type indexCtxBackend struct {
	*testBackend
	got context.Context
}

func (b *indexCtxBackend) Index(ctx context.Context) []RepositoryEntry {
	b.got = ctx
	return b.testBackend.Index(ctx)
}

// Index is called with the request's context (so a slow listing stops
// when its client goes away), from the index and model metadata routes.
func TestIndexGetsTheRequestContext(t *testing.T) {
	b := &indexCtxBackend{testBackend: newTestBackend(t)}
	h, _ := newTestHandler(t, b, nil)
	type key struct{}
	for _, route := range []struct{ method, path string }{
		{"POST", "/v2/repository/index"}, {"GET", "/v2/models/silero_vad"},
	} {
		b.got = nil
		r := httptest.NewRequest(route.method, route.path, nil)
		r = r.WithContext(context.WithValue(r.Context(), key{}, route.path))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 200 || b.got == nil || b.got.Value(key{}) != route.path {
			t.Errorf("%s %s: status %d, Index got context %v", route.method, route.path, w.Code, b.got)
		}
	}
}

// The handler tags its log lines component=kserve, once: its caller hands
// it a logger without a component.
func TestLogsItsComponentOnce(t *testing.T) {
	var buf bytes.Buffer
	opts := DefaultOptions()
	opts.Registerer = prometheus.NewRegistry()
	h, err := NewHandler(newTestBackend(t), zerolog.New(&buf), opts)
	if err != nil {
		t.Fatal(err)
	}
	do(h, "GET", "/v2/nothing/here", nil, nil)
	line := buf.String()
	if strings.Count(line, `"component"`) != 1 || !strings.Contains(line, `"component":"kserve"`) {
		t.Errorf("log line %q: want exactly one component, kserve", line)
	}
}

// A request whose context is already done is 503, counted under reason
// "unavailable" (the session wraps the context's error in ErrUnavailable;
// errdefs maps a bare context error the same way).
func TestInferWithDoneContextIsUnavailable(t *testing.T) {
	h, reg := newTestHandler(t, newTestBackend(t), nil)
	body := kservetest.JSONRequest(t, "", kservetest.SileroInputs(), nil, false)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := httptest.NewRequest("POST", "/v2/models/silero_vad/infer", bytes.NewReader(body)).WithContext(ctx)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Errorf("status %d (Retry-After %q): %s", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	want := `
# HELP edge_inference_rejected_requests_total Requests of any route rejected with an error, by reason.
# TYPE edge_inference_rejected_requests_total counter
edge_inference_rejected_requests_total{reason="unavailable"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "edge_inference_rejected_requests_total"); err != nil {
		t.Error(err)
	}
}

// exhaustedAllocator is an Allocator whose pool is empty, as the pinned
// pool's is under load: Alloc fails with ErrUnavailable.
type exhaustedAllocator struct{}

func (exhaustedAllocator) Alloc(ctx context.Context, n int) ([]byte, error) {
	return nil, fmt.Errorf("pinned pool: no buffer of %d bytes free: %w", n, inference.ErrUnavailable)
}

// A table of bad requests against the real handler and real models: each
// gets its status and a message that names the problem, is counted, and the
// handler keeps serving.
func TestInferRejectsBadRequests(t *testing.T) {
	b := newTestBackend(t)
	h, reg := newTestHandler(t, b, func(o *Options) { o.MaxBodyBytes = 1 << 20 })
	hExhausted, _ := newTestHandler(t, b, func(o *Options) {
		o.NewAllocator = func() (inference.Allocator, func()) { return exhaustedAllocator{}, func() {} }
	})
	good := kservetest.JSONRequest(t, "ok", kservetest.SileroInputs(), nil, false)
	goodBin, goodHL := kservetest.BinaryRequest(t, "", kservetest.SileroInputs(), false)
	hl := func(n int) http.Header { return http.Header{headerContentLength: {strconv.Itoa(n)}} }
	replace := func(body []byte, old, new string) []byte {
		if !bytes.Contains(body, []byte(old)) {
			t.Fatalf("test body has no %q", old)
		}
		return bytes.Replace(body, []byte(old), []byte(new), 1)
	}
	silero := "/v2/models/silero_vad/infer"
	for _, tc := range []struct {
		name    string
		handler http.Handler
		method  string
		path    string
		header  http.Header
		body    []byte
		status  int
		msg     string
	}{
		{"unknown model", h, "POST", "/v2/models/nope/infer", nil, good, 404, `Request for unknown model: 'nope' is not found`},
		{"unknown version", h, "POST", "/v2/models/silero_vad/versions/7/infer", nil, good, 404, `Request for unknown model: 'silero_vad' version 7 is not found`},
		{"model loading", h, "POST", "/v2/models/loading/infer", nil, good, 503, "is loading"},
		{"buffers exhausted", hExhausted, "POST", silero, nil, good, 503, "no buffer of"},
		{"GET on infer", h, "GET", silero, nil, nil, 405, "GET is not allowed on /v2/models/silero_vad/infer (use POST)"},
		{"body over limit", h, "POST", silero, nil, bytes.Repeat([]byte(" "), 2<<20), 413, "larger than the limit of 1048576 bytes"},
		{"empty body", h, "POST", silero, nil, nil, 400, "ends in the middle"},
		{"invalid JSON", h, "POST", silero, nil, []byte(`{"inputs":[{"name":}]}`), 400, "invalid JSON"},
		{"trailing garbage", h, "POST", silero, nil, append(append([]byte{}, good...), "}}"...), 400, "after the request's JSON object"},
		{"wrong datatype", h, "POST", silero, nil, replace(good, `"datatype":"INT64"`, `"datatype":"INT32"`), 400, `input "sr": datatype INT32 does not match the model's INT64`},
		{"wrong shape", h, "POST", silero, nil, replace(good, `"shape":[2,1,64]`, `"shape":[3,1,64]`), 400, "shape [3 1 64] does not match the model's [2 -1 64]"},
		{"negative dim", h, "POST", silero, nil, replace(good, `"shape":[1,512]`, `"shape":[-1,512]`), 400, "dimension 0 is -1"},
		{"overflowing dims", h, "POST", silero, nil, replace(good, `"shape":[1,512]`, `"shape":[2,9223372036854775807]`), 400, "overflows"},
		{"data shorter than shape", h, "POST", silero, nil, replace(good, `"shape":[1,512]`, `"shape":[1,513]`), 400, `input "input": "data" has 512 elements but shape [1 513] needs 513`},
		{"missing input", h, "POST", silero, nil, replace(good, `{"name":"sr","shape":[],"datatype":"INT64","data":[16000]},`, ``), 400, `missing input "sr"`},
		{"duplicate input", h, "POST", silero, nil, replace(good, `"name":"sr"`, `"name":"input"`), 400, `input "input" appears twice`},
		{"unknown input", h, "POST", silero, nil, replace(good, `"name":"sr"`, `"name":"rate"`), 400, `unknown input "rate"`},
		{"unknown output", h, "POST", silero, nil, replace(good, `"id":"ok"`, `"id":"ok","outputs":[{"name":"prob"}]`), 400, `unknown output "prob"`},
		{"classification", h, "POST", silero, nil, replace(good, `"id":"ok"`, `"id":"ok","outputs":[{"name":"output","parameters":{"classification":2}}]`), 501, "classification"},
		{"header not numeric", h, "POST", silero, http.Header{headerContentLength: {"12a"}}, goodBin, 400, `Inference-Header-Content-Length "12a" is not a non-negative integer`},
		{"header negative", h, "POST", silero, hl(-5), goodBin, 400, "is not a non-negative integer"},
		{"header past body", h, "POST", silero, hl(len(goodBin) + 1), goodBin, 400, fmt.Sprintf("Inference-Header-Content-Length %d is past the end of the body (%d bytes)", len(goodBin)+1, len(goodBin))},
		{"header too short", h, "POST", silero, hl(goodHL - 1), goodBin, 400, "invalid JSON"},
		{"binary size mismatch", h, "POST", silero, hl(goodHL), replace(goodBin, `"binary_data_size":2048`, `"binary_data_size":2044`), 400, `input "input": binary_data_size is 2044 but FP32 shape [1 512] needs 2048 bytes`},
		{"binary truncated", h, "POST", silero, hl(goodHL), goodBin[:len(goodBin)-10], 400, `input "c": binary_data_size 512 is past the end of the body (502 bytes left)`},
		{"binary trailing", h, "POST", silero, hl(goodHL), append(append([]byte{}, goodBin...), 0), 400, "bytes after the last tensor"},
		{"binary without header", h, "POST", silero, nil, goodBin, 400, "after the request's JSON object"},
		{"index: ready not a bool", h, "POST", "/v2/repository/index", nil, []byte(`{"ready":"yes"}`), 400, "invalid repository index request"},
		{"index: not JSON", h, "POST", "/v2/repository/index", nil, []byte(`ready`), 400, "invalid repository index request"},
		{"index: over 64 KiB", h, "POST", "/v2/repository/index", nil, bytes.Repeat([]byte(" "), 65<<10), 413, "larger than the limit of 65536 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := do(tc.handler, tc.method, tc.path, tc.header, tc.body)
			if w.Code != tc.status {
				t.Fatalf("status %d (%s), want %d", w.Code, w.Body, tc.status)
			}
			if tc.msg == "" {
				return
			}
			var e struct{ Error string }
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
				t.Fatalf("error body %q: %v", w.Body, err)
			}
			if !strings.Contains(e.Error, tc.msg) {
				t.Fatalf("error %q does not contain %q", e.Error, tc.msg)
			}
			if got := w.Header().Get("Retry-After"); (tc.status == 503) != (got != "") {
				t.Errorf("Retry-After %q with status %d", got, tc.status)
			}
		})
	}
	// Still serving.
	if w := do(h, "POST", silero, nil, good); w.Code != 200 {
		t.Fatalf("good request after the bad ones: %d %s", w.Code, w.Body)
	}
	if got := testutil.ToFloat64(h.metrics.rejected.WithLabelValues(reasonInput)); got < 5 {
		t.Errorf("rejected{reason=input} = %v, want at least 5", got)
	}
	if got := testutil.ToFloat64(h.metrics.success.WithLabelValues("silero_vad", "1")); got != 1 {
		t.Errorf("success{silero_vad,1} = %v, want 1", got)
	}
	for _, name := range []string{"edge_inference_request_duration_seconds", "edge_inference_queue_duration_seconds",
		"edge_inference_compute_input_duration_seconds", "edge_inference_compute_infer_duration_seconds",
		"edge_inference_compute_output_duration_seconds", "edge_inference_request_bytes_total"} {
		if n, err := testutil.GatherAndCount(reg, name); err != nil || n != 1 {
			t.Errorf("%s: %d series, %v; want 1 (silero_vad/1)", name, n, err)
		}
	}
}

// Both sample models through the handler, with JSON and binary bodies and
// JSON and binary outputs, give the same bytes as a raw onnxruntime_go run.
func TestInferMatchesRawOnnxRuntime(t *testing.T) {
	b := newTestBackend(t)
	h, _ := newTestHandler(t, b, nil)
	for _, model := range []struct {
		name   string
		inputs []inference.Tensor
	}{
		{"silero_vad", kservetest.SileroInputs()},
		{"ppocr_det", kservetest.DetInput(96)},
	} {
		want := inferencetest.RawRun(t, inferencetest.ModelPath(t, model.name), model.inputs)
		for _, mode := range []struct {
			name                string
			binaryIn, binaryOut bool
		}{{"json", false, false}, {"json in, binary out", false, true}, {"binary", true, true}, {"binary in, json out", true, false}} {
			t.Run(model.name+"/"+mode.name, func(t *testing.T) {
				var body []byte
				header := http.Header{}
				if mode.binaryIn {
					var n int
					body, n = kservetest.BinaryRequest(t, "req-1", model.inputs, mode.binaryOut)
					header.Set(headerContentLength, strconv.Itoa(n))
				} else {
					body = kservetest.JSONRequest(t, "req-1", model.inputs, nil, mode.binaryOut)
				}
				w := do(h, "POST", "/v2/models/"+model.name+"/infer", header, body)
				if w.Code != 200 {
					t.Fatalf("status %d: %s", w.Code, w.Body)
				}
				resp := kservetest.ParseResponse(t, w.Header(), w.Body.Bytes())
				if resp.ID != "req-1" || resp.ModelName != model.name || resp.ModelVersion != "1" {
					t.Errorf("id %q model %q version %q", resp.ID, resp.ModelName, resp.ModelVersion)
				}
				if len(resp.Outputs) != len(want) {
					t.Fatalf("%d outputs, want %d", len(resp.Outputs), len(want))
				}
				for i, o := range resp.Outputs {
					if o.Name != want[i].Name || fmt.Sprint(o.Shape) != fmt.Sprint(want[i].Shape) {
						t.Errorf("output %d: %s %v, want %s %v", i, o.Name, o.Shape, want[i].Name, want[i].Shape)
					}
					if !bytes.Equal(o.Raw, want[i].Data) {
						t.Errorf("output %s differs from the raw onnxruntime_go run", o.Name)
					}
				}
			})
		}
	}
}

// Requested outputs are respected, in the order asked, with per-output
// binary_data overriding the request's binary_data_output.
func TestInferRequestedOutputs(t *testing.T) {
	b := newTestBackend(t)
	h, _ := newTestHandler(t, b, nil)
	body := kservetest.JSONRequest(t, "x", kservetest.SileroInputs(), []string{"cn", "output"}, true)
	body = bytes.Replace(body, []byte(`{"name":"output"}`), []byte(`{"name":"output","parameters":{"binary_data":false}}`), 1)
	w := do(h, "POST", "/v2/models/silero_vad/versions/1/infer", nil, body)
	if w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	resp := kservetest.ParseResponse(t, w.Header(), w.Body.Bytes())
	if len(resp.Outputs) != 2 || resp.Outputs[0].Name != "cn" || resp.Outputs[1].Name != "output" {
		t.Fatalf("outputs %+v", resp.Outputs)
	}
	if resp.Outputs[0].Parameters.BinaryDataSize == nil || resp.Outputs[1].Parameters.BinaryDataSize != nil {
		t.Errorf("cn should be binary and output JSON: %+v", resp.Outputs)
	}
	if p := kservetest.F32s(resp.Outputs[1].Raw); len(p) != 1 || p[0] < 0 || p[0] > 1 {
		t.Errorf("speech probability %v", p)
	}
}

// A real loopback server answers the binary round trip too (headers and
// Content-Length as a client sees them).
func TestInferOverLoopback(t *testing.T) {
	b := newTestBackend(t)
	h, _ := newTestHandler(t, b, nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	body, n := kservetest.BinaryRequest(t, "", kservetest.SileroInputs(), true)
	req, _ := http.NewRequest("POST", srv.URL+"/v2/models/silero_vad/infer", bytes.NewReader(body))
	req.Header.Set(headerContentLength, strconv.Itoa(n))
	// Go's transport asks for gzip unless told otherwise; identity first.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(got)) {
		t.Fatalf("status %d, Content-Length %d for %d bytes", resp.StatusCode, resp.ContentLength, len(got))
	}
	out := kservetest.ParseResponse(t, resp.Header, got)
	if len(out.Outputs) != 3 {
		t.Fatalf("%d outputs", len(out.Outputs))
	}
	// A default Go client gets the same response gzip'd, decompressed by
	// its transport.
	req, _ = http.NewRequest("POST", srv.URL+"/v2/models/silero_vad/infer", bytes.NewReader(body))
	req.Header.Set(headerContentLength, strconv.Itoa(n))
	resp2, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	got2, err := io.ReadAll(resp2.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !resp2.Uncompressed || !bytes.Equal(got2, got) {
		t.Fatalf("default client: uncompressed by the transport %v, same body %v", resp2.Uncompressed, bytes.Equal(got2, got))
	}
}

// paramsBackend answers ModelParameters for silero_vad/1 only.
type paramsBackend struct {
	*testBackend
	asked []string
}

func (b *paramsBackend) ModelParameters(_ context.Context, model, version string) map[string]string {
	b.asked = append(b.asked, model+"/"+version)
	if model == "silero_vad" && version == "1" {
		return map[string]string{"training_run": "run-7", "metric.accuracy": "0.9"}
	}
	return nil
}

// A backend that implements ModelParameterizer gets its parameters into
// the model metadata of the version the request resolved to; without
// parameters the field is absent.
func TestModelMetadataParameters(t *testing.T) {
	b := &paramsBackend{testBackend: newTestBackend(t)}
	h, _ := newTestHandler(t, b, nil)
	w := do(h, "GET", "/v2/models/silero_vad", nil, nil)
	var md struct {
		Parameters map[string]string `json:"parameters"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &md); err != nil || w.Code != 200 {
		t.Fatalf("status %d %s: %v", w.Code, w.Body, err)
	}
	if md.Parameters["training_run"] != "run-7" || md.Parameters["metric.accuracy"] != "0.9" || len(b.asked) != 1 || b.asked[0] != "silero_vad/1" {
		t.Errorf("parameters %v, asked for %v", md.Parameters, b.asked)
	}
	if w := do(h, "GET", "/v2/models/ppocr_det", nil, nil); w.Code != 200 || strings.Contains(w.Body.String(), "parameters") {
		t.Errorf("ppocr_det metadata %d: %s (no parameters expected)", w.Code, w.Body)
	}
}
