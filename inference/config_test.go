package inference_test

import (
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/edgeai/edge-node/inference"
)

func TestParseSessionConfig(t *testing.T) {
	cfg, err := inference.ParseSessionConfig([]byte(`
providers:
  - name: tensorrt
    options: {fp16: true, engine_cache_dir: /var/cache/trt, workspace_bytes: 1073741824, ep_context: true}
  - name: cuda
    options: {device_id: 1, arena_limit_bytes: 2147483648, cudnn_conv_algo_search: heuristic}
  - name: cpu
intra_op_threads: 2
inter_op_threads: 1
graph_optimization: extended
max_batch: 8
max_concurrency: 4
instances: 1
mem_arena: false
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Providers) != 3 || cfg.Providers[1].Options.DeviceID != 1 || !cfg.Providers[0].Options.FP16 ||
		cfg.IntraOpThreads != 2 || cfg.GraphOptimization != "extended" || cfg.MaxConcurrency != 4 ||
		cfg.MemArena == nil || *cfg.MemArena || cfg.MemPattern != nil {
		t.Errorf("decoded %+v", cfg)
	}
	empty, err := inference.ParseSessionConfig(nil)
	if err != nil || len(empty.Providers) != 0 {
		t.Errorf("empty config: %+v, %v", empty, err)
	}
}

func TestParseSessionConfigRejects(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown provider", "providers: [{name: openvino}]", `unknown provider "openvino"`},
		{"provider without name", "providers: [{options: {}}]", "provider without a name"},
		{"provider twice", "providers: [{name: cpu}, {name: cpu}]", `"cpu" listed twice`},
		{"negative intra threads", "intra_op_threads: -1", "intra_op_threads is -1"},
		{"negative inter threads", "inter_op_threads: -3", "inter_op_threads is -3"},
		{"negative max_concurrency", "max_concurrency: -1", "max_concurrency is -1"},
		{"too many instances", "instances: 1000", "instances is 1000"},
		{"bad optimization level", "graph_optimization: turbo", `graph_optimization "turbo"`},
		{"bad load priority", "load_priority: idle", `load_priority "idle": want low or normal`},
		{"optimized cache not a bool", "optimized_model_cache: maybe", "cannot unmarshal !!str `maybe` into bool"},
		{"unknown field", "intra_op_thread: 2", "field intra_op_thread not found"},
		{"unknown option", "providers: [{name: cuda, options: {gpu: 1}}]", "field gpu not found"},
		{"trt option on cuda", "providers: [{name: cuda, options: {fp16: true}}]", "cuda takes no TensorRT options"},
		{"cuda option on trt", "providers: [{name: tensorrt, options: {arena_limit_bytes: 5}}]", "tensorrt takes no arena_limit_bytes"},
		{"options on cpu", "providers: [{name: cpu, options: {device_id: 1}}]", "cpu takes no options"},
		{"bad algo search", "providers: [{name: cuda, options: {cudnn_conv_algo_search: fast}}]", `cudnn_conv_algo_search "fast"`},
		{"negative device", "providers: [{name: cuda, options: {device_id: -1}}]", "device_id is -1"},
		{"negative workspace", "providers: [{name: tensorrt, options: {workspace_bytes: -1}}]", "byte sizes must be >= 0"},
		{"wrong type", "max_batch: lots", "cannot unmarshal"},
		{"not a mapping", "- 1\n- 2", "cannot unmarshal"},
		{"too big", "# " + strings.Repeat("x", inference.MaxConfigSize), "more than"},
		{"batching without max_batch_size", "dynamic_batching: {max_queue_delay: 1ms}", "max_batch_size is 0"},
		{"batching max_batch_size too big", "dynamic_batching: {max_batch_size: 100000}", "max_batch_size is 100000"},
		{"batching negative max_batch_size", "dynamic_batching: {max_batch_size: -2}", "max_batch_size is -2"},
		{"preferred over max", "dynamic_batching: {max_batch_size: 4, preferred_batch_size: 5}", "preferred_batch_size is 5"},
		{"negative preferred", "dynamic_batching: {max_batch_size: 4, preferred_batch_size: -1}", "preferred_batch_size is -1"},
		{"negative delay", "dynamic_batching: {max_batch_size: 4, max_queue_delay: -1ms}", "max_queue_delay is -1ms"},
		{"delay too long", "dynamic_batching: {max_batch_size: 4, max_queue_delay: 2s}", "max_queue_delay is 2s"},
		{"delay not a duration", "dynamic_batching: {max_batch_size: 4, max_queue_delay: soon}", "cannot unmarshal"},
		{"negative queue size", "dynamic_batching: {max_batch_size: 4, max_queue_size: -1}", "max_queue_size is -1"},
		{"queue too big", "dynamic_batching: {max_batch_size: 4, max_queue_size: 1000000}", "max_queue_size is 1000000"},
		{"negative timeout", "dynamic_batching: {max_batch_size: 4, timeout: -5s}", "timeout is -5s"},
		{"bad batch dim", "dynamic_batching: {max_batch_size: 4, batch_dims: {h: -2}}", `batch_dims["h"] is -2`},
		{"batch dim too big", "dynamic_batching: {max_batch_size: 4, batch_dims: {h: 16}}", `batch_dims["h"] is 16`},
		{"batch dim not an int", "dynamic_batching: {max_batch_size: 4, batch_dims: {h: one}}", "cannot unmarshal"},
		{"unknown batching field", "dynamic_batching: {max_batch_size: 4, max_delay: 1ms}", "field max_delay not found"},
		{"batching not a mapping", "dynamic_batching: 8", "cannot unmarshal"},
		{"warmup dimension 0", "warmup_shapes: {input: [1, 0]}", `warmup_shapes["input"] is [1 0]`},
		{"warmup negative dimension", "warmup_shapes: {input: [-1, 512]}", "dimensions must be >= 1"},
		{"warmup too big", "warmup_shapes: {input: [100000, 100000]}", "more than"},
		{"warmup rank too big", "warmup_shapes: {x: [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]}", "rank 17"},
		{"warmup not a list", "warmup_shapes: {input: 512}", "cannot unmarshal"},
		{"skip_warmup not a bool", "skip_warmup: maybe", "cannot unmarshal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := inference.ParseSessionConfig([]byte(tc.yaml))
			if !errors.Is(err, inference.ErrInvalidArgument) {
				t.Fatalf("error %v does not wrap ErrInvalidArgument", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

func TestParseDynamicBatching(t *testing.T) {
	cfg, err := inference.ParseSessionConfig([]byte(`
dynamic_batching:
  max_batch_size: 8
  preferred_batch_size: 4
  max_queue_delay: 500us
  max_queue_size: 32
  timeout: 100ms
  batch_dims: {h: 1, c: 1, sr: -1}
`))
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.DynamicBatching
	if d == nil || d.MaxBatchSize != 8 || d.Preferred() != 4 || d.MaxQueueDelay != 500*time.Microsecond ||
		d.QueueSize() != 32 || d.Timeout != 100*time.Millisecond || cfg.BatchSize() != 8 {
		t.Fatalf("decoded %+v", d)
	}
	for _, tc := range []struct {
		name string
		rank int
		want int
	}{{"h", 3, 1}, {"input", 2, 0}, {"sr", 1, -1}, {"scalar", 0, -1}, {"h", 1, -1}} {
		if got := d.BatchDim(tc.name, tc.rank); got != tc.want {
			t.Errorf("BatchDim(%s, %d) = %d, want %d", tc.name, tc.rank, got, tc.want)
		}
	}
	def, err := inference.ParseSessionConfig([]byte("dynamic_batching: {max_batch_size: 2}"))
	if err != nil || def.DynamicBatching.Preferred() != 2 || def.DynamicBatching.QueueSize() != 32 {
		t.Errorf("defaults: %+v, %v", def.DynamicBatching, err)
	}
	if off, _ := inference.ParseSessionConfig([]byte("max_batch: 3")); off.DynamicBatching != nil || off.BatchSize() != 3 {
		t.Errorf("batching is on without dynamic_batching: %+v", off)
	}
}

func FuzzParseSessionConfig(f *testing.F) {
	for _, seed := range []string{
		"",
		"providers: [{name: tensorrt, options: {fp16: true}}, {name: cuda}, {name: cpu}]\nintra_op_threads: 2",
		"graph_optimization: all\nmem_arena: true\nmax_concurrency: 3",
		"providers: [{name: cuda, options: {extra: {a: b}}}]",
		"instances: -1",
		"dynamic_batching: {max_batch_size: 8, max_queue_delay: 1ms, batch_dims: {h: 1}}",
		"{",
		"&a [*a]",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := inference.ParseSessionConfig(data)
		if err != nil {
			if !errors.Is(err, inference.ErrInvalidArgument) {
				t.Fatalf("error %v does not wrap ErrInvalidArgument", err)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("parsed config does not validate: %v", err)
		}
		for _, p := range cfg.Providers {
			// The mappings are total on valid configs.
			_ = inference.TensorRTOptions(p.Options, "/models/m/1")
			_ = inference.CUDAOptions(p.Options)
		}
	})
}

func TestTensorRTOptions(t *testing.T) {
	off := false
	for _, tc := range []struct {
		name string
		in   inference.ProviderOptions
		want map[string]string
	}{
		{"defaults: caches in the version folder", inference.ProviderOptions{}, map[string]string{
			"device_id": "0", "trt_fp16_enable": "0",
			"trt_engine_cache_enable": "1", "trt_engine_cache_path": "/models/m/1/trt_cache",
			"trt_timing_cache_enable": "1", "trt_timing_cache_path": "/models/m/1/trt_cache",
		}},
		{"everything", inference.ProviderOptions{
			DeviceID: 1, FP16: true, EngineCacheDir: "/c", TimingCacheDir: "/t", WorkspaceBytes: 1 << 30,
			EPContext: true, Extra: map[string]string{"trt_builder_optimization_level": "5", "trt_fp16_enable": "1"},
		}, map[string]string{
			"device_id": "1", "trt_fp16_enable": "1",
			"trt_engine_cache_enable": "1", "trt_engine_cache_path": "/c",
			"trt_timing_cache_enable": "1", "trt_timing_cache_path": "/t",
			"trt_max_workspace_size":    "1073741824",
			"trt_dump_ep_context_model": "1", "trt_ep_context_file_path": "/models/m/1/model_ctx.onnx",
			"trt_builder_optimization_level": "5",
		}},
		{"caches off, explicit EPContext path", inference.ProviderOptions{EngineCache: &off, TimingCache: &off, EPContext: true, EPContextPath: "/x/ctx.onnx"}, map[string]string{
			"device_id": "0", "trt_fp16_enable": "0",
			"trt_engine_cache_enable": "0", "trt_timing_cache_enable": "0",
			"trt_dump_ep_context_model": "1", "trt_ep_context_file_path": "/x/ctx.onnx",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := inference.TensorRTOptions(tc.in, "/models/m/1"); !maps.Equal(got, tc.want) {
				t.Errorf("got  %v\nwant %v", got, tc.want)
			}
		})
	}
}

func TestCUDAOptions(t *testing.T) {
	for _, tc := range []struct {
		in   inference.ProviderOptions
		want map[string]string
	}{
		{inference.ProviderOptions{}, map[string]string{"device_id": "0"}},
		{inference.ProviderOptions{DeviceID: 2, ArenaLimitBytes: 1 << 31, CudnnConvAlgoSearch: "heuristic", Extra: map[string]string{"do_copy_in_default_stream": "1"}},
			map[string]string{"device_id": "2", "gpu_mem_limit": "2147483648", "cudnn_conv_algo_search": "HEURISTIC", "do_copy_in_default_stream": "1"}},
		{inference.ProviderOptions{CudnnConvAlgoSearch: "exhaustive"}, map[string]string{"device_id": "0", "cudnn_conv_algo_search": "EXHAUSTIVE"}},
	} {
		if got := inference.CUDAOptions(tc.in); !maps.Equal(got, tc.want) {
			t.Errorf("%+v: got %v, want %v", tc.in, got, tc.want)
		}
	}
}
