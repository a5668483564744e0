package inference_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
)

// TestMeasureDynamicBatching measures (it asserts nothing about time) the
// throughput of 8 concurrent closed-loop callers, in process, in
// interleaved rounds: raw onnxruntime_go (RawSession.RunOnly, one Run per
// request), Session.Run without batching, and Session.Run with dynamic
// batching (max_batch_size 8, max_queue_delay 2ms), all three with one
// intra-op thread per ORT session. It logs each arm's requests/s and CPU
// per request, and the median of the per-round ratios to raw with their
// [min–max]. Run it with
//
//	EDGE_MEASURE_BATCHING=1 go test ./inference -run TestMeasureDynamicBatching -v -timeout 30m
//
// (EDGE_MEASURE_ROUNDS, default 7).
func TestMeasureDynamicBatching(t *testing.T) {
	if os.Getenv("EDGE_MEASURE_BATCHING") == "" {
		t.Skip("a measurement: EDGE_MEASURE_BATCHING=1 runs it")
	}
	rounds := 7
	if v, err := strconv.Atoi(os.Getenv("EDGE_MEASURE_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	const callers = 8
	threads, _ := strconv.Atoi(os.Getenv("EDGE_MEASURE_THREADS")) // intra-op threads; 0 = ONNX Runtime's default
	if os.Getenv("EDGE_MEASURE_THREADS") == "" {
		threads = 1
	}
	maxBatch, inFlight := callers, 1
	if v, err := strconv.Atoi(os.Getenv("EDGE_MEASURE_MAX_BATCH")); err == nil && v > 0 {
		maxBatch = v
	}
	if v, err := strconv.Atoi(os.Getenv("EDGE_MEASURE_IN_FLIGHT")); err == nil && v > 0 {
		inFlight = v
	}
	t.Logf("FIGURE arms: intra_op_threads %d; batching max_batch_size %d, max_concurrency %d (batches in flight)", threads, maxBatch, inFlight)
	loadavg, _ := os.ReadFile("/proc/loadavg")
	t.Logf("FIGURE machine: %d CPUs online, load average %s", numCPU(), strings.TrimSpace(string(loadavg)))
	for _, m := range []struct {
		name      string
		perCaller int
		input     func(i int) []inference.Tensor
		dims      map[string]int
	}{
		{"ppocr_cls", 150, func(i int) []inference.Tensor { return clsInput(1, 192, uint32(i)) }, nil},
		{"silero_vad", 1000, func(i int) []inference.Tensor { return sileroBatchInput(uint32(3 * i)) }, map[string]int{"h": 1, "c": 1, "hn": 1, "cn": 1}},
	} {
		path := inferencetest.ModelPath(t, m.name)
		raw := inferencetest.OpenRaw(t, path, threads)
		plain := load(t, path, inference.SessionConfig{IntraOpThreads: threads})
		batched := load(t, path, inference.SessionConfig{IntraOpThreads: threads, MaxConcurrency: inFlight, DynamicBatching: &inference.DynamicBatching{
			MaxBatchSize: maxBatch, MaxQueueDelay: 2 * time.Millisecond, BatchDims: m.dims}})
		ins := make([][]inference.Tensor, callers)
		for i := range ins {
			ins[i] = m.input(i)
		}
		arms := []struct {
			name string
			run  func(in []inference.Tensor) error
		}{
			{"raw", raw.RunOnly},
			{"session", func(in []inference.Tensor) error {
				_, err := plain.Run(context.Background(), in, nil, inference.HeapAllocator{})
				return err
			}},
			{"batched", func(in []inference.Tensor) error {
				_, err := batched.Run(context.Background(), in, nil, inference.HeapAllocator{})
				return err
			}},
		}
		// Warm up every arm (first-run costs, learned output shapes).
		for _, a := range arms {
			if _, _, err := closedLoop(callers, 5, ins, a.run); err != nil {
				t.Fatal(err)
			}
		}
		rps := make([][]float64, len(arms))
		cpu := make([]time.Duration, len(arms))
		for range rounds {
			for k, a := range arms {
				r, c, err := closedLoop(callers, m.perCaller, ins, a.run)
				if err != nil {
					t.Fatal(err)
				}
				rps[k] = append(rps[k], r)
				cpu[k] += c
			}
		}
		n := time.Duration(rounds * callers * m.perCaller)
		for k, a := range arms {
			line := fmt.Sprintf("FIGURE %s c=%d %-8s %7.0f req/s (median of %d rounds), CPU %v/request", m.name, callers, a.name, median(rps[k]), rounds, (cpu[k] / n).Round(time.Microsecond))
			if k > 0 {
				ratios := make([]float64, rounds)
				for r := range ratios {
					ratios[r] = rps[k][r] / rps[0][r]
				}
				line += fmt.Sprintf("; vs raw %.2f× [%.2f–%.2f]", median(ratios), slices.Min(ratios), slices.Max(ratios))
			}
			t.Log(line)
		}
		if st, ok := batched.BatchStats(); ok {
			var runs, inferences uint64
			for size, c := range st.Sizes {
				runs += c
				inferences += uint64(size) * c
			}
			t.Logf("FIGURE %s batched: %d runs, mean batch %.2f", m.name, runs, float64(inferences)/float64(runs))
		}
	}
}

// closedLoop runs callers goroutines, each calling run perCaller times on
// its own input, and returns the requests per second and the process CPU
// time used.
func closedLoop(callers, perCaller int, ins [][]inference.Tensor, run func([]inference.Tensor) error) (float64, time.Duration, error) {
	cpu0 := processCPU()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, callers)
	for i := range callers {
		wg.Go(func() {
			for range perCaller {
				if err := run(ins[i]); err != nil {
					errs[i] = err
					return
				}
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	for _, err := range errs {
		if err != nil {
			return 0, 0, err
		}
	}
	return float64(callers*perCaller) / wall.Seconds(), processCPU() - cpu0, nil
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func numCPU() int {
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return 0
	}
	n := 0
	for _, r := range strings.Split(strings.TrimSpace(string(b)), ",") {
		lo, hi, ok := strings.Cut(r, "-")
		a, _ := strconv.Atoi(lo)
		if !ok {
			n++
			continue
		}
		z, _ := strconv.Atoi(hi)
		n += z - a + 1
	}
	return n
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
