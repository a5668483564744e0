package serving

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
	"github.com/edgeai/edge-node/models"
)

// loadIdentity loads one of the inference package's synthetic identity
// models (x [N,2] → y [N,2]) of the given datatype.
func loadIdentity(t *testing.T, dtype string) *inference.Session {
	t.Helper()
	path := filepath.Join(inferencetest.RepoRoot(t), "inference", "testdata", "identity_"+dtype+".onnx")
	s, err := inferencetest.Env(t).Load(context.Background(), inference.LoadSpec{Model: "id_" + dtype, Version: "1", Path: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Golden warm-up cases run on the real session: outputs within tolerance
// pass, others fail with a message naming the output and element; every
// numeric datatype encodes and decodes through the golden path.
func TestRunGolden(t *testing.T) {
	for _, dt := range []string{"fp32", "fp64", "fp16", "bf16", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool"} {
		s := loadIdentity(t, dt)
		name := strings.ToUpper(dt)
		in := []float64{1, 0, 3, 5}
		if dt == "bool" {
			in = []float64{1, 0, 1, 1}
		}
		c := models.GoldenCase{
			Inputs:  []models.GoldenTensor{{Name: "x", Datatype: name, Shape: []int64{2, 2}, Data: in}},
			Outputs: []models.GoldenTensor{{Name: "y", Datatype: name, Shape: []int64{2, 2}, Data: in}},
		}
		if err := runGolden(context.Background(), s, c); err != nil {
			t.Errorf("%s: matching golden case failed: %v", dt, err)
		}
		c.Outputs[0].Data = append([]float64{}, in[:3]...)
		c.Outputs[0].Data = append(c.Outputs[0].Data, 0) // in[3] is never 0
		err := runGolden(context.Background(), s, c)
		if err == nil || !strings.Contains(err.Error(), `output "y" element 3`) {
			t.Errorf("%s: mismatching golden case: %v, want an error naming element 3", dt, err)
		}
	}

	s := loadIdentity(t, "fp32")
	tol := models.GoldenCase{
		Inputs:    []models.GoldenTensor{{Name: "x", Datatype: "FP32", Shape: []int64{1, 2}, Data: []float64{0.5, 0.25}}},
		Outputs:   []models.GoldenTensor{{Name: "y", Datatype: "FP32", Shape: []int64{1, 2}, Data: []float64{0.5001, 0.25}}},
		Tolerance: 0.001,
	}
	if err := runGolden(context.Background(), s, tol); err != nil {
		t.Errorf("within tolerance: %v", err)
	}
	tol.Tolerance = 0
	if err := runGolden(context.Background(), s, tol); err == nil {
		t.Error("outside tolerance: no error")
	}
	for name, c := range map[string]models.GoldenCase{
		"bad datatype":  {Inputs: []models.GoldenTensor{{Name: "x", Datatype: "FLOAT", Shape: []int64{1, 2}, Data: []float64{1, 2}}}},
		"bytes":         {Inputs: []models.GoldenTensor{{Name: "x", Datatype: "BYTES", Shape: []int64{1, 2}, Data: []float64{1, 2}}}},
		"short data":    {Inputs: []models.GoldenTensor{{Name: "x", Datatype: "FP32", Shape: []int64{2, 2}, Data: []float64{1, 2}}}},
		"negative dim":  {Inputs: []models.GoldenTensor{{Name: "x", Datatype: "FP32", Shape: []int64{-1, 2}, Data: []float64{1, 2}}}},
		"unknown input": {Inputs: []models.GoldenTensor{{Name: "z", Datatype: "FP32", Shape: []int64{1, 2}, Data: []float64{1, 2}}}},
		"wrong output count": {
			Inputs:  []models.GoldenTensor{{Name: "x", Datatype: "FP32", Shape: []int64{1, 2}, Data: []float64{1, 2}}},
			Outputs: []models.GoldenTensor{{Name: "y", Datatype: "FP32", Shape: []int64{1, 1}, Data: []float64{1}}},
		},
	} {
		if err := runGolden(context.Background(), s, c); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
