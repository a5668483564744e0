package serving

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/pipeline"
	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/models/store"
)

// engine turns store versions into routed inference sessions (and
// ensembles over them).
type engine struct {
	env    *inference.Environment
	router *inference.Router
	log    zerolog.Logger
	// acquire is the owner's Acquire: an ensemble's members are the
	// sessions the owner routes (see ensemble.go).
	acquire pipeline.Acquire
	// pipelineMetrics records ensemble stage times (nil: none).
	pipelineMetrics *pipeline.Metrics

	// mu serialises promotions, so that "which versions of a model stay
	// loaded" is decided by one promotion at a time; it also guards costs.
	mu sync.Mutex
	// budget bounds the estimated memory of loaded sessions (0: none); see
	// budget.go.
	budget int64
	costs  map[string]int64 // "model/version" → estimated bytes

	// loadMu serialises session loads, so that the resident memory a load
	// adds can be attributed to it.
	loadMu sync.Mutex
}

// servable is what the engine loads and routes: an ONNX Runtime session,
// or an ensemble whose members are other routed sessions.
type servable interface {
	inference.Model
	Provider() string
	Close() error
}

// load creates the session (or ensemble) for a materialised version folder.
func (e *engine) load(ctx context.Context, v models.VersionInfo, dir string) (servable, error) {
	cfg, err := ParseModelConfig([]byte(v.Manifest.Config))
	if err != nil {
		return nil, err
	}
	mf, ok := v.Manifest.ModelFile()
	switch {
	case cfg.Ensemble != nil && ok:
		return nil, fmt.Errorf("version %s/%s: its config declares an ensemble, but it has a model file %q: %w", v.Model, v.Version, mf.Path, inference.ErrInvalidArgument)
	case cfg.Ensemble != nil:
		return e.loadEnsemble(v, dir, *cfg.Ensemble)
	case !ok:
		return nil, fmt.Errorf("version %s/%s has no model file and its config declares no ensemble: %w", v.Model, v.Version, inference.ErrInvalidArgument)
	}
	e.loadMu.Lock()
	defer e.loadMu.Unlock()
	before := ResidentBytes()
	s, err := e.env.Load(ctx, inference.LoadSpec{
		Model:   v.Model,
		Version: v.Version,
		Path:    filepath.Join(dir, mf.Path),
		Config:  cfg.Session(),
	})
	if err != nil {
		return nil, err // not s: a nil *Session in the interface is not nil
	}
	e.recordCost(v, ResidentBytes()-before)
	if cfg.Pipeline == nil {
		return s, nil
	}
	var labels []string
	if k := cfg.Pipeline.TopK; k != nil && k.Labels != "" {
		if labels, err = readLabels(filepath.Join(dir, k.Labels)); err != nil {
			s.Close()
			return nil, fmt.Errorf("version %s/%s: pipeline labels %s: %w", v.Model, v.Version, k.Labels, err)
		}
	}
	w, err := pipeline.Wrap(s, *cfg.Pipeline, labels)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("version %s/%s: %w", v.Model, v.Version, err)
	}
	return w, nil
}

// serve loads an Active version at boot and routes to it as the default.
func (e *engine) serve(ctx context.Context, v models.VersionInfo, dir string) error {
	s, err := e.load(ctx, v, dir)
	if err != nil {
		return err
	}
	if err := e.router.Add(s, true); err != nil {
		s.Close()
		return err
	}
	e.log.Info().Str("model", v.Model).Str("version", v.Version).Str("provider", s.Provider()).Msg("serving")
	return nil
}

// promote routes new traffic to version v, which the store just made
// Active: s is its new session, or nil when v is already loaded (a
// re-activation, or a switch back to the rollback target). The version that
// was the default stays loaded as the instant rollback target; any other
// loaded version of the model is removed once its in-flight requests finish.
func (e *engine) promote(s servable, v models.VersionInfo) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	previous, loaded := "", false
	for _, ix := range e.router.Index() {
		if ix.Model == v.Model && ix.State == inference.StateServing {
			if ix.Default {
				previous = ix.Version
			}
			loaded = loaded || ix.Version == v.Version
		}
	}
	switch {
	case loaded:
		if s != nil { // loaded twice: keep the routed one
			s.Close()
		}
		if err := e.router.SetDefault(v.Model, v.Version); err != nil {
			return err
		}
	case s == nil:
		return fmt.Errorf("promote %s/%s: the store made it Active but no session is loaded", v.Model, v.Version)
	default:
		if err := e.router.Add(s, true); err != nil {
			s.Close()
			return err
		}
	}
	if previous == v.Version {
		return nil // it was already the default: nothing else changes
	}
	for _, ix := range e.router.Index() {
		if ix.Model == v.Model && ix.State == inference.StateServing && ix.Version != v.Version && ix.Version != previous {
			e.unload(ix.Model, ix.Version, "older than Previous")
		}
	}
	e.fitBudgetLocked(v.Model, v.Version, previous)
	e.log.Info().Str("model", v.Model).Str("version", v.Version).Str("previous", previous).Msg("promoted")
	return nil
}

// routed reports whether (model, version) is loaded and routable.
func (e *engine) routed(model, version string) bool {
	for _, ix := range e.router.Index() {
		if ix.Model == model && ix.Version == version && ix.State == inference.StateServing {
			return true
		}
	}
	return false
}

// loader returns a models.Loader for one activation.
func (e *engine) loader() *versionLoader { return &versionLoader{e: e} }

// versionLoader implements models.Loader: Load creates the session, Warmup
// runs the manifest's golden cases against it. With route set it is also a
// models.Committer: route gets the session right after the store's final
// transaction, both under view (see Owner.view). Otherwise the session is
// handed on with take, or closed by discard when activation failed.
type versionLoader struct {
	e     *engine
	s     servable
	view  *sync.RWMutex
	route func(servable, models.VersionInfo) error
}

// Commit implements models.Committer.
func (l *versionLoader) Commit(commit func() (models.VersionInfo, error)) (models.VersionInfo, error) {
	if l.route == nil {
		return commit()
	}
	l.view.Lock()
	defer l.view.Unlock()
	v, err := commit()
	if err != nil {
		return v, err
	}
	return v, l.route(l.take(), v)
}

// Load implements models.Loader.
func (l *versionLoader) Load(ctx context.Context, v models.VersionInfo, dir string) error {
	s, err := l.e.load(ctx, v, dir)
	if err != nil {
		return err
	}
	l.s = s
	return nil
}

// Warmup implements models.Loader. Each golden case runs once; float outputs
// must match within the case's tolerance, others exactly.
func (l *versionLoader) Warmup(ctx context.Context, v models.VersionInfo) (models.WarmupResult, error) {
	res := models.WarmupResult{Cases: len(v.Manifest.Golden)}
	if l.s == nil {
		return res, errors.New("warm-up before load")
	}
	res.Provider = l.s.Provider()
	start := time.Now()
	defer func() { res.Duration = time.Since(start) }()
	for i, c := range v.Manifest.Golden {
		if err := runGolden(ctx, l.s, c); err != nil {
			res.Duration = time.Since(start)
			res.Error = fmt.Sprintf("golden case %d: %v", i, err)
			return res, errors.New(res.Error)
		}
		res.Passed++
	}
	res.Duration = time.Since(start)
	return res, nil
}

func (l *versionLoader) take() servable {
	s := l.s
	l.s = nil
	return s
}

func (l *versionLoader) discard() {
	if l.s != nil {
		l.s.Close()
		l.s = nil
	}
}

// runGolden runs one golden case and compares its outputs.
func runGolden(ctx context.Context, m inference.Model, c models.GoldenCase) error {
	ins := make([]inference.Tensor, len(c.Inputs))
	for i, g := range c.Inputs {
		t, err := goldenTensor(g)
		if err != nil {
			return fmt.Errorf("input %q: %w", g.Name, err)
		}
		ins[i] = t
	}
	names := make([]string, len(c.Outputs))
	for i, g := range c.Outputs {
		names[i] = g.Name
	}
	outs, err := m.Run(ctx, ins, names, inference.HeapAllocator{})
	if err != nil {
		return err
	}
	for i, g := range c.Outputs {
		got, err := outs[i].Float64s()
		if err != nil {
			return fmt.Errorf("output %q: %w", g.Name, err)
		}
		if len(got) != len(g.Data) {
			return fmt.Errorf("output %q has %d elements, want %d", g.Name, len(got), len(g.Data))
		}
		for j := range got {
			if d := math.Abs(got[j] - g.Data[j]); !(d <= c.Tolerance) {
				return fmt.Errorf("output %q element %d is %g, want %g ± %g", g.Name, j, got[j], g.Data[j], c.Tolerance)
			}
		}
	}
	return nil
}

// goldenTensor encodes a golden tensor's float64 data in its datatype.
func goldenTensor(g models.GoldenTensor) (inference.Tensor, error) {
	dt, ok := inference.ParseDataType(g.Datatype)
	if !ok || dt == inference.Bytes {
		return inference.Tensor{}, fmt.Errorf("datatype %q is not a numeric protocol datatype", g.Datatype)
	}
	n, err := inference.ElementCount(g.Shape)
	if err != nil {
		return inference.Tensor{}, err
	}
	if n != int64(len(g.Data)) {
		return inference.Tensor{}, fmt.Errorf("shape %v needs %d elements, data has %d", g.Shape, n, len(g.Data))
	}
	size := dt.Size()
	buf := make([]byte, int(n)*size)
	for i, f := range g.Data {
		dt.PutFloat64(buf[i*size:], f)
	}
	return inference.Tensor{Name: g.Name, DataType: dt, Shape: g.Shape, Data: buf}, nil
}

// ActivateOffline makes a stored version Active with no node running (the
// `edge-node models import --activate` command): the version is loaded and
// warmed up only to prove it works, then its session is closed; the next
// boot serves it. A version that does not load is recorded
// Failed(LoadError) and the previous Active stays.
func ActivateOffline(ctx context.Context, st *store.Store, env *inference.Environment, model, version string, log zerolog.Logger) (models.VersionInfo, error) {
	e := &engine{env: env, router: inference.NewRouter(), log: log.With().Str("component", "engine").Logger()}
	e.acquire = e.router.Acquire // nothing is routed offline: an ensemble's golden cases cannot run
	l := e.loader()
	defer l.discard() // the session was only for load and warm-up
	return st.Activate(ctx, model, version, l)
}
