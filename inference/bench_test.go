package inference_test

import (
	"context"

	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
)

// benchModels are the sample models, inputs in model input order.
var benchModels = []struct {
	name   string
	inputs func() []inference.Tensor
}{
	{"silero_vad", sileroInputs},
	{"ppocr_det", ppocrDetInputs},
}

// BenchmarkRun compares plain onnxruntime_go (RawSession.RunOnly: tensors
// over the input bytes, ORT-allocated outputs copied to Go by
// onnxruntime_go, then dropped) with Session.Run and the heap allocator
// (validation, output shapes learned on the first run, outputs written in
// place after that). Both with ONNX Runtime's default thread pools.
//
//	go test ./inference -run '^$' -bench 'BenchmarkRun$' -benchtime=200x -count=1
func BenchmarkRun(b *testing.B) {
	for _, m := range benchModels {
		path := inferencetest.ModelPath(b, m.name)
		in := m.inputs()
		b.Run(m.name+"/raw", func(b *testing.B) {
			raw := inferencetest.OpenRaw(b, path, 0)
			if err := raw.RunOnly(in); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := raw.RunOnly(in); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(m.name+"/session", func(b *testing.B) {
			s := load(b, path, inference.SessionConfig{})
			ctx := context.Background()
			if _, err := s.Run(ctx, in, nil, inference.HeapAllocator{}); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := s.Run(ctx, in, nil, inference.HeapAllocator{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParallel compares one shared ORT session (ONNX Runtime's Run is
// thread-safe) with a pool of ORT sessions under concurrent requests, each
// ORT session with one intra-op thread and, for contrast, the shared
// session with ONNX Runtime's default thread pool. 4 concurrent callers
// (SetParallelism(2) x GOMAXPROCS). MB-rss-load is the growth of the
// process's resident memory from Load through the first run: what the
// configuration costs in memory.
//
//	go test ./inference -run '^$' -bench 'BenchmarkParallel' -benchtime=200x -count=1
func BenchmarkParallel(b *testing.B) {
	configs := []struct {
		name string
		cfg  inference.SessionConfig
	}{
		{"shared-1thread", inference.SessionConfig{IntraOpThreads: 1}},
		{"shared-default-threads", inference.SessionConfig{}},
		{"pool4-1thread", inference.SessionConfig{IntraOpThreads: 1, Instances: 4}},
	}
	for _, m := range benchModels {
		path := inferencetest.ModelPath(b, m.name)
		in := m.inputs()
		for _, c := range configs {
			b.Run(m.name+"/"+c.name, func(b *testing.B) {
				inferencetest.Env(b) // not counted in MB-rss-load
				rss0 := rssMB(b)
				s := load(b, path, c.cfg)
				ctx := context.Background()
				if _, err := s.Run(ctx, in, nil, inference.HeapAllocator{}); err != nil {
					b.Fatal(err)
				}
				loadMB := rssMB(b) - rss0
				b.ReportAllocs()
				b.SetParallelism(2)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := s.Run(ctx, in, nil, inference.HeapAllocator{}); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(loadMB, "MB-rss-load") // after the timer resets
			})
		}
	}
}

// rssMB is the process's resident set size in MiB (Linux).
func rssMB(b *testing.B) float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	b.Logf("no VmRSS in /proc/self/status")
	return 0
}
