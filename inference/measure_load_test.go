package inference_test

import (
	"os"
	"path/filepath"
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

// TestMeasureOptimizedLoad measures (it asserts nothing about time) a
// version load from the original model against one from the saved
// optimized model (optimized_model_cache), and the first load that builds
// it, in interleaved rounds; process CPU (all threads) and wall time per
// load+close, medians of the per-round ratios with [min–max]:
//
//	EDGE_MEASURE_LOAD=1 go test ./inference -run TestMeasureOptimizedLoad -v
func TestMeasureOptimizedLoad(t *testing.T) {
	if os.Getenv("EDGE_MEASURE_LOAD") == "" {
		t.Skip("a measurement: EDGE_MEASURE_LOAD=1 runs it")
	}
	const rounds, perRound = 7, 5
	env := inferencetest.Env(t)
	for _, m := range []string{"silero_vad", "ppocr_cls", "ppocr_det", "ppocr_rec"} {
		path := copyModel(t, m)
		load := func(cache bool) error {
			s, err := env.Load(t.Context(), inference.LoadSpec{Model: m, Version: "1", Path: path,
				Config: inference.SessionConfig{IntraOpThreads: 1, SkipWarmup: true, OptimizedModelCache: cache}})
			if err != nil {
				return err
			}
			return s.Close()
		}
		if err := load(true); err != nil { // the saved graph exists from here on
			t.Fatal(err)
		}
		arms := []struct {
			name string
			run  func() error
		}{
			{"original", func() error { return load(false) }},
			{"saved", func() error { return load(true) }},
			{"build", func() error {
				if err := os.RemoveAll(filepath.Join(filepath.Dir(path), "ort_optimized")); err != nil {
					return err
				}
				return load(true)
			}},
		}
		cpu := make([][]time.Duration, len(arms))
		wall := make([][]time.Duration, len(arms))
		for range rounds {
			for k, a := range arms {
				n := perRound
				if a.name == "build" {
					n = 1
				}
				c0, w0 := processCPU(), time.Now()
				for range n {
					if err := a.run(); err != nil {
						t.Fatal(err)
					}
				}
				cpu[k] = append(cpu[k], (processCPU()-c0)/time.Duration(n))
				wall[k] = append(wall[k], time.Since(w0)/time.Duration(n))
			}
		}
		ratio := func(x [][]time.Duration, a, b int) (float64, float64, float64) {
			r := make([]float64, rounds)
			for i := range r {
				r[i] = float64(x[a][i]) / float64(x[b][i])
			}
			return median(r), slices.Min(r), slices.Max(r)
		}
		med := func(ds []time.Duration) time.Duration {
			s := slices.Clone(ds)
			slices.Sort(s)
			return s[len(s)/2].Round(10 * time.Microsecond)
		}
		cm, cl, ch := ratio(cpu, 1, 0)
		wm, wl, wh := ratio(wall, 1, 0)
		bm, bl, bh := ratio(cpu, 2, 0)
		t.Logf("FIGURE %s load from the saved optimized model / from the original: CPU %v / %v = %.2f× [%.2f–%.2f], wall %v / %v = %.2f× [%.2f–%.2f]; the building load: CPU %v = %.2f× [%.2f–%.2f] of an original load",
			m, med(cpu[1]), med(cpu[0]), cm, cl, ch, med(wall[1]), med(wall[0]), wm, wl, wh, med(cpu[2]), bm, bl, bh)
	}
}
