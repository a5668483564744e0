package inference

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	ort "github.com/yalue/onnxruntime_go"
)

// PlatformONNX is the protocol's platform string for ONNX models.
const PlatformONNX = "onnxruntime_onnx"

// LoadSpec names a model version and where its ONNX file is.
type LoadSpec struct {
	Model   string
	Version string
	// Path is the .onnx file. Its folder is the model version's folder
	// (TensorRT caches go there by default).
	Path   string
	Config SessionConfig
	// Logger, when set, replaces the environment's logger for this
	// session (it gets the component, model and version fields).
	Logger *zerolog.Logger
}

// RunStats splits a Run's time for the HTTP layer's metrics.
type RunStats struct {
	// Queue is the time spent waiting for a concurrency slot (and, with
	// Instances > 1, for a free ORT session).
	Queue time.Duration
	// Compute is the rest: building tensors, ONNX Runtime, output copies.
	Compute time.Duration
	// Preallocated reports that ONNX Runtime wrote the fixed-size outputs
	// in place into alloc's buffers (no output copy).
	Preallocated bool
	// Runs is how many ONNX Runtime runs it took: more than 1 when a run
	// with preallocated outputs failed and was retried with ORT-allocated
	// ones, or when an FP16/BF16 output of unknown shape had to be probed
	// (see Session.run on onnxruntime_go's copy).
	Runs int
	// SharedRun reports that dynamic batching ran this request in one Run
	// with others and charged that Run to another request of the batch:
	// Triton's execution_count counts a batch once.
	SharedRun bool
}

// Session is one loaded model version: one or more ONNX Runtime sessions
// over the same file. It implements Model; all methods are safe for
// concurrent use.
type Session struct {
	env      *Environment
	log      zerolog.Logger
	name     string
	version  string
	provider string
	cfg      SessionConfig

	inputs      []TensorInfo
	outputs     []TensorInfo
	inIndex     map[string]int
	outIndex    map[string]int
	outStatic   []bool    // output i's metadata shape has no -1
	allStatic   bool      // every fixed-size output is static
	static      [][]int64 // the output shapes when allStatic
	hasLowFloat bool      // some output is FP16 or BF16

	// ORT sessions: shared is used when there is one instance, else free
	// holds the idle ones of all.
	shared *ort.DynamicAdvancedSession
	free   chan *ort.DynamicAdvancedSession
	all    []*ort.DynamicAdvancedSession

	sem     chan struct{} // concurrency slots; nil when unbounded
	closing chan struct{} // closed when Close starts: wakes queued Runs

	runOpts chan *ort.RunOptions // idle RunOptions, reused by cancellable Runs

	shapes shapeCache

	batch *batcher // nil unless the config enables dynamic batching

	optimized      string // the saved optimized model the sessions were created from; "" for the original
	optimizedBuilt bool   // this load built it

	// mu guards closed and inflight; drained is closed once closed is set
	// and inflight is back to 0.
	mu        sync.Mutex
	closed    bool
	inflight  int
	drained   chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// Load creates a Session for spec: it reads the model's inputs and outputs,
// picks the first usable execution provider of spec.Config.Providers and
// creates Config.Instances ONNX Runtime sessions. Errors wrap
// ErrInvalidArgument (config), ErrNotFound (no file), ErrUnsupported (a
// tensor type this package cannot serve) or ErrUnavailable.
func (e *Environment) Load(ctx context.Context, spec LoadSpec) (*Session, error) {
	e.life.RLock()
	defer e.life.RUnlock()
	if e.Closed() {
		return nil, fmt.Errorf("load %s/%s: onnx runtime environment is closed: %w", spec.Model, spec.Version, ErrUnavailable)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("load %s/%s: %w: %w", spec.Model, spec.Version, ErrUnavailable, err)
	}
	if err := spec.Config.Validate(); err != nil {
		return nil, fmt.Errorf("load %s/%s: %w", spec.Model, spec.Version, err)
	}
	if _, err := os.Stat(spec.Path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("load %s/%s: model file %q: %w", spec.Model, spec.Version, spec.Path, ErrNotFound)
		}
		return nil, fmt.Errorf("load %s/%s: model file %q: %v: %w", spec.Model, spec.Version, spec.Path, err, ErrUnavailable)
	}
	cfg := spec.Config
	if cfg.Instances == 0 {
		cfg.Instances = 1
	}
	base := e.log
	if spec.Logger != nil {
		base = spec.Logger.With().Str("component", "inference").Logger()
	}
	s := &Session{
		env:     e,
		log:     base.With().Str("model", spec.Model).Str("version", spec.Version).Logger(),
		name:    spec.Model,
		version: spec.Version,
		cfg:     cfg,
		closing: make(chan struct{}),
		drained: make(chan struct{}),
		runOpts: make(chan *ort.RunOptions, 64),
		shapes:  shapeCache{m: make(map[string][][]int64)},
	}
	if err := s.readMetadata(spec.Path); err != nil {
		return nil, fmt.Errorf("load %s/%s: %w", spec.Model, spec.Version, err)
	}
	if err := s.checkWarmupShapes(); err != nil {
		return nil, fmt.Errorf("load %s/%s: %w", spec.Model, spec.Version, err)
	}
	create := func() error { return s.createSessions(spec.Path) }
	var err error
	if s.lowPriorityLoad() {
		err = atLowPriority(create)
	} else {
		err = create()
	}
	if err != nil {
		return nil, fmt.Errorf("load %s/%s: %w", spec.Model, spec.Version, err)
	}
	if cfg.MaxConcurrency > 0 {
		s.sem = make(chan struct{}, cfg.MaxConcurrency)
	}
	if cfg.DynamicBatching != nil {
		var err error
		if s.batch, err = newBatcher(s); err != nil {
			s.destroy()
			return nil, fmt.Errorf("load %s/%s: %w", spec.Model, spec.Version, err)
		}
	}
	if err := e.register(s); err != nil {
		s.stopBatcher()
		s.destroy()
		return nil, fmt.Errorf("load %s/%s: %w", spec.Model, spec.Version, err)
	}
	if !cfg.SkipWarmup {
		if s.lowPriorityLoad() {
			_ = atLowPriority(func() error { s.warmUp(ctx); return nil })
		} else {
			s.warmUp(ctx)
		}
	}
	ev := s.log.Info().Str("provider", s.provider).Int("instances", cfg.Instances).
		Int("max_concurrency", cfg.MaxConcurrency).Str("path", spec.Path)
	if s.optimized != "" {
		ev = ev.Str("optimized_model", s.optimized).Bool("optimized_model_built", s.optimizedBuilt)
	}
	ev.Msg("model version loaded")
	return s, nil
}

// readMetadata fills the tensor descriptions from the file: from its ONNX
// graph (graphInfo: no ONNX Runtime session), or, for what graphInfo does
// not model, with a throwaway CPU session that skips graph optimisation
// (sessionInfo).
func (s *Session) readMetadata(path string) error {
	ins, outs, err := graphInfo(path)
	if errors.Is(err, errGraphInfo) {
		s.log.Debug().Err(err).Msg("reading inputs and outputs with an onnx runtime session")
		ins, outs, err = sessionInfo(path)
	}
	if err != nil {
		return err
	}
	if s.inputs, err = tensorInfos("input", ins); err != nil {
		return err
	}
	if s.outputs, err = tensorInfos("output", outs); err != nil {
		return err
	}
	s.inIndex = make(map[string]int, len(s.inputs))
	for i, t := range s.inputs {
		s.inIndex[t.Name] = i
	}
	s.outIndex = make(map[string]int, len(s.outputs))
	s.outStatic = make([]bool, len(s.outputs))
	s.allStatic = true
	for i, t := range s.outputs {
		s.outIndex[t.Name] = i
		s.outStatic[i] = isStatic(t.Shape)
		if t.DataType != Bytes && !s.outStatic[i] {
			s.allStatic = false
		}
		if t.DataType == FP16 || t.DataType == BF16 {
			s.hasLowFloat = true
		}
	}
	if s.allStatic {
		s.static = make([][]int64, len(s.outputs))
		for i, t := range s.outputs {
			s.static[i] = t.Shape
		}
	}
	return nil
}

// warmUp runs every ORT session once on zeros of the declared input
// shapes (each variable dimension 1; a BYTES input gets empty strings),
// before the version can be routed. A failure is logged at debug level
// only: zeros at dimension 1 are not a valid input for every model, and
// then the first requests pay the first-run cost as they did before.
func (s *Session) warmUp(ctx context.Context) {
	ins := make([]*Tensor, len(s.inputs))
	for i, info := range s.inputs {
		shape := probeShape(info.Shape)
		if ws, ok := s.cfg.WarmupShapes[info.Name]; ok {
			shape = ws
		}
		n, err := ElementCount(shape)
		if err != nil {
			return
		}
		t := &Tensor{Name: info.Name, DataType: info.DataType, Shape: shape}
		if info.DataType == Bytes {
			t.Strings = make([][]byte, n)
		} else {
			t.Data = make([]byte, int(n)*info.DataType.Size())
		}
		ins[i] = t
	}
	want := make([]int, len(s.outputs))
	for j := range want {
		want[j] = j
	}
	for _, ds := range s.all {
		var st RunStats
		if _, err := s.run(ctx, ds, ins, want, HeapAllocator{}, &st); err != nil {
			s.log.Debug().Err(err).Msg("warm-up run on zeros failed; the first requests pay onnx runtime's first-run cost")
			return
		}
	}
}

// checkWarmupShapes checks the configured warm-up shapes against the
// model's inputs.
func (s *Session) checkWarmupShapes() error {
	for name, shape := range s.cfg.WarmupShapes {
		j, ok := s.inIndex[name]
		if !ok {
			return fmt.Errorf("warmup_shapes names %q, which is not an input (inputs: %s): %w", name, tensorNames(s.inputs), ErrInvalidArgument)
		}
		if err := checkTensor("warmup_shapes input", s.inputs[j], &Tensor{Name: name, DataType: s.inputs[j].DataType, Shape: shape,
			Data: make([]byte, shapeBytes(shape)/8*int64(s.inputs[j].DataType.Size()))}); err != nil && s.inputs[j].DataType != Bytes {
			return err
		}
	}
	return nil
}

// sessionInfo reads a model's inputs and outputs with a throwaway CPU
// session that skips graph optimisation (it never builds a TensorRT engine,
// but costs about a third of a load's CPU: graphInfo is tried first).
func sessionInfo(path string) (ins, outs []ort.InputOutputInfo, err error) {
	opts, err := ort.NewSessionOptions()
	if err != nil {
		return nil, nil, fmt.Errorf("session options: %v: %w", err, ErrUnavailable)
	}
	defer opts.Destroy()
	if err := opts.SetGraphOptimizationLevel(ort.GraphOptimizationLevel(0)); err != nil {
		return nil, nil, fmt.Errorf("session options: %v: %w", err, ErrUnavailable)
	}
	ins, outs, err = ort.GetInputOutputInfoWithOptions(path, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("read model %q: %v: %w", path, err, ErrInvalidArgument)
	}
	return ins, outs, nil
}

func tensorInfos(kind string, infos []ort.InputOutputInfo) ([]TensorInfo, error) {
	out := make([]TensorInfo, len(infos))
	for i, in := range infos {
		if in.OrtValueType != ort.ONNXTypeTensor {
			return nil, fmt.Errorf("%s %q is a %v, only tensors are served: %w", kind, in.Name, in.OrtValueType, ErrUnsupported)
		}
		dt, ok := fromORTType(in.DataType)
		if !ok {
			return nil, fmt.Errorf("%s %q has element type %v: %w", kind, in.Name, in.DataType, ErrUnsupported)
		}
		shape := make([]int64, len(in.Dimensions))
		for j, d := range in.Dimensions {
			if d < 0 {
				d = -1
			}
			shape[j] = d
		}
		out[i] = TensorInfo{Name: in.Name, DataType: dt, Shape: shape}
	}
	return out, nil
}

func isStatic(shape []int64) bool {
	for _, d := range shape {
		if d < 0 {
			return false
		}
	}
	return true
}

// createSessions builds the session options (appending providers in
// preference order) and the ORT sessions.
func (s *Session) createSessions(path string) error {
	opts, provider, err := s.sessionOptions(filepath.Dir(path), true)
	if err != nil {
		return err
	}
	names := func(ts []TensorInfo) []string {
		n := make([]string, len(ts))
		for i, t := range ts {
			n[i] = t.Name
		}
		return n
	}
	inNames, outNames := names(s.inputs), names(s.outputs)
	src := path
	if s.cfg.OptimizedModelCache && provider == ProviderCPU {
		if src, err = s.useOptimized(path, opts, inNames, outNames); err != nil {
			opts.Destroy()
			return err
		}
	}
	for i := 0; i < s.cfg.Instances; i++ {
		ds, err := ort.NewDynamicAdvancedSession(src, inNames, outNames, opts)
		if err != nil && src != path {
			// A saved graph this ONNX Runtime cannot read after all:
			// drop it and load the original with optimisation on.
			s.log.Warn().Err(err).Str("optimized_model", src).Msg("cannot load the saved optimized model; removed, loading the original")
			os.Remove(src)
			src, s.optimized = path, ""
			level, _ := graphOptimizationLevel(s.cfg.GraphOptimization)
			if lerr := opts.SetGraphOptimizationLevel(ort.GraphOptimizationLevel(level)); lerr != nil {
				opts.Destroy()
				s.destroy()
				return fmt.Errorf("session options: graph_optimization: %v: %w", lerr, ErrInvalidArgument)
			}
			ds, err = ort.NewDynamicAdvancedSession(src, inNames, outNames, opts)
		}
		if err != nil && provider != ProviderCPU && s.cpuAllowed() {
			// The provider appended but cannot create a session (a
			// library it needs at run time, no device): fall back.
			s.log.Warn().Str("provider", provider).Err(err).Msg("execution provider failed to create a session, falling back to cpu")
			opts.Destroy()
			if opts, provider, err = s.sessionOptions(filepath.Dir(path), false); err != nil {
				s.destroy()
				return err
			}
			ds, err = ort.NewDynamicAdvancedSession(path, inNames, outNames, opts)
		}
		if err != nil {
			opts.Destroy()
			s.destroy()
			return fmt.Errorf("create onnx runtime session: %v: %w", err, ErrUnavailable)
		}
		s.all = append(s.all, ds)
	}
	opts.Destroy()
	s.provider = provider
	if len(s.all) == 1 {
		s.shared = s.all[0]
	} else {
		s.free = make(chan *ort.DynamicAdvancedSession, len(s.all))
		for _, ds := range s.all {
			s.free <- ds
		}
	}
	return nil
}

// cpuOnly reports whether the CPU provider is the only one configured.
func (s *Session) cpuOnly() bool {
	for _, p := range s.cfg.Providers {
		if p.Name != ProviderCPU {
			return false
		}
	}
	return true
}

func (s *Session) cpuAllowed() bool {
	if len(s.cfg.Providers) == 0 {
		return true
	}
	for _, p := range s.cfg.Providers {
		if p.Name == ProviderCPU {
			return true
		}
	}
	return false
}

// sessionOptions makes ORT session options from s.cfg. With accelerators
// false it appends no provider (CPU only). provider is the provider the
// session will run on: the first one that appended.
func (s *Session) sessionOptions(versionDir string, accelerators bool) (opts *ort.SessionOptions, provider string, err error) {
	opts, err = ort.NewSessionOptions()
	if err != nil {
		return nil, "", fmt.Errorf("session options: %v: %w", err, ErrUnavailable)
	}
	fail := func(what string, err error) (*ort.SessionOptions, string, error) {
		opts.Destroy()
		return nil, "", fmt.Errorf("session options: %s: %v: %w", what, err, ErrInvalidArgument)
	}
	c := s.cfg
	if c.IntraOpThreads > 0 {
		if err := opts.SetIntraOpNumThreads(c.IntraOpThreads); err != nil {
			return fail("intra_op_threads", err)
		}
	}
	if c.InterOpThreads > 0 {
		if err := opts.SetInterOpNumThreads(c.InterOpThreads); err != nil {
			return fail("inter_op_threads", err)
		}
	}
	level, _ := graphOptimizationLevel(c.GraphOptimization)
	if err := opts.SetGraphOptimizationLevel(ort.GraphOptimizationLevel(level)); err != nil {
		return fail("graph_optimization", err)
	}
	if c.MemArena != nil {
		if err := opts.SetCpuMemArena(*c.MemArena); err != nil {
			return fail("mem_arena", err)
		}
	}
	if c.MemPattern != nil {
		if err := opts.SetMemPattern(*c.MemPattern); err != nil {
			return fail("mem_pattern", err)
		}
	}
	providers := c.Providers
	if len(providers) == 0 {
		providers = []ProviderConfig{{Name: ProviderCPU}}
	}
	for _, p := range providers {
		if p.Name == ProviderCPU {
			if provider == "" {
				provider = ProviderCPU
			}
			continue
		}
		if !accelerators {
			continue
		}
		if err := appendProvider(opts, p, versionDir); err != nil {
			s.log.Info().Str("provider", p.Name).Str("reason", err.Error()).Msg("execution provider not available here, skipped")
			continue
		}
		if provider == "" {
			provider = p.Name
		}
	}
	if provider == "" {
		opts.Destroy()
		names := make([]string, len(providers))
		for i, p := range providers {
			names[i] = p.Name
		}
		return nil, "", fmt.Errorf("none of the execution providers [%s] is available and cpu is not allowed: %w", strings.Join(names, ", "), ErrUnsupported)
	}
	return opts, provider, nil
}

func appendProvider(opts *ort.SessionOptions, p ProviderConfig, versionDir string) error {
	switch p.Name {
	case ProviderTensorRT:
		po, err := ort.NewTensorRTProviderOptions()
		if err != nil {
			return err
		}
		defer po.Destroy()
		if err := po.Update(TensorRTOptions(p.Options, versionDir)); err != nil {
			return err
		}
		return opts.AppendExecutionProviderTensorRT(po)
	case ProviderCUDA:
		po, err := ort.NewCUDAProviderOptions()
		if err != nil {
			return err
		}
		defer po.Destroy()
		if err := po.Update(CUDAOptions(p.Options)); err != nil {
			return err
		}
		return opts.AppendExecutionProviderCUDA(po)
	}
	return fmt.Errorf("unknown provider %q", p.Name)
}

// Name implements Model.
func (s *Session) Name() string { return s.name }

// Version implements Model.
func (s *Session) Version() string { return s.version }

// Platform implements Model.
func (s *Session) Platform() string { return PlatformONNX }

// Provider implements Model: the execution provider the session runs on.
func (s *Session) Provider() string { return s.provider }

// Inputs implements Model.
func (s *Session) Inputs() []TensorInfo { return s.inputs }

// Outputs implements Model.
func (s *Session) Outputs() []TensorInfo { return s.outputs }

// BatchStats returns the dynamic batcher's counters; false when the
// version does not batch.
func (s *Session) BatchStats() (BatchStats, bool) {
	if s.batch == nil {
		return BatchStats{}, false
	}
	return s.batch.stats(), true
}

// stopBatcher stops the batcher of a session that is not handed out (a
// load failing after newBatcher).
func (s *Session) stopBatcher() {
	if s.batch != nil {
		close(s.closing)
		<-s.batch.done
	}
}

// Config is the configuration the session was loaded with (Instances
// filled in).
func (s *Session) Config() SessionConfig { return s.cfg }

// Run implements Model. See RunWithStats.
func (s *Session) Run(ctx context.Context, inputs []Tensor, outputs []string, alloc Allocator) ([]Tensor, error) {
	res, _, err := s.RunWithStats(ctx, inputs, outputs, alloc)
	return res, err
}

// RunWithStats is Run that also reports where the time went.
//
// Inputs are handed to ONNX Runtime over their Data without a copy (rank-0
// and BYTES inputs are the exceptions: onnxruntime_go copies them). The
// fixed-size outputs go into buffers from alloc: written in place by ONNX
// Runtime when their shape is known before the run (static in the model, or
// learned from an earlier run with the same input shapes), else copied once
// from the ORT-allocated result. With HeapAllocator that copy is skipped:
// the Go buffer onnxruntime_go already copied into is returned as is.
func (s *Session) RunWithStats(ctx context.Context, inputs []Tensor, outputs []string, alloc Allocator) ([]Tensor, RunStats, error) {
	var st RunStats
	if err := s.enter(); err != nil {
		return nil, st, err
	}
	defer s.exit()
	if err := ctx.Err(); err != nil {
		return nil, st, fmt.Errorf("%s/%s: %w: %w", s.name, s.version, ErrUnavailable, err)
	}
	ordered, err := s.validateInputs(inputs)
	if err != nil {
		return nil, st, err
	}
	want, err := s.requestedOutputs(outputs)
	if err != nil {
		return nil, st, err
	}
	if s.batch != nil {
		return s.batch.run(ctx, ordered, want, alloc)
	}

	t0 := time.Now()
	ds, release, err := s.acquire(ctx)
	if err != nil {
		return nil, st, err
	}
	defer release()
	t1 := time.Now()
	st.Queue = t1.Sub(t0)
	res, err := s.run(ctx, ds, ordered, want, alloc, &st)
	st.Compute = time.Since(t1)
	return res, st, err
}

// enter counts a Run in; it fails once Close has started.
func (s *Session) enter() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("%s/%s is closed: %w", s.name, s.version, ErrUnavailable)
	}
	s.inflight++
	return nil
}

func (s *Session) exit() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inflight--
	if s.closed && s.inflight == 0 {
		close(s.drained)
	}
}

// acquire takes a concurrency slot and an ORT session, waiting while none is
// free (queue time) until ctx is done or Close starts.
func (s *Session) acquire(ctx context.Context) (*ort.DynamicAdvancedSession, func(), error) {
	if s.sem != nil {
		select {
		case s.sem <- struct{}{}:
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("%s/%s: waiting for a run slot: %w: %w", s.name, s.version, ErrUnavailable, ctx.Err())
		case <-s.closing:
			return nil, nil, fmt.Errorf("%s/%s is closing: %w", s.name, s.version, ErrUnavailable)
		}
	}
	if s.shared != nil {
		return s.shared, s.releaseSlot, nil
	}
	select {
	case ds := <-s.free:
		return ds, func() { s.free <- ds; s.releaseSlot() }, nil
	case <-ctx.Done():
		s.releaseSlot()
		return nil, nil, fmt.Errorf("%s/%s: waiting for a session instance: %w: %w", s.name, s.version, ErrUnavailable, ctx.Err())
	case <-s.closing:
		s.releaseSlot()
		return nil, nil, fmt.Errorf("%s/%s is closing: %w", s.name, s.version, ErrUnavailable)
	}
}

func (s *Session) releaseSlot() {
	if s.sem != nil {
		<-s.sem
	}
}

// validateInputs checks inputs against the model and returns them in model
// input order.
func (s *Session) validateInputs(inputs []Tensor) ([]*Tensor, error) {
	ordered := make([]*Tensor, len(s.inputs))
	for i := range inputs {
		t := &inputs[i]
		j, ok := s.inIndex[t.Name]
		if !ok {
			return nil, s.invalid("model has no input %q (inputs: %s)", t.Name, tensorNames(s.inputs))
		}
		if ordered[j] != nil {
			return nil, s.invalid("input %q given twice", t.Name)
		}
		ordered[j] = t
		if err := checkTensor("input", s.inputs[j], t); err != nil {
			return nil, fmt.Errorf("%s/%s: %w", s.name, s.version, err)
		}
	}
	for j, t := range ordered {
		if t == nil {
			return nil, s.invalid("input %q missing", s.inputs[j].Name)
		}
	}
	return ordered, nil
}

// checkTensor validates t against info. Errors wrap ErrInvalidArgument (or
// ErrUnsupported for what onnxruntime_go cannot express).
func checkTensor(kind string, info TensorInfo, t *Tensor) error {
	if t.DataType != info.DataType {
		return fmt.Errorf("%s %q is %v, the model wants %v: %w", kind, t.Name, t.DataType, info.DataType, ErrInvalidArgument)
	}
	if len(t.Shape) != len(info.Shape) {
		return fmt.Errorf("%s %q has shape %v (rank %d), the model wants rank %d %v: %w", kind, t.Name, t.Shape, len(t.Shape), len(info.Shape), info.Shape, ErrInvalidArgument)
	}
	for i, d := range info.Shape {
		if d >= 0 && t.Shape[i] != d {
			return fmt.Errorf("%s %q has shape %v: dimension %d is %d, the model wants %d (%v): %w", kind, t.Name, t.Shape, i, t.Shape[i], d, info.Shape, ErrInvalidArgument)
		}
	}
	n, err := ElementCount(t.Shape)
	if err != nil {
		return fmt.Errorf("%s %q: %w", kind, t.Name, err)
	}
	if t.DataType == Bytes {
		if int64(len(t.Strings)) != n {
			return fmt.Errorf("%s %q has shape %v: it needs %d strings, got %d: %w", kind, t.Name, t.Shape, n, len(t.Strings), ErrInvalidArgument)
		}
		if len(t.Shape) == 0 {
			return fmt.Errorf("%s %q: rank-0 BYTES tensors cannot be passed to ONNX Runtime here: %w", kind, t.Name, ErrUnsupported)
		}
		for i, b := range t.Strings {
			// onnxruntime_go passes strings as C strings: a NUL would
			// silently cut the element short.
			if bytes.IndexByte(b, 0) >= 0 {
				return fmt.Errorf("%s %q: element %d contains a NUL byte, which ONNX Runtime string tensors cannot take here: %w", kind, t.Name, i, ErrUnsupported)
			}
		}
		return nil
	}
	if len(t.Strings) != 0 {
		return fmt.Errorf("%s %q is %v but carries strings: %w", kind, t.Name, t.DataType, ErrInvalidArgument)
	}
	if want := n * int64(t.DataType.Size()); int64(len(t.Data)) != want {
		return fmt.Errorf("%s %q has shape %v of %v: it needs %d bytes, got %d: %w", kind, t.Name, t.Shape, t.DataType, want, len(t.Data), ErrInvalidArgument)
	}
	if len(t.Shape) == 0 && (t.DataType == FP16 || t.DataType == BF16) {
		return fmt.Errorf("%s %q: rank-0 %v tensors cannot be passed to ONNX Runtime here: %w", kind, t.Name, t.DataType, ErrUnsupported)
	}
	return nil
}

// requestedOutputs returns the model output indexes to return, in the
// order of names (all outputs, in model order, when names is empty).
func (s *Session) requestedOutputs(names []string) ([]int, error) {
	if len(names) == 0 {
		want := make([]int, len(s.outputs))
		for i := range want {
			want[i] = i
		}
		return want, nil
	}
	want := make([]int, len(names))
	for i, n := range names {
		j, ok := s.outIndex[n]
		if !ok {
			return nil, s.invalid("model has no output %q (outputs: %s)", n, tensorNames(s.outputs))
		}
		for _, k := range want[:i] {
			if k == j {
				return nil, s.invalid("output %q requested twice", n)
			}
		}
		want[i] = j
	}
	return want, nil
}

func (s *Session) invalid(format string, args ...any) error {
	return fmt.Errorf("%s/%s: "+format+": %w", append([]any{s.name, s.version}, append(args, ErrInvalidArgument)...)...)
}

func tensorNames(ts []TensorInfo) string {
	n := make([]string, len(ts))
	for i, t := range ts {
		n[i] = t.Name
	}
	return strings.Join(n, ", ")
}

// run does the ORT work for one validated request on ds.
func (s *Session) run(ctx context.Context, ds *ort.DynamicAdvancedSession, inputs []*Tensor, want []int, alloc Allocator, st *RunStats) ([]Tensor, error) {
	in := make([]ort.Value, len(inputs))
	defer destroyValues(in)
	for i, t := range inputs {
		v, err := inputValue(t)
		if err != nil {
			return nil, fmt.Errorf("%s/%s: input %q: %w", s.name, s.version, t.Name, err)
		}
		in[i] = v
	}

	ro, stop := s.runOptions(ctx)
	defer stop()

	var key []byte
	var keyBuf [128]byte
	shapes := s.static // nil unless the metadata fixes every output shape
	if shapes == nil {
		key = shapeKey(keyBuf[:0], inputs)
		shapes = s.shapes.get(key)
	}
	if shapes != nil {
		res, err := s.runPreallocated(ctx, ds, in, shapes, want, alloc, ro, st)
		if err == nil {
			return res, nil
		}
		if ctx.Err() != nil {
			return nil, s.runError(ctx, err)
		}
		// The shapes were wrong (a model whose metadata lies, a stale
		// cache entry) or the run failed for another reason: forget and
		// let ONNX Runtime allocate.
		if key != nil {
			s.shapes.forget(key)
		}
		s.log.Debug().Err(err).Msg("run with preallocated outputs failed, retrying with ORT-allocated outputs")
	}

	// Let ONNX Runtime allocate the outputs; onnxruntime_go copies them
	// into Go memory. Except FP16/BF16 outputs: onnxruntime_go v1.27.0
	// sizes its copy at FlattenedSize() *bytes* (half the data), which
	// ONNX Runtime then rejects, so the run fails. Those outputs are
	// preallocated at a guessed shape (each variable dim 1); when the
	// guess is wrong ORT's "Shape mismatch" error names the real shape and
	// the run is repeated with it.
	out := make([]ort.Value, len(s.outputs))
	defer destroyValues(out)
	var low [][]byte
	var guessShapes [][]int64
	if s.hasLowFloat {
		guessShapes = make([][]int64, len(s.outputs))
		low = make([][]byte, len(s.outputs))
		for j, o := range s.outputs {
			if o.DataType == FP16 || o.DataType == BF16 {
				guessShapes[j] = probeShape(o.Shape)
			}
		}
	}
	for attempt := 0; ; attempt++ {
		for j, sh := range guessShapes {
			if sh == nil {
				continue
			}
			n, err := ElementCount(sh)
			if err != nil {
				return nil, err
			}
			low[j] = make([]byte, int(n)*s.outputs[j].DataType.Size())
			if out[j], err = outputValue(s.outputs[j].DataType, sh, low[j]); err != nil {
				return nil, fmt.Errorf("%s/%s: output %q: %w", s.name, s.version, s.outputs[j].Name, err)
			}
		}
		st.Runs++
		err := ds.RunWithOptions(in, out, ro)
		if err == nil {
			break
		}
		destroyValues(out)
		if ctx.Err() != nil || guessShapes == nil || attempt >= len(s.outputs) {
			return nil, s.runError(ctx, err)
		}
		if !learnFromMismatch(err, guessShapes) {
			return nil, s.runError(ctx, err)
		}
	}
	learned := make([][]int64, len(out))
	for i, v := range out {
		learned[i] = v.GetShape()
	}
	if key == nil {
		key = shapeKey(keyBuf[:0], inputs)
	}
	s.shapes.put(key, learned)
	res := make([]Tensor, len(want))
	for i, j := range want {
		info := s.outputs[j]
		if low != nil && low[j] != nil {
			t := Tensor{Name: info.Name, DataType: info.DataType, Shape: cloneShape(learned[j]), Data: low[j]}
			if _, heap := alloc.(HeapAllocator); !heap {
				buf, err := AllocOverwrite(ctx, alloc, len(low[j]))
				if err != nil {
					return nil, fmt.Errorf("%s/%s: output %q: %w", s.name, s.version, info.Name, err)
				}
				copy(buf, low[j])
				t.Data = buf
			}
			res[i] = t
			continue
		}
		t, err := s.collect(ctx, info, out[j], alloc)
		if err != nil {
			return nil, err
		}
		res[i] = t
	}
	return res, nil
}

// probeShape is shape with every variable dimension set to 1.
func probeShape(shape []int64) []int64 {
	p := cloneShape(shape)
	for i, d := range p {
		if d < 0 {
			p[i] = 1
		}
	}
	return p
}

// shapeMismatch matches ONNX Runtime's error for a preallocated output of
// the wrong shape. 1.24 says "OrtValue shape verification failed. Current
// shape:{given} Requested shape:{required}"; older versions "Shape mismatch
// attempting to re-use buffer. {given} != {required}".
var shapeMismatch = regexp.MustCompile(`(?:Current shape:|re-use buffer\. )\{([0-9,]*)\}(?: Requested shape:| != )\{([0-9,]*)\}`)

// learnFromMismatch replaces the guessed shape that ORT rejected in err by
// the shape ORT required. It reports false when err is not such an error
// or names no guessed shape.
func learnFromMismatch(err error, guesses [][]int64) bool {
	m := shapeMismatch.FindStringSubmatch(err.Error())
	if m == nil {
		return false
	}
	given, ok1 := parseDims(m[1])
	required, ok2 := parseDims(m[2])
	if !ok1 || !ok2 {
		return false
	}
	for j, g := range guesses {
		if g != nil && slices.Equal(g, given) && len(required) == len(g) {
			guesses[j] = required
			return true
		}
	}
	return false
}

func parseDims(s string) ([]int64, bool) {
	if s == "" {
		return []int64{}, true
	}
	parts := strings.Split(s, ",")
	dims := make([]int64, len(parts))
	for i, p := range parts {
		d, err := strconv.ParseInt(p, 10, 64)
		if err != nil || d < 0 {
			return nil, false
		}
		dims[i] = d
	}
	return dims, true
}

// runPreallocated runs with every fixed-size output preallocated at shapes:
// requested outputs in buffers from alloc, the others on the Go heap.
// BYTES outputs are always allocated by ONNX Runtime.
func (s *Session) runPreallocated(ctx context.Context, ds *ort.DynamicAdvancedSession, in []ort.Value, shapes [][]int64, want []int, alloc Allocator, ro *ort.RunOptions, st *RunStats) ([]Tensor, error) {
	out := make([]ort.Value, len(s.outputs))
	defer destroyValues(out)
	bufs := make([][]byte, len(s.outputs))
	wanted := make([]bool, len(s.outputs))
	for _, j := range want {
		wanted[j] = true
	}
	for j, info := range s.outputs {
		if info.DataType == Bytes {
			continue
		}
		n, err := ElementCount(shapes[j])
		if err != nil {
			return nil, err
		}
		size := int(n) * info.DataType.Size()
		if wanted[j] {
			if bufs[j], err = AllocOverwrite(ctx, alloc, size); err != nil { // ONNX Runtime writes it in place
				return nil, fmt.Errorf("%s/%s: output %q: %w", s.name, s.version, info.Name, err)
			}
		} else {
			bufs[j] = make([]byte, size)
		}
		if out[j], err = outputValue(info.DataType, shapes[j], bufs[j]); err != nil {
			return nil, fmt.Errorf("%s/%s: output %q: %w", s.name, s.version, info.Name, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	st.Runs++
	if err := ds.RunWithOptions(in, out, ro); err != nil {
		return nil, err
	}
	st.Preallocated = true
	res := make([]Tensor, len(want))
	for i, j := range want {
		info := s.outputs[j]
		if info.DataType == Bytes {
			t, err := s.collect(ctx, info, out[j], alloc)
			if err != nil {
				return nil, err
			}
			res[i] = t
			continue
		}
		if len(shapes[j]) == 0 && !scalarBytes(out[j], bufs[j]) {
			return nil, fmt.Errorf("%s/%s: output %q: unexpected scalar value %T: %w", s.name, s.version, info.Name, out[j], ErrRunFailed)
		}
		res[i] = Tensor{Name: info.Name, DataType: info.DataType, Shape: cloneShape(shapes[j]), Data: bufs[j]}
	}
	return res, nil
}

// collect turns an ORT-allocated output (already copied into Go memory by
// onnxruntime_go) into a Tensor whose bytes come from alloc.
func (s *Session) collect(ctx context.Context, info TensorInfo, v ort.Value, alloc Allocator) (Tensor, error) {
	t := Tensor{Name: info.Name, DataType: info.DataType, Shape: []int64(v.GetShape())}
	if info.DataType == Bytes {
		st, ok := v.(*ort.StringTensor)
		if !ok {
			return t, fmt.Errorf("%s/%s: output %q: got %T for a string output: %w", s.name, s.version, info.Name, v, ErrRunFailed)
		}
		strs, err := st.GetContents()
		if err != nil {
			return t, fmt.Errorf("%s/%s: output %q: %v: %w", s.name, s.version, info.Name, err, ErrRunFailed)
		}
		total := 0
		for _, x := range strs {
			total += len(x)
		}
		buf, err := AllocOverwrite(ctx, alloc, total)
		if err != nil {
			return t, fmt.Errorf("%s/%s: output %q: %w", s.name, s.version, info.Name, err)
		}
		t.Strings = make([][]byte, len(strs))
		off := 0
		for i, x := range strs {
			n := copy(buf[off:], x)
			t.Strings[i] = buf[off : off+n : off+n]
			off += n
		}
		return t, nil
	}
	data, ok := valueBytes(v)
	if !ok {
		return t, fmt.Errorf("%s/%s: output %q: unexpected value %T: %w", s.name, s.version, info.Name, v, ErrRunFailed)
	}
	if _, heap := alloc.(HeapAllocator); heap {
		// onnxruntime_go's copy is already a Go buffer nobody else
		// holds (Destroy drops the tensor's reference): keep it.
		t.Data = data
		return t, nil
	}
	buf, err := AllocOverwrite(ctx, alloc, len(data))
	if err != nil {
		return t, fmt.Errorf("%s/%s: output %q: %w", s.name, s.version, info.Name, err)
	}
	copy(buf, data)
	t.Data = buf
	return t, nil
}

func (s *Session) runError(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%s/%s: run cancelled (%v): %w: %w", s.name, s.version, err, ErrUnavailable, cerr)
	}
	return fmt.Errorf("%s/%s: onnx runtime: %v: %w", s.name, s.version, err, ErrRunFailed)
}

// runOptions returns RunOptions that are terminated when ctx is done (nil
// for a context that cannot be cancelled) and the function that must be
// called after the run.
func (s *Session) runOptions(ctx context.Context) (*ort.RunOptions, func()) {
	if ctx.Done() == nil {
		return nil, func() {}
	}
	var ro *ort.RunOptions
	select {
	case ro = <-s.runOpts:
	default:
		var err error
		if ro, err = ort.NewRunOptions(); err != nil {
			return nil, func() {}
		}
	}
	fired := make(chan struct{})
	stopAfter := context.AfterFunc(ctx, func() {
		defer close(fired)
		_ = ro.Terminate()
	})
	return ro, func() {
		if !stopAfter() {
			// Terminate ran or is running: wait, then do not reuse.
			<-fired
			_ = ro.Destroy()
			return
		}
		select {
		case s.runOpts <- ro:
		default:
			_ = ro.Destroy()
		}
	}
}

func destroyValues(vs []ort.Value) {
	for i, v := range vs {
		// onnxruntime_go can leave a typed nil behind when converting an
		// output fails.
		if v != nil && !reflect.ValueOf(v).IsNil() {
			_ = v.Destroy()
			vs[i] = nil
		}
	}
}

// inputValue wraps t in an ORT value over t.Data (no copy) when it can.
func inputValue(t *Tensor) (ort.Value, error) {
	if t.DataType == Bytes {
		st, err := ort.NewStringTensor(ort.Shape(t.Shape))
		if err != nil {
			return nil, fmt.Errorf("%v: %w", err, ErrInvalidArgument)
		}
		strs := make([]string, len(t.Strings))
		for i, b := range t.Strings {
			strs[i] = string(b)
		}
		if err := st.SetContents(strs); err != nil {
			st.Destroy()
			return nil, fmt.Errorf("%v: %w", err, ErrInvalidArgument)
		}
		return st, nil
	}
	if len(t.Shape) == 0 {
		v, err := scalarValue(t.DataType, t.Data)
		if err != nil {
			return nil, fmt.Errorf("rank-0 %v: %w", t.DataType, err)
		}
		return v, nil
	}
	return outputValue(t.DataType, t.Shape, t.Data)
}

// outputValue makes an ORT tensor over buf (no copy); ONNX Runtime reads
// or writes buf in place.
func outputValue(dt DataType, shape []int64, buf []byte) (ort.Value, error) {
	if len(shape) == 0 {
		return emptyScalar(dt)
	}
	if len(buf) == 0 {
		// A tensor with a 0 dimension: onnxruntime_go wants at least one
		// byte; ONNX Runtime needs none.
		buf = make([]byte, 1)
	}
	v, err := ort.NewCustomDataTensor(ort.Shape(shape), buf, ortType(dt))
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, ErrInvalidArgument)
	}
	return v, nil
}

func cloneShape(s []int64) []int64 {
	c := make([]int64, len(s))
	copy(c, s)
	return c
}

// Close stops new Runs (queued ones fail with ErrUnavailable), waits for
// the in-flight ones to finish, then destroys the ONNX Runtime sessions.
// It is idempotent; concurrent calls all wait.
func (s *Session) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.closing)
		if s.inflight == 0 {
			close(s.drained)
		}
		s.mu.Unlock()
		<-s.drained
		if s.batch != nil {
			<-s.batch.done
		}
		s.destroy()
		s.env.unregister(s)
		s.log.Info().Msg("model version closed")
	})
	return s.closeErr
}

func (s *Session) destroy() {
	var errs []error
	for _, ds := range s.all {
		if err := ds.Destroy(); err != nil {
			errs = append(errs, err)
		}
	}
	s.all, s.shared = nil, nil
	for {
		select {
		case ro := <-s.runOpts:
			_ = ro.Destroy()
			continue
		default:
		}
		break
	}
	s.closeErr = errors.Join(errs...)
}

// ortType maps a DataType to ONNX Runtime's element type.
func ortType(d DataType) ort.TensorElementDataType {
	switch d {
	case Bool:
		return ort.TensorElementDataTypeBool
	case Uint8:
		return ort.TensorElementDataTypeUint8
	case Uint16:
		return ort.TensorElementDataTypeUint16
	case Uint32:
		return ort.TensorElementDataTypeUint32
	case Uint64:
		return ort.TensorElementDataTypeUint64
	case Int8:
		return ort.TensorElementDataTypeInt8
	case Int16:
		return ort.TensorElementDataTypeInt16
	case Int32:
		return ort.TensorElementDataTypeInt32
	case Int64:
		return ort.TensorElementDataTypeInt64
	case FP16:
		return ort.TensorElementDataTypeFloat16
	case BF16:
		return ort.TensorElementDataTypeBFloat16
	case FP32:
		return ort.TensorElementDataTypeFloat
	case FP64:
		return ort.TensorElementDataTypeDouble
	case Bytes:
		return ort.TensorElementDataTypeString
	}
	return ort.TensorElementDataTypeUndefined
}

func fromORTType(t ort.TensorElementDataType) (DataType, bool) {
	for d := Bool; d <= Bytes; d++ {
		if ortType(d) == t {
			return d, true
		}
	}
	return Invalid, false
}
