package inference_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
)

// TestEnvironmentBadLibrary: every unusable library path is an error that
// says how to get a library; none panics. These checks run before ONNX
// Runtime is touched, so they work while the shared environment is live.
func TestEnvironmentBadLibrary(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "libonnxruntime.so")
	if err := os.WriteFile(text, []byte("not a library\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable() // an ELF file of this arch, but not ORT
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(inference.EnvLibraryPath, "")
	for _, tc := range []struct{ name, path, want string }{
		{"unset", "", "no ONNX Runtime library configured"},
		{"missing", filepath.Join(dir, "nope.so"), "does not exist"},
		{"directory", dir, "not a regular file"},
		{"text file", text, "is not a shared library"},
		{"other ELF", exe, "not ONNX Runtime (no OrtGetApiBase)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := inference.NewEnvironment(inference.EnvironmentConfig{LibraryPath: tc.path}, zerolog.Nop())
			if !errors.Is(err, inference.ErrUnavailable) {
				t.Fatalf("error %v does not wrap ErrUnavailable", err)
			}
			for _, s := range []string{tc.want, "make setup", "--ort-lib", "ONNXRUNTIME_LIB"} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
		})
	}
}

// TestEnvironmentLifecycle: one live environment per process; Close is
// idempotent, closes the sessions loaded from it, and a new environment
// can be created afterwards. (It closes the shared test environment;
// inferencetest.Env makes a new one for later tests.)
func TestEnvironmentLifecycle(t *testing.T) {
	env := inferencetest.Env(t)
	_, err := inference.NewEnvironment(inference.EnvironmentConfig{LibraryPath: inferencetest.LibraryPath(t)}, zerolog.Nop())
	if !errors.Is(err, inference.ErrUnavailable) || !strings.Contains(err.Error(), "already open") {
		t.Errorf("second environment: %v", err)
	}
	if env.Version() == "" {
		t.Error("no ONNX Runtime version")
	}
	s, err := env.Load(context.Background(), inference.LoadSpec{Model: "m", Version: "1", Path: testModel("scalar_add")})
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := env.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	if _, err := s.Run(context.Background(), nil, nil, inference.HeapAllocator{}); !errors.Is(err, inference.ErrUnavailable) {
		t.Errorf("run on a session of a closed environment: %v", err)
	}
	if _, err := env.Load(context.Background(), inference.LoadSpec{Model: "m", Version: "1", Path: testModel("scalar_add")}); !errors.Is(err, inference.ErrUnavailable) {
		t.Errorf("load on a closed environment: %v", err)
	}
	// A fresh environment works.
	s2 := load(t, testModel("scalar_add"), inference.SessionConfig{})
	if _, err := s2.Run(context.Background(), []inference.Tensor{
		{Name: "a", DataType: inference.FP32, Shape: []int64{}, Data: f32(1)},
		{Name: "b", DataType: inference.FP32, Shape: []int64{3}, Data: f32(1, 2, 3)},
	}, nil, inference.HeapAllocator{}); err != nil {
		t.Fatal(err)
	}
}
