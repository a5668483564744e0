package inference_test

import (
	"context"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
)

// TestMeasureSpinWorker measures (it asserts nothing about time) what a
// "low-latency mode" would buy: silero_vad requests 300 µs apart (the core
// idles between them), run either on the caller's goroutine, or handed to a
// worker on its own OS thread that busy-polls for the next request for 2 ms
// after each one instead of parking (the core stays hot). Interleaved
// rounds; p50 per request and process CPU per request:
//
//	EDGE_MEASURE_SPIN=1 go test ./inference -run TestMeasureSpinWorker -v
func TestMeasureSpinWorker(t *testing.T) {
	if os.Getenv("EDGE_MEASURE_SPIN") == "" {
		t.Skip("a measurement: EDGE_MEASURE_SPIN=1 runs it")
	}
	const rounds, n = 7, 400
	const gap, spinFor = 300 * time.Microsecond, 2 * time.Millisecond
	s, err := inferencetest.Env(t).Load(context.Background(), inference.LoadSpec{Model: "silero_vad", Version: "1",
		Path: inferencetest.ModelPath(t, "silero_vad"), Config: inference.SessionConfig{IntraOpThreads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	in := sileroBatchInput(1)
	run := func() {
		if _, err := s.Run(context.Background(), in, nil, inference.HeapAllocator{}); err != nil {
			t.Error(err)
		}
	}
	work := make(chan chan struct{})
	go func() {
		runtime.LockOSThread()
		for {
			var j chan struct{}
			for deadline := time.Now().Add(spinFor); j == nil && time.Now().Before(deadline); {
				select {
				case j = <-work:
				default:
				}
			}
			if j == nil {
				var ok bool
				if j, ok = <-work; !ok {
					return
				}
			}
			run()
			close(j)
		}
	}()
	defer close(work)
	arms := []func(){run, func() { j := make(chan struct{}); work <- j; <-j }}
	p50 := make([][]time.Duration, 2)
	cpu := make([][]time.Duration, 2)
	for range rounds {
		for a, call := range arms {
			ds := make([]time.Duration, 0, n)
			c0 := processCPU()
			for range n {
				time.Sleep(gap)
				t0 := time.Now()
				call()
				ds = append(ds, time.Since(t0))
			}
			cpu[a] = append(cpu[a], (processCPU()-c0)/n)
			slices.Sort(ds)
			p50[a] = append(p50[a], ds[n/2])
		}
	}
	ratio := func(x [][]time.Duration) (float64, float64, float64) {
		r := make([]float64, rounds)
		for i := range r {
			r[i] = float64(x[1][i]) / float64(x[0][i])
		}
		return median(r), slices.Min(r), slices.Max(r)
	}
	med := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2].Round(time.Microsecond)
	}
	pm, pl, ph := ratio(p50)
	cm, cl, ch := ratio(cpu)
	t.Logf("FIGURE silero_vad, requests 300µs apart: p50 %v on the caller vs %v on a spinning worker = %.2f× [%.2f–%.2f]; CPU per request %v vs %v = %.2f× [%.2f–%.2f]",
		med(p50[0]), med(p50[1]), pm, pl, ph, med(cpu[0]), med(cpu[1]), cm, cl, ch)
}
