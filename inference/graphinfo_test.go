package inference_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
)

// Reading inputs and outputs from the ONNX graph gives what ONNX Runtime's
// own session reports, for every sample model and test model.
func TestGraphInfoMatchesSession(t *testing.T) {
	paths, _ := filepath.Glob(filepath.Join("testdata", "*.onnx"))
	for _, m := range []string{"silero_vad", "ppocr_cls", "ppocr_det", "ppocr_rec"} {
		paths = append(paths, inferencetest.ModelPath(t, m))
	}
	inferencetest.Env(t)
	for _, p := range paths {
		gi, go_, err := inference.GraphInfo(p)
		if err != nil {
			t.Errorf("%s: graph: %v", p, err)
			continue
		}
		si, so, err := inference.SessionInfo(p)
		if err != nil {
			t.Fatalf("%s: session: %v", p, err)
		}
		if g, s := fmt.Sprintf("%+v %+v", gi, go_), fmt.Sprintf("%+v %+v", si, so); g != s {
			t.Errorf("%s:\ngraph   %s\nsession %s", p, g, s)
		}
	}
}

// What the graph reader does not parse is left to ONNX Runtime (which
// then names the problem): not a model, a truncated one.
func TestGraphInfoDefers(t *testing.T) {
	good, err := os.ReadFile(inferencetest.ModelPath(t, "silero_vad"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		"empty":     nil,
		"text":      []byte("not a model"),
		"truncated": good[:len(good)/2],
		"bad tag":   {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
	} {
		p := filepath.Join(dir, name+".onnx")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, _, err := inference.GraphInfo(p); err == nil {
			t.Errorf("%s: read inputs and outputs from a broken file", name)
		}
		_, err := inferencetest.Env(t).Load(t.Context(), inference.LoadSpec{Model: "m", Version: "1", Path: p})
		if !errors.Is(err, inference.ErrInvalidArgument) {
			t.Errorf("%s: Load: %v, want ErrInvalidArgument", name, err)
		}
	}
}
