package inference_test

import (
	"os"
	"slices"
	"testing"
	"time"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
)

// TestMeasureLoadMetadata measures (it asserts nothing about time) what a
// version load spends learning its inputs and outputs, in interleaved
// rounds: the throwaway ORT session Load used to create (SessionInfo), the
// ONNX graph read it does now (GraphInfo), and a whole Load and Close
// (IntraOpThreads 1), without and with the warm-up Run on zeros, each also
// followed by one real request (its wall time is the first-request
// figure). Load CPU before = Load now + SessionInfo − GraphInfo.
// Process CPU time (all threads) per call, median over rounds:
//
//	EDGE_MEASURE_LOAD=1 go test ./inference -run TestMeasureLoadMetadata -v
func TestMeasureLoadMetadata(t *testing.T) {
	if os.Getenv("EDGE_MEASURE_LOAD") == "" {
		t.Skip("a measurement: EDGE_MEASURE_LOAD=1 runs it")
	}
	const rounds, perRound = 7, 5
	env := inferencetest.Env(t)
	var firstCold, firstWarm []time.Duration
	for _, m := range []string{"silero_vad", "ppocr_cls", "ppocr_det", "ppocr_rec"} {
		path := inferencetest.ModelPath(t, m)
		arms := []struct {
			name string
			run  func() error
		}{
			{"session-info", func() error { _, _, err := inference.SessionInfo(path); return err }},
			{"graph-info", func() error { _, _, err := inference.GraphInfo(path); return err }},
			{"load", func() error { return loadRunClose(t, env, m, path, true, nil) }},
			{"load+warm-up", func() error { return loadRunClose(t, env, m, path, false, nil) }},
			{"load, first run", func() error { return loadRunClose(t, env, m, path, true, &firstCold) }},
			{"load+warm-up, first run", func() error { return loadRunClose(t, env, m, path, false, &firstWarm) }},
		}
		firstCold, firstWarm = nil, nil
		cpu := make([][]time.Duration, len(arms))
		for range rounds {
			for k, a := range arms {
				c0 := processCPU()
				for range perRound {
					if err := a.run(); err != nil {
						t.Fatal(err)
					}
				}
				cpu[k] = append(cpu[k], (processCPU()-c0)/perRound)
			}
		}
		med := func(ds []time.Duration) time.Duration {
			s := slices.Clone(ds)
			slices.Sort(s)
			return s[len(s)/2]
		}
		si, gi, ld := med(cpu[0]), med(cpu[1]), med(cpu[2])
		ratios := make([]float64, rounds)
		for r := range ratios {
			ratios[r] = float64(cpu[2][r]) / float64(cpu[2][r]+cpu[0][r]-cpu[1][r])
		}
		wr := make([]float64, rounds)
		for r := range wr {
			wr[r] = float64(cpu[3][r]) / float64(cpu[2][r])
		}
		t.Logf("FIGURE %s warm-up: load CPU %v vs %v without (%.2f× [%.2f–%.2f]); first request after the load %v vs %v without",
			m, med(cpu[3]).Round(10*time.Microsecond), ld.Round(10*time.Microsecond), median(wr), slices.Min(wr), slices.Max(wr),
			med(firstWarm).Round(10*time.Microsecond), med(firstCold).Round(10*time.Microsecond))
		t.Logf("FIGURE %s load CPU: session-info %v, graph-info %v, load now %v, before ≈ %v; now/before %.2f× [%.2f–%.2f]",
			m, si.Round(10*time.Microsecond), gi.Round(10*time.Microsecond), ld.Round(10*time.Microsecond), (ld + si - gi).Round(10*time.Microsecond),
			median(ratios), slices.Min(ratios), slices.Max(ratios))
	}
}

// warmupInputs are a real request for each sample model.
var warmupInputs = map[string]func() []inference.Tensor{
	"silero_vad": func() []inference.Tensor { return sileroBatchInput(1) },
	"ppocr_cls":  func() []inference.Tensor { return clsInput(1, 192, 1) },
	"ppocr_det":  ppocrDetInputs,
	"ppocr_rec": func() []inference.Tensor {
		return []inference.Tensor{{Name: "x", DataType: inference.FP32, Shape: []int64{1, 3, 48, 320}, Data: detFloats(3*48*320, 1)}}
	},
}

// loadRunClose loads model m (skipping the warm-up or not), and when first
// is set runs one real request and appends its wall time, then closes it.
func loadRunClose(t *testing.T, env *inference.Environment, m, path string, skip bool, first *[]time.Duration) error {
	cfg := inference.SessionConfig{IntraOpThreads: 1, SkipWarmup: skip}
	if m == "silero_vad" {
		cfg.WarmupShapes = map[string][]int64{"input": {1, 512}}
	}
	s, err := env.Load(t.Context(), inference.LoadSpec{Model: m, Version: "1", Path: path, Config: cfg})
	if err != nil {
		return err
	}
	if first != nil {
		start := time.Now()
		if _, err := s.Run(t.Context(), warmupInputs[m](), nil, inference.HeapAllocator{}); err != nil {
			return err
		}
		*first = append(*first, time.Since(start))
	}
	return s.Close()
}
