package inference_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
)

// Load warms every sample model up on zeros before returning (the log
// says so only when it fails; silero_vad needs warmup_shapes), and
// skip_warmup skips it.
func TestLoadWarmsUp(t *testing.T) {
	shapes := map[string]map[string][]int64{"silero_vad": {"input": {1, 512}}}
	for _, m := range []string{"silero_vad", "ppocr_cls", "ppocr_det", "ppocr_rec"} {
		for _, skip := range []bool{false, true} {
			var buf bytes.Buffer
			logger := zerolog.New(&buf).Level(zerolog.DebugLevel)
			s, err := inferencetest.Env(t).Load(context.Background(), inference.LoadSpec{Model: m, Version: "1",
				Path: inferencetest.ModelPath(t, m), Config: inference.SessionConfig{IntraOpThreads: 1, SkipWarmup: skip, WarmupShapes: shapes[m]}, Logger: &logger})
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(buf.String(), "warm-up run on zeros failed") {
				t.Errorf("%s: %s", m, buf.String())
			}
			if got := inference.WarmedShapes(s); got != !skip {
				t.Errorf("%s skip_warmup %v: warmed up %v", m, skip, got)
			}
			s.Close()
		}
	}
}

// Without warmup_shapes silero_vad rejects the 1-sample warm-up frame: the
// load succeeds and says why at debug level. Bad warmup_shapes fail it.
func TestWarmupFailures(t *testing.T) {
	var buf bytes.Buffer
	logger := zerolog.New(&buf).Level(zerolog.DebugLevel)
	path := inferencetest.ModelPath(t, "silero_vad")
	s, err := inferencetest.Env(t).Load(context.Background(), inference.LoadSpec{Model: "silero_vad", Version: "1", Path: path, Logger: &logger})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if !strings.Contains(buf.String(), "warm-up run on zeros failed") || inference.WarmedShapes(s) {
		t.Errorf("log %s", buf.String())
	}
	for _, tc := range []struct {
		name   string
		shapes map[string][]int64
		want   string
	}{
		{"unknown input", map[string][]int64{"audio": {1, 512}}, `names "audio"`},
		{"wrong rank", map[string][]int64{"input": {512}}, "rank 1"},
		{"fixed dimension", map[string][]int64{"h": {3, 1, 64}}, "dimension 0 is 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := inferencetest.Env(t).Load(context.Background(), inference.LoadSpec{Model: "silero_vad", Version: "1", Path: path,
				Config: inference.SessionConfig{WarmupShapes: tc.shapes}})
			if !errors.Is(err, inference.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want ErrInvalidArgument saying %q", err, tc.want)
			}
		})
	}
}
