package inference

import (
	"fmt"
	"path/filepath"
	"strconv"
	"time"
)

// Execution provider names, as written in SessionConfig.Providers and
// returned by Model.Provider.
const (
	ProviderTensorRT = "tensorrt"
	ProviderCUDA     = "cuda"
	ProviderCPU      = "cpu"
)

// MaxConfigSize bounds a config.yaml file.
const MaxConfigSize = 64 << 10

// SessionConfig is how one model version is run. It is the format of the
// per-model config file of a Triton-style model repository,
// <dir>/<name>/config.yaml, for example:
//
//	providers:
//	  - name: tensorrt
//	    options: {fp16: true, workspace_bytes: 1073741824}
//	  - name: cuda
//	    options: {device_id: 0, cudnn_conv_algo_search: heuristic}
//	  - name: cpu
//	intra_op_threads: 2
//	graph_optimization: all
//	max_concurrency: 4
//
// The zero value runs on the CPU with ONNX Runtime's defaults.
type SessionConfig struct {
	// Providers in preference order. Each one that cannot be used here
	// (not in this ONNX Runtime build, no device) is skipped with one log
	// line. Empty means [cpu]. Without cpu in the list, a session whose
	// providers all fail does not load.
	Providers []ProviderConfig `yaml:"providers"`
	// IntraOpThreads and InterOpThreads size ONNX Runtime's thread pools
	// per ORT session; 0 keeps ONNX Runtime's default (one per core).
	IntraOpThreads int `yaml:"intra_op_threads"`
	InterOpThreads int `yaml:"inter_op_threads"`
	// GraphOptimization is disable, basic, extended or all ("" = all,
	// ONNX Runtime's default).
	GraphOptimization string `yaml:"graph_optimization"`
	// OptimizedModelCache saves ONNX Runtime's optimised graph beside the
	// model (ort_optimized/, keyed by optimisation level, ORT release and
	// CPU features) the first time the version loads on the CPU provider,
	// built on a thread of lower priority; later loads read it with
	// optimisation off. Off by default.
	OptimizedModelCache bool `yaml:"optimized_model_cache"`
	// LoadPriority is low (the default, "") or normal: with low, a load
	// whose sessions start no thread of their own (intra_op_threads 1, CPU
	// provider only) creates them and warms up at nice 10, so it yields
	// the CPU to requests in flight; other loads run at normal priority.
	LoadPriority string `yaml:"load_priority"`
	// MaxBatch is the largest batch (first dimension) the batcher may
	// form; 0 means the model does not batch. Session itself does not use it.
	MaxBatch int `yaml:"max_batch"`
	// MaxConcurrency bounds concurrent Runs of this version; more wait
	// (queue time). 0 means unbounded (bounded by Instances when >1).
	MaxConcurrency int `yaml:"max_concurrency"`
	// Instances is the number of ONNX Runtime sessions behind this
	// version. 1 (the default) shares one ORT session between all
	// concurrent Runs; see docs/architecture-inference.md for why.
	Instances int `yaml:"instances"`
	// MemArena and MemPattern switch ONNX Runtime's CPU memory arena and
	// memory pattern optimisation; nil keeps ONNX Runtime's default (on).
	MemArena   *bool `yaml:"mem_arena"`
	MemPattern *bool `yaml:"mem_pattern"`
	// SkipWarmup skips the warm-up Run Load does before it returns (zeros
	// of the declared input shapes, each variable dimension 1, on every
	// instance), so that the first routed requests do not pay ONNX
	// Runtime's first-run cost. A failed warm-up (a model that rejects
	// such inputs) is logged and does not fail the load.
	SkipWarmup bool `yaml:"skip_warmup"`
	// WarmupShapes gives the warm-up Run's shape of an input by name, for
	// models that reject a variable dimension of 1 (silero_vad wants
	// {input: [1, 512]}).
	WarmupShapes map[string][]int64 `yaml:"warmup_shapes"`
	// DynamicBatching, when set, runs concurrent requests for this version
	// that agree on everything but the batch dimension as one ONNX Runtime
	// Run (see DynamicBatching). nil: every request is its own Run.
	DynamicBatching *DynamicBatching `yaml:"dynamic_batching"`
}

// MaxWarmupBytes bounds one warm-up input (its elements × 8 bytes).
const MaxWarmupBytes = 256 << 20

// shapeBytes is shape's element count × 8 (the widest element), saturating.
func shapeBytes(shape []int64) int64 {
	n, err := ElementCount(shape)
	if err != nil {
		return MaxWarmupBytes + 1
	}
	return n * 8
}

// Limits of DynamicBatching.
const (
	MaxDynamicBatchSize = 1 << 12
	MaxBatchQueueSize   = 1 << 16
	MaxBatchQueueDelay  = time.Second
)

// DynamicBatching is Triton's dynamic batcher, as config.yaml sets it:
//
//	dynamic_batching:
//	  max_batch_size: 8          # required: the most inferences in one Run
//	  preferred_batch_size: 8    # run at once when a batch is this big (default max_batch_size)
//	  max_queue_delay: 500us     # how long the first request of a batch waits for more (default 0)
//	  max_queue_size: 64         # requests waiting; more get 503 + Retry-After (default 16 × max_batch_size)
//	  timeout: 100ms             # a request still waiting after this fails with 503 (default: none)
//	  batch_dims: {h: 1, c: 1, hn: 1, cn: 1}   # per tensor; default 0, -1 = not batched
//
// The batch dimension of every input and output is 0 unless batch_dims
// names another; -1 (and every rank-0 tensor) means the tensor has no
// batch dimension: such an input must be byte-for-byte equal across the
// requests of a batch, and such an output is handed to each of them.
type DynamicBatching struct {
	MaxBatchSize       int            `yaml:"max_batch_size"`
	PreferredBatchSize int            `yaml:"preferred_batch_size"`
	MaxQueueDelay      time.Duration  `yaml:"max_queue_delay"`
	MaxQueueSize       int            `yaml:"max_queue_size"`
	Timeout            time.Duration  `yaml:"timeout"`
	BatchDims          map[string]int `yaml:"batch_dims"`
}

// Preferred is PreferredBatchSize with its default filled in.
func (d DynamicBatching) Preferred() int {
	if d.PreferredBatchSize == 0 {
		return d.MaxBatchSize
	}
	return d.PreferredBatchSize
}

// QueueSize is MaxQueueSize with its default filled in.
func (d DynamicBatching) QueueSize() int {
	if d.MaxQueueSize == 0 {
		return 16 * d.MaxBatchSize
	}
	return d.MaxQueueSize
}

// BatchDim is the batch dimension of the tensor name of the given rank, or
// -1 when it has none.
func (d DynamicBatching) BatchDim(name string, rank int) int {
	dim, ok := d.BatchDims[name]
	if !ok {
		dim = 0
	}
	if dim >= rank {
		return -1
	}
	return dim
}

func (d DynamicBatching) validate() error {
	switch {
	case d.MaxBatchSize < 1 || d.MaxBatchSize > MaxDynamicBatchSize:
		return fmt.Errorf("dynamic_batching: max_batch_size is %d, want 1–%d", d.MaxBatchSize, MaxDynamicBatchSize)
	case d.PreferredBatchSize < 0 || d.PreferredBatchSize > d.MaxBatchSize:
		return fmt.Errorf("dynamic_batching: preferred_batch_size is %d, want 0–max_batch_size (%d)", d.PreferredBatchSize, d.MaxBatchSize)
	case d.MaxQueueDelay < 0 || d.MaxQueueDelay > MaxBatchQueueDelay:
		return fmt.Errorf("dynamic_batching: max_queue_delay is %v, want 0–%v", d.MaxQueueDelay, MaxBatchQueueDelay)
	case d.MaxQueueSize < 0 || d.MaxQueueSize > MaxBatchQueueSize:
		return fmt.Errorf("dynamic_batching: max_queue_size is %d, want 0–%d", d.MaxQueueSize, MaxBatchQueueSize)
	case d.Timeout < 0:
		return fmt.Errorf("dynamic_batching: timeout is %v, must be >= 0", d.Timeout)
	case len(d.BatchDims) > 256:
		return fmt.Errorf("dynamic_batching: %d batch_dims, at most 256", len(d.BatchDims))
	}
	for name, dim := range d.BatchDims {
		if dim < -1 || dim > 15 {
			return fmt.Errorf("dynamic_batching: batch_dims[%q] is %d, want -1–15", name, dim)
		}
	}
	return nil
}

// ProviderConfig is one execution provider and its options.
type ProviderConfig struct {
	Name    string          `yaml:"name"`
	Options ProviderOptions `yaml:"options"`
}

// ProviderOptions holds the typed options of the tensorrt and cuda providers;
// a field that does not apply to the named provider is a config error.
type ProviderOptions struct {
	// DeviceID is the GPU (tensorrt, cuda).
	DeviceID int `yaml:"device_id"`

	// FP16 lets TensorRT build FP16 kernels.
	FP16 bool `yaml:"fp16"`
	// EngineCache keeps built TensorRT engines on disk (default true), in
	// EngineCacheDir (default <model version dir>/trt_cache).
	EngineCache    *bool  `yaml:"engine_cache"`
	EngineCacheDir string `yaml:"engine_cache_dir"`
	// TimingCache keeps TensorRT's layer timing cache (default true), in
	// TimingCacheDir (default: the engine cache dir).
	TimingCache    *bool  `yaml:"timing_cache"`
	TimingCacheDir string `yaml:"timing_cache_dir"`
	// WorkspaceBytes bounds TensorRT's builder workspace; 0 = its default.
	WorkspaceBytes int64 `yaml:"workspace_bytes"`
	// EPContext makes TensorRT write an EPContext model (the ONNX model
	// with the built engine embedded by reference) to EPContextPath
	// (default <model version dir>/model_ctx.onnx), which later loads
	// without rebuilding the engine.
	EPContext     bool   `yaml:"ep_context"`
	EPContextPath string `yaml:"ep_context_path"`

	// ArenaLimitBytes bounds the CUDA memory arena (gpu_mem_limit); 0 =
	// no limit.
	ArenaLimitBytes int64 `yaml:"arena_limit_bytes"`
	// CudnnConvAlgoSearch is exhaustive, heuristic or default.
	CudnnConvAlgoSearch string `yaml:"cudnn_conv_algo_search"`

	// Extra is passed to the provider as is, after the typed fields (it
	// wins on conflicts): the escape hatch for options without a field.
	Extra map[string]string `yaml:"extra"`
}

// Validate checks cfg; errors name the field and wrap ErrInvalidArgument.
func (c SessionConfig) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("session config: "+format+": %w", append(args, ErrInvalidArgument)...)
	}
	if c.LoadPriority != "" && c.LoadPriority != "low" && c.LoadPriority != "normal" {
		return bad("load_priority %q: want low or normal", c.LoadPriority)
	}
	seen := map[string]bool{}
	for i, p := range c.Providers {
		if seen[p.Name] {
			return bad("providers[%d]: %q listed twice", i, p.Name)
		}
		seen[p.Name] = true
		if err := p.validate(); err != nil {
			return bad("providers[%d]: %v", i, err)
		}
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"intra_op_threads", c.IntraOpThreads},
		{"inter_op_threads", c.InterOpThreads},
		{"max_batch", c.MaxBatch},
		{"max_concurrency", c.MaxConcurrency},
		{"instances", c.Instances},
	} {
		if f.v < 0 {
			return bad("%s is %d, must be >= 0", f.name, f.v)
		}
	}
	if c.Instances > 64 {
		return bad("instances is %d, more than 64", c.Instances)
	}
	if _, err := graphOptimizationLevel(c.GraphOptimization); err != nil {
		return bad("%v", err)
	}
	if len(c.WarmupShapes) > 256 {
		return bad("%d warmup_shapes, at most 256", len(c.WarmupShapes))
	}
	for name, shape := range c.WarmupShapes {
		if len(shape) > 16 {
			return bad("warmup_shapes[%q] has rank %d, at most 16", name, len(shape))
		}
		for _, d := range shape {
			if d < 1 {
				return bad("warmup_shapes[%q] is %v: dimensions must be >= 1", name, shape)
			}
		}
		if _, err := ElementCount(shape); err != nil || shapeBytes(shape) > MaxWarmupBytes {
			return bad("warmup_shapes[%q] is %v: more than %d elements", name, shape, MaxWarmupBytes/8)
		}
	}
	if c.DynamicBatching != nil {
		if err := c.DynamicBatching.validate(); err != nil {
			return bad("%v", err)
		}
	}
	return nil
}

// BatchSize is the largest batch a request may carry: dynamic_batching's
// max_batch_size when it is set, else max_batch (0: the model does not batch).
func (c SessionConfig) BatchSize() int {
	if c.DynamicBatching != nil {
		return c.DynamicBatching.MaxBatchSize
	}
	return c.MaxBatch
}

func (p ProviderConfig) validate() error {
	o := p.Options
	if o.DeviceID < 0 {
		return fmt.Errorf("device_id is %d, must be >= 0", o.DeviceID)
	}
	if o.WorkspaceBytes < 0 || o.ArenaLimitBytes < 0 {
		return fmt.Errorf("byte sizes must be >= 0")
	}
	trtOnly := o.FP16 || o.EngineCache != nil || o.EngineCacheDir != "" || o.TimingCache != nil ||
		o.TimingCacheDir != "" || o.WorkspaceBytes != 0 || o.EPContext || o.EPContextPath != ""
	cudaOnly := o.ArenaLimitBytes != 0 || o.CudnnConvAlgoSearch != ""
	switch p.Name {
	case ProviderTensorRT:
		if cudaOnly {
			return fmt.Errorf("tensorrt takes no arena_limit_bytes or cudnn_conv_algo_search (set them on cuda)")
		}
	case ProviderCUDA:
		if trtOnly {
			return fmt.Errorf("cuda takes no TensorRT options (fp16, engine_cache*, timing_cache*, workspace_bytes, ep_context*)")
		}
		if _, ok := cudnnAlgoSearch[o.CudnnConvAlgoSearch]; !ok {
			return fmt.Errorf("cudnn_conv_algo_search %q: want exhaustive, heuristic or default", o.CudnnConvAlgoSearch)
		}
	case ProviderCPU:
		if trtOnly || cudaOnly || o.DeviceID != 0 || len(o.Extra) != 0 {
			return fmt.Errorf("cpu takes no options")
		}
	case "":
		return fmt.Errorf("provider without a name")
	default:
		return fmt.Errorf("unknown provider %q: want tensorrt, cuda or cpu", p.Name)
	}
	return nil
}

var cudnnAlgoSearch = map[string]string{
	"":           "",
	"exhaustive": "EXHAUSTIVE",
	"heuristic":  "HEURISTIC",
	"default":    "DEFAULT",
	"EXHAUSTIVE": "EXHAUSTIVE",
	"HEURISTIC":  "HEURISTIC",
	"DEFAULT":    "DEFAULT",
}

// GraphOptimization levels accepted in SessionConfig.
var graphOptimizationLevels = map[string]int{"disable": 0, "basic": 1, "extended": 2, "all": 99, "": 99}

func graphOptimizationLevel(s string) (int, error) {
	l, ok := graphOptimizationLevels[s]
	if !ok {
		return 0, fmt.Errorf("graph_optimization %q: want disable, basic, extended or all", s)
	}
	return l, nil
}

// TensorRTOptions maps typed TensorRT options to ONNX Runtime's
// TensorRT provider option keys. versionDir is the model version's folder,
// where caches and the EPContext model go unless configured elsewhere.
func TensorRTOptions(o ProviderOptions, versionDir string) map[string]string {
	m := map[string]string{
		"device_id":       strconv.Itoa(o.DeviceID),
		"trt_fp16_enable": boolOpt(o.FP16),
	}
	cacheDir := o.EngineCacheDir
	if cacheDir == "" {
		cacheDir = filepath.Join(versionDir, "trt_cache")
	}
	if o.EngineCache == nil || *o.EngineCache {
		m["trt_engine_cache_enable"] = "1"
		m["trt_engine_cache_path"] = cacheDir
	} else {
		m["trt_engine_cache_enable"] = "0"
	}
	if o.TimingCache == nil || *o.TimingCache {
		m["trt_timing_cache_enable"] = "1"
		dir := o.TimingCacheDir
		if dir == "" {
			dir = cacheDir
		}
		m["trt_timing_cache_path"] = dir
	} else {
		m["trt_timing_cache_enable"] = "0"
	}
	if o.WorkspaceBytes > 0 {
		m["trt_max_workspace_size"] = strconv.FormatInt(o.WorkspaceBytes, 10)
	}
	if o.EPContext {
		p := o.EPContextPath
		if p == "" {
			p = filepath.Join(versionDir, "model_ctx.onnx")
		}
		m["trt_dump_ep_context_model"] = "1"
		m["trt_ep_context_file_path"] = p
	}
	for k, v := range o.Extra {
		m[k] = v
	}
	return m
}

// CUDAOptions maps typed CUDA options to ONNX Runtime's CUDA provider
// option keys.
func CUDAOptions(o ProviderOptions) map[string]string {
	m := map[string]string{"device_id": strconv.Itoa(o.DeviceID)}
	if o.ArenaLimitBytes > 0 {
		m["gpu_mem_limit"] = strconv.FormatInt(o.ArenaLimitBytes, 10)
	}
	if v := cudnnAlgoSearch[o.CudnnConvAlgoSearch]; v != "" {
		m["cudnn_conv_algo_search"] = v
	}
	for k, v := range o.Extra {
		m[k] = v
	}
	return m
}

func boolOpt(b bool) string {
	if b {
		return "1"
	}
	return "0"
}
