package tritongrpc

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
	"github.com/edgeai/edge-node/node/kserve/kservetest"
	pb "github.com/edgeai/edge-node/node/kserve/tritongrpc/inferencepb"
)

func loadBatchingSilero(t *testing.T, version string, d inference.DynamicBatching) *inference.Session {
	t.Helper()
	d.BatchDims = map[string]int{"h": 1, "c": 1, "hn": 1, "cn": 1}
	s, err := inferencetest.Env(t).Load(context.Background(), inference.LoadSpec{Model: "silero_vad", Version: version,
		Path: inferencetest.ModelPath(t, "silero_vad"), Config: inference.SessionConfig{IntraOpThreads: 1, DynamicBatching: &d}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Over gRPC, concurrent ModelInfer calls for a version with dynamic
// batching run as one batch with the outputs of a raw onnxruntime_go run;
// a request still queued at the timeout is UNAVAILABLE.
func TestModelInferDynamicBatching(t *testing.T) {
	b := newTestBackend(t)
	batched := loadBatchingSilero(t, "b", inference.DynamicBatching{MaxBatchSize: 4, MaxQueueDelay: time.Second})
	timing := loadBatchingSilero(t, "t", inference.DynamicBatching{MaxBatchSize: 4, MaxQueueDelay: time.Second, Timeout: 20 * time.Millisecond})
	for _, s := range []*inference.Session{batched, timing} {
		if err := b.Add(s, false); err != nil {
			t.Fatal(err)
		}
	}
	c := startServer(t, b, nil)
	want := inferencetest.RawRun(t, inferencetest.ModelPath(t, "silero_vad"), kservetest.SileroInputs())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			req := rawRequest("silero_vad", kservetest.SileroInputs())
			req.ModelVersion = "b"
			resp, err := c.ModelInfer(ctxT(t), req)
			if err != nil {
				t.Error(err)
				return
			}
			for i, o := range resp.Outputs {
				if o.Name != want[i].Name || !inferencetest.CloseF32(resp.RawOutputContents[i], want[i].Data) {
					t.Errorf("batched output %s differs from the raw onnxruntime_go run", o.Name)
				}
			}
		})
	}
	wg.Wait()
	if st, _ := batched.BatchStats(); st.Sizes[4] != 1 {
		t.Errorf("batch sizes %v, want one batch of 4", st.Sizes)
	}
	// Triton counts executions per model Run: the four requests were one.
	ms, err := c.ModelStatistics(ctxT(t), &pb.ModelStatisticsRequest{Name: "silero_vad", Version: "b"})
	if err != nil || len(ms.ModelStats) != 1 || ms.ModelStats[0].InferenceCount != 4 || ms.ModelStats[0].ExecutionCount != 1 {
		t.Errorf("statistics of the batched version: %v %v, want inference_count 4, execution_count 1", ms, err)
	}
	// The model configuration carries Triton's dynamic_batching block.
	cfg, err := c.ModelConfig(ctxT(t), &pb.ModelConfigRequest{Name: "silero_vad", Version: "t"})
	if d := cfg.GetConfig().GetDynamicBatching(); err != nil || d == nil || fmt.Sprint(d.PreferredBatchSize) != "[4]" ||
		d.MaxQueueDelayMicroseconds != 1e6 || d.DefaultQueuePolicy.GetDefaultTimeoutMicroseconds() != 20000 ||
		d.DefaultQueuePolicy.GetTimeoutAction() != pb.ModelQueuePolicy_REJECT || cfg.Config.MaxBatchSize != 4 {
		t.Errorf("model config of a batching version: %v %v", cfg, err)
	}
	req := rawRequest("silero_vad", kservetest.SileroInputs())
	req.ModelVersion = "t"
	if _, err := c.ModelInfer(ctxT(t), req); status.Code(err) != codes.Unavailable {
		t.Errorf("queue timeout: %v, want UNAVAILABLE", err)
	}
}
