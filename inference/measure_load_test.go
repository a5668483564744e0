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
// (IntraOpThreads 1). Load CPU before = Load now + SessionInfo − GraphInfo.
// Process CPU time (all threads) per call, median over rounds:
//
//	EDGE_MEASURE_LOAD=1 go test ./inference -run TestMeasureLoadMetadata -v
func TestMeasureLoadMetadata(t *testing.T) {
	if os.Getenv("EDGE_MEASURE_LOAD") == "" {
		t.Skip("a measurement: EDGE_MEASURE_LOAD=1 runs it")
	}
	const rounds, perRound = 7, 5
	env := inferencetest.Env(t)
	for _, m := range []string{"silero_vad", "ppocr_cls", "ppocr_det", "ppocr_rec"} {
		path := inferencetest.ModelPath(t, m)
		arms := []struct {
			name string
			run  func() error
		}{
			{"session-info", func() error { _, _, err := inference.SessionInfo(path); return err }},
			{"graph-info", func() error { _, _, err := inference.GraphInfo(path); return err }},
			{"load", func() error {
				s, err := env.Load(t.Context(), inference.LoadSpec{Model: m, Version: "1", Path: path, Config: inference.SessionConfig{IntraOpThreads: 1}})
				if err != nil {
					return err
				}
				return s.Close()
			}},
		}
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
		t.Logf("FIGURE %s load CPU: session-info %v, graph-info %v, load now %v, before ≈ %v; now/before %.2f× [%.2f–%.2f]",
			m, si.Round(10*time.Microsecond), gi.Round(10*time.Microsecond), ld.Round(10*time.Microsecond), (ld + si - gi).Round(10*time.Microsecond),
			median(ratios), slices.Min(ratios), slices.Max(ratios))
	}
}
