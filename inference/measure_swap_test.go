package inference_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
)

// TestMeasureSwapP99 measures (it asserts nothing about time) what hot
// swaps that load a session cost the requests in flight: two closed-loop
// callers run a model through a Router while three versions (copies of
// the same file) are cycled, each swap loading the next one (Load with its
// warm-up, Add as default, Remove the old). Per round: p99 of requests that
// overlap a swap ÷ p99 of requests in a swap-free stretch of the same
// round. Three arms in interleaved rounds: loads from the original model
// at normal priority (load_priority: normal, the node before this change)
// and at low priority, and from the saved optimized model (built before the
// rounds, as while a version is Ready) at low priority; median [min–max]:
//
//	EDGE_MEASURE_SWAP=1 go test ./inference -run TestMeasureSwapP99 -v
func TestMeasureSwapP99(t *testing.T) {
	if os.Getenv("EDGE_MEASURE_SWAP") == "" {
		t.Skip("a measurement: EDGE_MEASURE_SWAP=1 runs it")
	}
	const rounds, swaps = 5, 6
	env := inferencetest.Env(t)
	for _, m := range []struct {
		name string
		in   func() []inference.Tensor
	}{
		{"ppocr_det", func() []inference.Tensor {
			return []inference.Tensor{{Name: "x", DataType: inference.FP32, Shape: []int64{1, 3, 320, 320}, Data: detFloats(3*320*320, 7)}}
		}},
		{"ppocr_cls", func() []inference.Tensor { return clsInput(1, 192, 1) }},
	} {
		paths := []string{copyModel(t, m.name), copyModel(t, m.name), copyModel(t, m.name)}
		load := func(i int, cache bool, priority string) *inference.Session {
			s, err := env.Load(context.Background(), inference.LoadSpec{Model: m.name, Version: fmt.Sprint(i), Path: paths[i%3],
				Config: inference.SessionConfig{IntraOpThreads: 1, OptimizedModelCache: cache, LoadPriority: priority}})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		for i := range paths { // build the saved graphs first
			load(i, true, "").Close()
		}
		arms := []struct{ name, priority string }{
			{"original model, normal priority", "normal"},
			{"original model, low priority", "low"},
			{"saved optimized model, low priority", "low"},
		}
		ratio := make([][]float64, len(arms))
		loadWall := make([][]time.Duration, len(arms))
		for range rounds {
			for a, arm := range arms {
				r, lw := swapRound(t, m.in, swaps, func(i int) *inference.Session {
					return load(i, strings.HasPrefix(arm.name, "saved"), arm.priority)
				})
				ratio[a] = append(ratio[a], r)
				loadWall[a] = append(loadWall[a], lw)
			}
		}
		for a, arm := range arms {
			lw := slices.Clone(loadWall[a])
			slices.Sort(lw)
			t.Logf("FIGURE %s swaps loading from the %s: p99 during swaps / steady p99 %.2f× [%.2f–%.2f]; load wall per swap %v",
				m.name, arm.name, median(ratio[a]), slices.Min(ratio[a]), slices.Max(ratio[a]), lw[len(lw)/2].Round(time.Millisecond))
		}
	}
}

// swapRound runs one round: a swap-free second, then swaps swaps, under two
// closed-loop callers. It returns p99(overlapping a swap) / p99(steady) and
// the median wall time of a swap's load.
func swapRound(t *testing.T, in func() []inference.Tensor, swaps int, load func(int) *inference.Session) (float64, time.Duration) {
	r := inference.NewRouter()
	defer r.Close()
	cur := load(0)
	name := cur.Name()
	if err := r.Add(cur, true); err != nil {
		t.Fatal(err)
	}
	type sample struct{ start, end time.Time }
	var mu sync.Mutex
	var samples []sample
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			inputs := in()
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				mdl, release, err := r.Acquire(name, "")
				if err != nil {
					t.Error(err)
					return
				}
				_, err = mdl.Run(context.Background(), inputs, nil, inference.HeapAllocator{})
				release()
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				samples = append(samples, sample{start, time.Now()})
				mu.Unlock()
			}
		})
	}
	time.Sleep(time.Second)
	steadyEnd := time.Now()
	type window struct{ from, to time.Time }
	var windows []window
	var loads []time.Duration
	for i := 1; i <= swaps; i++ {
		from := time.Now()
		next := load(i)
		loads = append(loads, time.Since(from))
		if err := r.Add(next, true); err != nil {
			t.Fatal(err)
		}
		if err := r.Remove(name, cur.Version()); err != nil {
			t.Fatal(err)
		}
		windows = append(windows, window{from, time.Now()})
		cur = next
		time.Sleep(150 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	var steady, during []time.Duration
	for _, s := range samples {
		d := s.end.Sub(s.start)
		if s.end.Before(steadyEnd) {
			if s.start.After(steadyEnd.Add(-800 * time.Millisecond)) { // after the first 200 ms
				steady = append(steady, d)
			}
			continue
		}
		for _, w := range windows {
			if s.start.Before(w.to) && w.from.Before(s.end) {
				during = append(during, d)
				break
			}
		}
	}
	p99 := func(d []time.Duration) time.Duration {
		slices.Sort(d)
		return d[min(len(d)-1, int(math.Ceil(0.99*float64(len(d))))-1)]
	}
	if len(steady) == 0 || len(during) == 0 {
		t.Fatalf("no samples: %d steady, %d during swaps", len(steady), len(during))
	}
	slices.Sort(loads)
	return float64(p99(during)) / float64(p99(steady)), loads[len(loads)/2]
}
