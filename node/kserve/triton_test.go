package kserve

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/node/kserve/kservetest"
)

// A client that writes a whole 4.9 MB binary request before reading gets
// the 4xx answer and its message for every early error (unknown model,
// version, input, wrong datatype or shape): the node reads and discards the
// rest of the body first instead of closing on it.
func TestEarlyErrorReachesAClientThatWritesTheWholeBody(t *testing.T) {
	h, _ := newTestHandler(t, newTestBackend(t), nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	body, n := kservetest.BinaryRequest(t, "", kservetest.DetInput(640), false)
	if len(body) < 4_900_000 {
		t.Fatalf("test body is %d bytes, want ~4.9 MB", len(body))
	}
	hl := http.Header{headerContentLength: {fmt.Sprint(n)}}
	edit := func(old, new string) []byte {
		i := bytes.Index(body[:n], []byte(old))
		if i < 0 {
			t.Fatalf("request header has no %q", old)
		}
		out := append([]byte{}, body[:i]...)
		out = append(out, new...)
		out = append(out, body[i+len(old):]...)
		return out
	}
	hlOf := func(b []byte) http.Header {
		return http.Header{headerContentLength: {fmt.Sprint(n + len(b) - len(body))}}
	}
	for _, tc := range []struct {
		name, path string
		header     http.Header
		body       []byte
		status     int
		msg        string
	}{
		{"unknown model", "/v2/models/nope/infer", hl, body, 404, "Request for unknown model: 'nope' is not found"},
		{"unknown version", "/v2/models/ppocr_det/versions/9/infer", hl, body, 404, "Request for unknown model: 'ppocr_det' version 9 is not found"},
		{"wrong datatype", "/v2/models/ppocr_det/infer", nil, edit(`"FP32"`, `"FP16"`), 400, "datatype FP16"},
		{"wrong shape", "/v2/models/ppocr_det/infer", nil, edit(`[1,3,640,640]`, `[1,4,640,480]`), 400, "does not match the model's"},
		{"unknown input", "/v2/models/ppocr_det/infer", nil, edit(`"name":"x"`, `"name":"y"`), 400, `unknown input "y"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			header := tc.header
			if header == nil {
				header = hlOf(tc.body)
			}
			resp, got := kservetest.RawExchange(t, addr, tc.path, header, tc.body)
			var e struct{ Error string }
			if resp.StatusCode != tc.status || json.Unmarshal(got, &e) != nil || !strings.Contains(e.Error, tc.msg) {
				t.Fatalf("status %d body %q, want %d with %q", resp.StatusCode, got, tc.status, tc.msg)
			}
			if resp.Close {
				t.Errorf("connection closed after an error whose body was read: %v", resp.Header)
			}
		})
	}
}

// routerBackend serves through a real inference.Router (the node's
// request path below the serving owner): versions record statistics.
type routerBackend struct{ *inference.Router }

func (routerBackend) Ready() bool { return true }

func (b routerBackend) Index(context.Context) []RepositoryEntry {
	var out []RepositoryEntry
	for _, e := range b.Router.Index() {
		if e.State == inference.StateServing {
			out = append(out, RepositoryEntry{Name: e.Model, Version: e.Version, State: "READY"})
		}
	}
	return out
}

func newRouterBackend(t *testing.T, extra ...inference.Model) routerBackend {
	t.Helper()
	r := inference.NewRouter()
	for _, s := range testSessions(t) {
		if err := r.Add(s, true); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range extra {
		if err := r.Add(m, false); err != nil {
			t.Fatal(err)
		}
	}
	// Not closed: the sessions are shared by the package's tests.
	return routerBackend{r}
}

// batching is a real session whose configuration says it batches.
type batching struct{ *inference.Session }

func (b batching) Version() string { return "8" }
func (b batching) Config() inference.SessionConfig {
	c := b.Session.Config()
	c.MaxBatch, c.Instances = 8, 2
	return c
}

// dynBatching is a real session whose configuration says it batches
// dynamically, with silero_vad's state batched along dimension 1.
type dynBatching struct{ *inference.Session }

func (b dynBatching) Version() string { return "9" }
func (b dynBatching) Config() inference.SessionConfig {
	c := b.Session.Config()
	c.DynamicBatching = &inference.DynamicBatching{MaxBatchSize: 16, PreferredBatchSize: 8, MaxQueueDelay: 500 * time.Microsecond,
		Timeout: 50 * time.Millisecond, BatchDims: map[string]int{"h": 1, "c": 1, "hn": 1, "cn": 1}}
	return c
}

func getJSON(t *testing.T, h http.Handler, path string, status int, v any) {
	t.Helper()
	w := do(h, "GET", path, nil, nil)
	if w.Code != status {
		t.Fatalf("GET %s: %d %s, want %d", path, w.Code, w.Body, status)
	}
	if err := json.Unmarshal(w.Body.Bytes(), v); err != nil {
		t.Fatalf("GET %s: %v in %s", path, err, w.Body)
	}
}

// GET .../config answers Triton's model configuration: what perf_analyzer
// and Triton's image client read first.
func TestModelConfig(t *testing.T) {
	b := newRouterBackend(t, batching{testSessions(t)["ppocr_det"]}, dynBatching{testSessions(t)["silero_vad"]})
	h, _ := newTestHandler(t, b, nil)
	type tensor struct {
		Name     string  `json:"name"`
		DataType string  `json:"data_type"`
		Format   string  `json:"format"`
		Dims     []int64 `json:"dims"`
	}
	var cfg struct {
		Name          string         `json:"name"`
		Platform      string         `json:"platform"`
		Backend       string         `json:"backend"`
		MaxBatchSize  int            `json:"max_batch_size"`
		VersionPolicy map[string]any `json:"version_policy"`
		Input         []tensor       `json:"input"`
		Output        []tensor       `json:"output"`
		InstanceGroup []struct {
			Kind  string `json:"kind"`
			Count int    `json:"count"`
		} `json:"instance_group"`
	}
	getJSON(t, h, "/v2/models/silero_vad/config", 200, &cfg)
	got := fmt.Sprintf("%s %s %s %d %v %+v %+v", cfg.Name, cfg.Platform, cfg.Backend, cfg.MaxBatchSize, cfg.VersionPolicy, cfg.Input, cfg.InstanceGroup)
	want := "silero_vad onnxruntime_onnx onnxruntime 0 map[latest:map[num_versions:1]] [{Name:input DataType:TYPE_FP32 Format:FORMAT_NONE Dims:[-1 -1]} {Name:sr DataType:TYPE_INT64 Format:FORMAT_NONE Dims:[]} {Name:h DataType:TYPE_FP32 Format:FORMAT_NONE Dims:[2 -1 64]} {Name:c DataType:TYPE_FP32 Format:FORMAT_NONE Dims:[2 -1 64]}] [{Kind:KIND_CPU Count:1}]"
	if got != want {
		t.Errorf("silero_vad config\n got %s\nwant %s", got, want)
	}
	// Batching: dims without the batch dimension, as Triton gives them.
	getJSON(t, h, "/v2/models/ppocr_det/versions/8/config", 200, &cfg)
	if cfg.MaxBatchSize != 8 || fmt.Sprint(cfg.Input[0].Dims) != "[3 -1 -1]" || fmt.Sprint(cfg.Output[0].Dims) != "[1 -1 -1]" || cfg.InstanceGroup[0].Count != 2 {
		t.Errorf("batching ppocr_det config: %+v", cfg)
	}
	// Dynamic batching: Triton's dynamic_batching section; each tensor's
	// dims without its own batch dimension.
	var dyn struct {
		MaxBatchSize    int      `json:"max_batch_size"`
		Input           []tensor `json:"input"`
		DynamicBatching *struct {
			PreferredBatchSize        []int `json:"preferred_batch_size"`
			MaxQueueDelayMicroseconds int64 `json:"max_queue_delay_microseconds"`
			DefaultQueuePolicy        struct {
				TimeoutAction              string `json:"timeout_action"`
				DefaultTimeoutMicroseconds int64  `json:"default_timeout_microseconds"`
				MaxQueueSize               int    `json:"max_queue_size"`
			} `json:"default_queue_policy"`
		} `json:"dynamic_batching"`
	}
	getJSON(t, h, "/v2/models/silero_vad/versions/9/config", 200, &dyn)
	if d := dyn.DynamicBatching; dyn.MaxBatchSize != 16 || d == nil ||
		fmt.Sprintf("%v %d %+v", d.PreferredBatchSize, d.MaxQueueDelayMicroseconds, d.DefaultQueuePolicy) != "[8] 500 {TimeoutAction:REJECT DefaultTimeoutMicroseconds:50000 MaxQueueSize:256}" ||
		fmt.Sprint(dyn.Input[0].Dims, dyn.Input[1].Dims, dyn.Input[2].Dims) != "[-1] [] [2 64]" {
		t.Errorf("dynamic batching silero_vad config: %+v %+v", dyn, dyn.DynamicBatching)
	}
	dyn.DynamicBatching = nil
	getJSON(t, h, "/v2/models/silero_vad/config", 200, &dyn)
	if dyn.DynamicBatching != nil {
		t.Errorf("dynamic_batching without it configured: %+v", dyn.DynamicBatching)
	}
	var e struct{ Error string }
	getJSON(t, h, "/v2/models/nope/config", 404, &e)
	if e.Error != "Request for unknown model: 'nope' is not found" {
		t.Errorf("unknown model: %q", e.Error)
	}
	getJSON(t, h, "/v2/models/silero_vad/versions/4/config", 404, &e)
}

type statsJSON struct {
	ModelStats []struct {
		Name           string `json:"name"`
		Version        string `json:"version"`
		LastInference  int64  `json:"last_inference"`
		InferenceCount uint64 `json:"inference_count"`
		ExecutionCount uint64 `json:"execution_count"`
		InferenceStats map[string]struct {
			Count uint64 `json:"count"`
			NS    uint64 `json:"ns"`
		} `json:"inference_stats"`
	} `json:"model_stats"`
}

// Triton's statistics extension: per version, success and failure counts
// and times, the phases of successful requests, inference and execution
// counts and the last inference; and the matching Prometheus metrics.
func TestModelStatistics(t *testing.T) {
	b := newRouterBackend(t)
	h, reg := newTestHandler(t, b, nil)
	var st statsJSON
	getJSON(t, h, "/v2/models/silero_vad/stats", 200, &st)
	if len(st.ModelStats) != 1 || st.ModelStats[0].InferenceCount != 0 || st.ModelStats[0].LastInference != 0 {
		t.Fatalf("before traffic: %+v", st)
	}
	before := time.Now()
	good := kservetest.JSONRequest(t, "", kservetest.SileroInputs(), nil, false)
	for i := 0; i < 3; i++ {
		if w := do(h, "POST", "/v2/models/silero_vad/infer", nil, good); w.Code != 200 {
			t.Fatalf("infer: %d %s", w.Code, w.Body)
		}
	}
	bad := bytes.Replace(good, []byte(`"shape":[1,512]`), []byte(`"shape":[1,513]`), 1)
	if w := do(h, "POST", "/v2/models/silero_vad/versions/1/infer", nil, bad); w.Code != 400 {
		t.Fatalf("bad infer: %d %s", w.Code, w.Body)
	}
	for _, path := range []string{"/v2/models/silero_vad/stats", "/v2/models/silero_vad/versions/1/stats", "/v2/models/stats"} {
		getJSON(t, h, path, 200, &st)
		var found bool
		for _, ms := range st.ModelStats {
			if ms.Name != "silero_vad" {
				if ms.InferenceCount != 0 {
					t.Errorf("%s: %s has %d inferences", path, ms.Name, ms.InferenceCount)
				}
				continue
			}
			found = true
			is := ms.InferenceStats
			if ms.Version != "1" || ms.InferenceCount != 3 || ms.ExecutionCount != 3 || is["success"].Count != 3 || is["fail"].Count != 1 ||
				is["compute_infer"].Count != 3 || is["compute_input"].Count != 3 || is["queue"].Count != 3 || is["compute_output"].Count != 3 {
				t.Errorf("%s: %+v", path, ms)
			}
			if is["success"].NS < is["compute_infer"].NS || is["compute_infer"].NS == 0 || is["fail"].NS == 0 {
				t.Errorf("%s: times %+v", path, is)
			}
			if ms.LastInference < before.UnixMilli() || ms.LastInference > time.Now().UnixMilli() {
				t.Errorf("%s: last_inference %d not between %d and now", path, ms.LastInference, before.UnixMilli())
			}
		}
		if !found || (path == "/v2/models/stats" && len(st.ModelStats) != 2) {
			t.Errorf("%s: %+v", path, st)
		}
	}
	var e struct{ Error string }
	getJSON(t, h, "/v2/models/nope/stats", 404, &e)
	getJSON(t, h, "/v2/models/silero_vad/versions/9/stats", 404, &e)
	if e.Error != "Request for unknown model: 'silero_vad' version 9 is not found" {
		t.Errorf("unknown version: %q", e.Error)
	}
	if w := do(h, "POST", "/v2/models/stats", nil, nil); w.Code != 405 {
		t.Errorf("POST /v2/models/stats: %d", w.Code)
	}
	want := `
# HELP edge_inference_count_total Inferences performed by successful requests, a request counting its batch size (Triton: nv_inference_count).
# TYPE edge_inference_count_total counter
edge_inference_count_total{model="silero_vad",version="1"} 3
# HELP edge_inference_exec_count_total Model executions of successful requests, one per model Run: a dynamic batch of several requests counts once (batch sizes: edge_inference_batch_size) (Triton: nv_inference_exec_count).
# TYPE edge_inference_exec_count_total counter
edge_inference_exec_count_total{model="silero_vad",version="1"} 3
# HELP edge_inference_pending_requests Inference requests in progress: acquired a version and not yet answered (decoding, queued or running; Triton: nv_inference_pending_request_count).
# TYPE edge_inference_pending_requests gauge
edge_inference_pending_requests{model="silero_vad",version="1"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "edge_inference_count_total", "edge_inference_exec_count_total", "edge_inference_pending_requests"); err != nil {
		t.Error(err)
	}
	w := do(h, "GET", "/v2", nil, nil)
	if !strings.Contains(w.Body.String(), `"statistics"`) || !strings.Contains(w.Body.String(), `"model_configuration"`) {
		t.Errorf("GET /v2 does not advertise statistics and model_configuration: %s", w.Body)
	}
}
