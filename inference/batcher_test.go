package inference_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
)

// batchCase is one request of a batching test: its inputs and the outputs
// the same model gives it unbatched.
type batchCase struct {
	in   []inference.Tensor
	want []inference.Tensor
}

// runConcurrently runs every case on s at once and checks each result
// against its unbatched outputs.
func runConcurrently(t *testing.T, s *inference.Session, cases []batchCase) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(cases))
	for i, c := range cases {
		wg.Go(func() {
			got, err := s.Run(context.Background(), c.in, nil, inference.HeapAllocator{})
			if err != nil {
				errs[i] = err
				return
			}
			errs[i] = sameTensors(c.want, got)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("request %d: %v", i, err)
		}
	}
}

// sameTensors compares FP32 outputs to 1e-5 (a batched convolution may
// sum in another order) and everything else exactly.
func sameTensors(want, got []inference.Tensor) error {
	if len(want) != len(got) {
		return fmt.Errorf("%d outputs, want %d", len(got), len(want))
	}
	for i := range want {
		w, g := want[i], got[i]
		if w.Name != g.Name || w.DataType != g.DataType || fmt.Sprint(w.Shape) != fmt.Sprint(g.Shape) || len(w.Data) != len(g.Data) {
			return fmt.Errorf("output %s %v %v, want %s %v %v", g.Name, g.DataType, g.Shape, w.Name, w.DataType, w.Shape)
		}
		if w.DataType != inference.FP32 {
			if string(w.Data) != string(g.Data) {
				return fmt.Errorf("output %s differs", w.Name)
			}
			continue
		}
		for k := 0; k < len(w.Data); k += 4 {
			a := math.Float32frombits(binary.LittleEndian.Uint32(w.Data[k:]))
			b := math.Float32frombits(binary.LittleEndian.Uint32(g.Data[k:]))
			if math.Abs(float64(a-b)) > 1e-5 {
				return fmt.Errorf("output %s element %d is %v, unbatched %v", w.Name, k/4, b, a)
			}
		}
	}
	return nil
}

func loadBatching(t *testing.T, model string, d inference.DynamicBatching) *inference.Session {
	t.Helper()
	return load(t, inferencetest.ModelPath(t, model), inference.SessionConfig{IntraOpThreads: 1, DynamicBatching: &d})
}

func clsInput(n, w int64, seed uint32) []inference.Tensor {
	return []inference.Tensor{{Name: "x", DataType: inference.FP32, Shape: []int64{n, 3, 48, w}, Data: detFloats(int(n*3*48*w), seed)}}
}

func sileroBatchInput(seed uint32) []inference.Tensor {
	return []inference.Tensor{
		{Name: "input", DataType: inference.FP32, Shape: []int64{1, 512}, Data: detFloats(512, seed)},
		{Name: "sr", DataType: inference.Int64, Shape: []int64{}, Data: i64(16000)},
		{Name: "h", DataType: inference.FP32, Shape: []int64{2, 1, 64}, Data: detFloats(128, seed+1)},
		{Name: "c", DataType: inference.FP32, Shape: []int64{2, 1, 64}, Data: detFloats(128, seed+2)},
	}
}

// unbatched fills in each case's outputs from a session without batching.
func unbatched(t *testing.T, model string, ins ...[]inference.Tensor) []batchCase {
	t.Helper()
	ref := load(t, inferencetest.ModelPath(t, model), inference.SessionConfig{IntraOpThreads: 1})
	cases := make([]batchCase, len(ins))
	for i, in := range ins {
		want, err := ref.Run(context.Background(), in, nil, inference.HeapAllocator{})
		if err != nil {
			t.Fatalf("unbatched run %d: %v", i, err)
		}
		cases[i] = batchCase{in: in, want: want}
	}
	return cases
}

func batches(s *inference.Session) (runs, inferences uint64, biggest int) {
	st, _ := s.BatchStats()
	for n, c := range st.Sizes {
		runs += c
		inferences += uint64(n) * c
		if c > 0 {
			biggest = n
		}
	}
	return runs, inferences, biggest
}

func TestDynamicBatchingPPOCRCls(t *testing.T) {
	// Seven requests of one image and one of two, all 48×192, plus two at
	// another width, which cannot join them and form their own batch.
	var ins [][]inference.Tensor
	for i := range 7 {
		ins = append(ins, clsInput(1, 192, uint32(i)))
	}
	ins = append(ins, clsInput(2, 192, 99), clsInput(1, 100, 7), clsInput(1, 100, 8))
	cases := unbatched(t, "ppocr_cls", ins...)
	s := loadBatching(t, "ppocr_cls", inference.DynamicBatching{MaxBatchSize: 9, MaxQueueDelay: time.Second})
	runConcurrently(t, s, cases)
	runs, n, biggest := batches(s)
	if n != 11 || biggest < 2 {
		t.Errorf("%d runs of %d inferences, biggest batch %d: want 11 inferences, batches of more than one", runs, n, biggest)
	}
	t.Logf("%d runs for 10 requests (biggest batch %d)", runs, biggest)

	// The router exports the batch sizes and queue times.
	r := inference.NewRouter()
	if err := r.Add(s, true); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(r.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]*dto.Histogram{}
	for _, mf := range mfs {
		if n := mf.GetName(); strings.HasPrefix(n, "edge_inference_batch_") {
			found[n] = mf.GetMetric()[0].GetHistogram()
		}
	}
	if h := found["edge_inference_batch_size"]; h == nil || h.GetSampleCount() != runs || h.GetSampleSum() != 11 {
		t.Errorf("edge_inference_batch_size: %v, want %d runs of 11 inferences in all", h, runs)
	}
	if h := found["edge_inference_batch_queue_duration_seconds"]; h == nil || h.GetSampleCount() != 10 {
		t.Errorf("edge_inference_batch_queue_duration_seconds: %v, want 10 requests", h)
	}
}

func TestDynamicBatchingSileroVAD(t *testing.T) {
	var ins [][]inference.Tensor
	for i := range 6 {
		ins = append(ins, sileroBatchInput(uint32(10*i)))
	}
	cases := unbatched(t, "silero_vad", ins...)
	s := loadBatching(t, "silero_vad", inference.DynamicBatching{MaxBatchSize: 6, MaxQueueDelay: time.Second,
		BatchDims: map[string]int{"h": 1, "c": 1, "hn": 1, "cn": 1}})
	runConcurrently(t, s, cases)
	if _, n, biggest := batches(s); n != 6 || biggest < 2 {
		t.Errorf("%d inferences, biggest batch %d", n, biggest)
	}
	// A request alone runs as it is (a batch of one, on its own tensors).
	got, err := s.Run(context.Background(), cases[0].in, []string{"hn"}, inference.HeapAllocator{})
	if err != nil {
		t.Fatal(err)
	}
	if err := sameTensors(cases[0].want[1:2], got); err != nil {
		t.Error(err)
	}
}

func TestDynamicBatchingRejects(t *testing.T) {
	dims := map[string]int{"h": 1, "c": 1, "hn": 1, "cn": 1}
	s := loadBatching(t, "silero_vad", inference.DynamicBatching{MaxBatchSize: 2, BatchDims: dims})
	mismatch := sileroBatchInput(1)
	mismatch[2] = inference.Tensor{Name: "h", DataType: inference.FP32, Shape: []int64{2, 2, 64}, Data: detFloats(256, 3)}
	big := sileroBatchInput(1)
	big[0] = inference.Tensor{Name: "input", DataType: inference.FP32, Shape: []int64{3, 512}, Data: detFloats(3*512, 3)}
	big[2] = inference.Tensor{Name: "h", DataType: inference.FP32, Shape: []int64{2, 3, 64}, Data: detFloats(2*3*64, 4)}
	big[3] = inference.Tensor{Name: "c", DataType: inference.FP32, Shape: []int64{2, 3, 64}, Data: detFloats(2*3*64, 5)}
	for _, tc := range []struct {
		name string
		in   []inference.Tensor
		want string
	}{
		{"batch sizes differ", mismatch, `input "h" has batch size 2`},
		{"over max_batch_size", big, "batch size 3: want 1–2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Run(context.Background(), tc.in, nil, inference.HeapAllocator{})
			if !errors.Is(err, inference.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want ErrInvalidArgument saying %q", err, tc.want)
			}
		})
	}
}

func TestDynamicBatchingLoadRejects(t *testing.T) {
	for _, tc := range []struct {
		name, model string
		d           inference.DynamicBatching
		want        string
	}{
		{"unknown tensor", "silero_vad", inference.DynamicBatching{MaxBatchSize: 2, BatchDims: map[string]int{"h": 1, "c": 1, "hn": 1, "cn": 1, "state": 1}}, `names "state"`},
		{"fixed dimension", "ppocr_cls", inference.DynamicBatching{MaxBatchSize: 2, BatchDims: map[string]int{"x": 1}}, "fixed at 3"},
		{"past the rank", "ppocr_cls", inference.DynamicBatching{MaxBatchSize: 2, BatchDims: map[string]int{"x": 4}}, "has rank 4"},
		{"silero's state on dimension 0", "silero_vad", inference.DynamicBatching{MaxBatchSize: 2}, `dimension 0 of "h" is fixed at 2`},
		{"nothing batched", "ppocr_cls", inference.DynamicBatching{MaxBatchSize: 2, BatchDims: map[string]int{"x": -1}}, "needs an input and an output"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := inferencetest.Env(t).Load(context.Background(), inference.LoadSpec{Model: tc.model, Version: "1",
				Path: inferencetest.ModelPath(t, tc.model), Config: inference.SessionConfig{DynamicBatching: &tc.d}})
			if !errors.Is(err, inference.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want ErrInvalidArgument saying %q", err, tc.want)
			}
		})
	}
}

// waitQueued waits until n requests wait in s's batch queue.
func waitQueued(t *testing.T, s *inference.Session, n int) {
	t.Helper()
	for inference.BatchQueueLen(s) < n {
		time.Sleep(time.Millisecond)
	}
}

func TestDynamicBatchingQueueFull(t *testing.T) {
	// Two requests wait for the batch to fill (preferred 4, a second of
	// delay); the queue holds two, so a third is turned away at once.
	s := loadBatching(t, "ppocr_cls", inference.DynamicBatching{MaxBatchSize: 4, MaxQueueDelay: time.Second, MaxQueueSize: 2})
	cases := unbatched(t, "ppocr_cls", clsInput(1, 64, 1), clsInput(1, 64, 2))
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, c := range cases {
		wg.Go(func() {
			got, err := s.Run(context.Background(), c.in, nil, inference.HeapAllocator{})
			if err == nil {
				err = sameTensors(c.want, got)
			}
			errs[i] = err
		})
	}
	waitQueued(t, s, 2)
	_, err := s.Run(context.Background(), clsInput(1, 64, 3), nil, inference.HeapAllocator{})
	if !errors.Is(err, inference.ErrUnavailable) || !strings.Contains(err.Error(), "queue is full") {
		t.Errorf("third request: %v, want ErrUnavailable (queue is full)", err)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("queued request %d: %v", i, err)
		}
	}
}

func TestDynamicBatchingTimeoutAndCancel(t *testing.T) {
	s := loadBatching(t, "ppocr_cls", inference.DynamicBatching{MaxBatchSize: 4, MaxQueueDelay: time.Second, Timeout: 20 * time.Millisecond})
	_, err := s.Run(context.Background(), clsInput(1, 64, 1), nil, inference.HeapAllocator{})
	if !errors.Is(err, inference.ErrUnavailable) || !strings.Contains(err.Error(), "timeout") {
		t.Errorf("timed out request: %v, want ErrUnavailable (timeout)", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := s.Run(ctx, clsInput(1, 64, 2), nil, inference.HeapAllocator{})
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, inference.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled request: %v, want ErrUnavailable and context.Canceled", err)
	}
	if n := inference.BatchQueueLen(s); n != 0 {
		t.Errorf("%d requests left in the queue", n)
	}
}

func TestDynamicBatchingClose(t *testing.T) {
	s, err := inferencetest.Env(t).Load(context.Background(), inference.LoadSpec{Model: "ppocr_cls", Version: "1",
		Path: inferencetest.ModelPath(t, "ppocr_cls"), Config: inference.SessionConfig{
			DynamicBatching: &inference.DynamicBatching{MaxBatchSize: 4, MaxQueueDelay: time.Second}}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.Run(context.Background(), clsInput(1, 64, 2), nil, inference.HeapAllocator{})
		done <- err
	}()
	waitQueued(t, s, 1)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, inference.ErrUnavailable) {
		t.Errorf("queued request at Close: %v, want ErrUnavailable", err)
	}
	if _, err := s.Run(context.Background(), clsInput(1, 64, 2), nil, inference.HeapAllocator{}); !errors.Is(err, inference.ErrUnavailable) {
		t.Errorf("after Close: %v", err)
	}
}
