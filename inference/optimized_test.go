package inference_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
	"github.com/edgeai/edge-node/internal/testwait"
)

// copyModel copies a sample model into a fresh folder (the cache is written
// beside it).
func copyModel(t *testing.T, m string) string {
	t.Helper()
	b, err := os.ReadFile(inferencetest.ModelPath(t, m))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "model.onnx")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// threadNices returns the nice value of each of the process's threads.
func threadNices(t *testing.T) map[string]int {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Skip("no /proc/self/task:", err)
	}
	out := map[string]int{}
	for _, e := range tasks {
		b, err := os.ReadFile(filepath.Join("/proc/self/task", e.Name(), "stat"))
		if err != nil {
			continue // the thread ended
		}
		// Fields after the command (which may hold spaces) start at ") ".
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		n, err := strconv.Atoi(f[16]) // field 19 of stat: nice
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = n
	}
	return out
}

// optimized_model_cache: the first load builds ONNX Runtime's optimised
// graph beside the model, later loads create their sessions from it; the
// outputs equal those of a session over the original; the lowered priority
// of the building thread stays with no thread; a corrupt or unwritable
// cache falls back to the original model.
func TestOptimizedModelCache(t *testing.T) {
	env := inferencetest.Env(t)
	for _, m := range []struct {
		name string
		in   func() []inference.Tensor
	}{
		{"ppocr_det", ppocrDetInputs},
		{"ppocr_cls", func() []inference.Tensor { return clsInput(1, 192, 1) }},
	} {
		t.Run(m.name, func(t *testing.T) {
			path := copyModel(t, m.name)
			load := func(cache bool) (*inference.Session, string) {
				t.Helper()
				var buf bytes.Buffer
				logger := zerolog.New(&buf).Level(zerolog.DebugLevel)
				s, err := env.Load(context.Background(), inference.LoadSpec{Model: m.name, Version: "1", Path: path,
					Config: inference.SessionConfig{IntraOpThreads: 1, OptimizedModelCache: cache}, Logger: &logger})
				if err != nil {
					t.Fatal(err)
				}
				return s, buf.String()
			}
			run := func(s *inference.Session) []inference.Tensor {
				t.Helper()
				outs, err := s.Run(context.Background(), m.in(), nil, inference.HeapAllocator{})
				if err != nil {
					t.Fatal(err)
				}
				return outs
			}
			plain, _ := load(false)
			if opt, _ := inference.OptimizedFrom(plain); opt != "" {
				t.Fatalf("without the cache the session came from %s", opt)
			}
			want := run(plain)
			plain.Close()

			first, _ := load(true)
			opt, built := inference.OptimizedFrom(first)
			if opt == "" || !built || filepath.Dir(filepath.Dir(opt)) != filepath.Dir(path) {
				t.Fatalf("first load: optimized model %q built %v", opt, built)
			}
			for i, o := range run(first) {
				if !inferencetest.CloseF32(o.Data, want[i].Data) {
					t.Errorf("output %s from the optimized model differs from the original's", o.Name)
				}
			}
			first.Close()
			// The builder's thread ends just after the load returns (Go
			// ends it once its locked goroutine exits): wait for that, and
			// fail if a thread at lowered priority stays, serving others.
			testwait.For(t, "every thread back at nice 0 after the load (a thread at the builder's lowered priority stayed)", func() bool {
				for _, n := range threadNices(t) {
					if n != 0 {
						return false
					}
				}
				return true
			}, 10*time.Second)

			again, _ := load(true)
			if o2, built := inference.OptimizedFrom(again); o2 != opt || built {
				t.Errorf("second load: optimized model %q built %v, want %q not built", o2, built, opt)
			}
			for i, o := range run(again) {
				if !inferencetest.CloseF32(o.Data, want[i].Data) {
					t.Errorf("second load: output %s differs", o.Name)
				}
			}
			again.Close()

			// A corrupt saved graph is removed and the original loads; the
			// next load builds it again.
			if err := os.WriteFile(opt, []byte("not a model"), 0o644); err != nil {
				t.Fatal(err)
			}
			bad, log := load(true)
			if o, _ := inference.OptimizedFrom(bad); o != "" || !strings.Contains(log, "cannot load the saved optimized model") {
				t.Errorf("corrupt cache: session from %q, log %s", o, log)
			}
			run(bad)
			bad.Close()
			rebuilt, _ := load(true)
			if o, built := inference.OptimizedFrom(rebuilt); o != opt || !built {
				t.Errorf("after a corrupt cache: optimized model %q built %v", o, built)
			}
			rebuilt.Close()

			// No place to keep it: the original loads, with a warning.
			if err := os.RemoveAll(filepath.Dir(opt)); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Dir(opt), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			nowhere, log := load(true)
			if o, _ := inference.OptimizedFrom(nowhere); o != "" || !strings.Contains(log, "cannot build the optimized model") {
				t.Errorf("unwritable cache: session from %q, log %s", o, log)
			}
			run(nowhere)
			nowhere.Close()
		})
	}
}
