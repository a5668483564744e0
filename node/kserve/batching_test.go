package kserve

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
	"github.com/edgeai/edge-node/node/kserve/kservetest"
)

func loadSilero(t *testing.T, version string, d inference.DynamicBatching) *inference.Session {
	t.Helper()
	d.BatchDims = map[string]int{"h": 1, "c": 1, "hn": 1, "cn": 1}
	s, err := inferencetest.Env(t).Load(context.Background(), inference.LoadSpec{
		Model: "silero_vad", Version: version, Path: inferencetest.ModelPath(t, "silero_vad"),
		Config: inference.SessionConfig{IntraOpThreads: 1, DynamicBatching: &d},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Over REST, concurrent requests for a version with dynamic batching run
// as one batch and each gets the outputs an unbatched run gives it; a
// request still queued at the timeout is 503 with Retry-After.
func TestInferDynamicBatching(t *testing.T) {
	batched := loadSilero(t, "b", inference.DynamicBatching{MaxBatchSize: 4, MaxQueueDelay: time.Second})
	timing := loadSilero(t, "t", inference.DynamicBatching{MaxBatchSize: 4, MaxQueueDelay: time.Second, Timeout: 20 * time.Millisecond})
	h, _ := newTestHandler(t, newRouterBackend(t, batched, timing), nil)
	body, hl := kservetest.BinaryRequest(t, "", kservetest.SileroInputs(), true)
	header := http.Header{headerContentLength: {strconv.Itoa(hl)}, "Content-Type": {"application/octet-stream"}}

	ref := do(h, "POST", "/v2/models/silero_vad/versions/1/infer", header, body)
	if ref.Code != 200 {
		t.Fatalf("unbatched: %d %s", ref.Code, ref.Body)
	}
	want := kservetest.ParseResponse(t, ref.Header(), ref.Body.Bytes())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			w := do(h, "POST", "/v2/models/silero_vad/versions/b/infer", header, body)
			if w.Code != 200 {
				t.Errorf("batched: %d %s", w.Code, w.Body)
				return
			}
			got := kservetest.ParseResponse(t, w.Header(), w.Body.Bytes())
			for i, o := range got.Outputs {
				if !inferencetest.CloseF32(o.Raw, want.Outputs[i].Raw) || o.Name != want.Outputs[i].Name {
					t.Errorf("batched output %s differs from the unbatched one", o.Name)
				}
			}
		})
	}
	wg.Wait()
	if st, _ := batched.BatchStats(); st.Sizes[4] != 1 {
		t.Errorf("batch sizes %v, want one batch of 4", st.Sizes)
	}
	// Triton counts executions per model Run: the four requests were one.
	var st statsJSON
	getJSON(t, h, "/v2/models/silero_vad/versions/b/stats", 200, &st)
	if len(st.ModelStats) != 1 || st.ModelStats[0].InferenceCount != 4 || st.ModelStats[0].ExecutionCount != 1 {
		t.Errorf("statistics of the batched version: %+v, want inference_count 4, execution_count 1", st.ModelStats)
	}
	if n := testutil.ToFloat64(h.metrics.executions.WithLabelValues("silero_vad", "b")); n != 1 {
		t.Errorf("edge_inference_exec_count_total of the batched version: %v, want 1", n)
	}

	w := do(h, "POST", "/v2/models/silero_vad/versions/t/infer", header, body)
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Errorf("queue timeout: %d (Retry-After %q) %s", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
}
