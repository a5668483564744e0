package inference

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeai/edge-node/errdefs"

	"github.com/rs/zerolog"
)

// Version states in Router.Index.
const (
	StateServing  = "serving"  // routable
	StateDraining = "draining" // removed: waiting for in-flight requests, then closed
)

// Router maps (model, version) to the Model serving it. Each Acquire gets
// exactly one version and holds it until release, so a version can be
// swapped (Add the new one, SetDefault, Remove the old one) while requests
// run: requests that acquired the old version finish on it, later ones get
// the new one. All methods are safe for concurrent use.
//
// For rollouts a model may also have a canary (SetCanary: a share of the
// requests for the default version go to it) or a shadow (SetShadow: a
// share of them are mirrored to it after the default answered). Every
// routed version keeps VersionStats (Stats), which the rollout gates read.
type Router struct {
	// mu guards models, draining and every routedModel's fields. Acquire
	// takes it shared; every change takes it exclusively, which is what
	// makes Acquire atomic with respect to Remove, SetDefault, SetCanary
	// and SetShadow.
	mu       sync.RWMutex
	models   map[string]*routedModel
	draining map[*routedVersion]struct{}

	// shadowSlots bounds concurrent shadow runs (all models together): a
	// sampled request that finds no free slot is not mirrored.
	shadowSlots chan struct{}
	log         zerolog.Logger
}

type routedModel struct {
	versions map[string]*routedVersion
	def      string // default version; "" = none

	canary    *routedVersion // nil: none
	canaryCut uint64         // share of default requests, as a fraction of 2^64
	shadow    *routedVersion // nil: none
	shadowCut uint64

	// canarySeq and shadowSeq number the default-routed requests; each
	// request's share test is on a hash of its number (see sampled).
	// Atomic: updated under mu held shared.
	canarySeq, shadowSeq atomic.Uint64
	// shadowSkipped counts sampled requests not mirrored (no free slot).
	shadowSkipped atomic.Uint64
}

// routedVersion is one routed Model. It is itself the Model that Acquire
// hands out: it delegates to m and records VersionStats around Run.
type routedVersion struct {
	m Model
	// inflight counts acquired, not yet released uses (and shadow runs).
	// Add happens only under Router.mu (shared) on a routable version;
	// Wait only after the version was made unroutable under Router.mu
	// (exclusive), so no Add can race the Wait.
	inflight sync.WaitGroup
	stats    VersionStats
}

// RouterOptions configure NewRouterWith.
type RouterOptions struct {
	// ShadowConcurrency bounds concurrent shadow runs; default 1. Shadow
	// runs take CPU from the primary path, so keep it below the cores.
	ShadowConcurrency int
	// Logger gets shadow run failures (at debug level).
	Logger zerolog.Logger
}

// NewRouter returns an empty Router with the default options.
func NewRouter() *Router { return NewRouterWith(RouterOptions{Logger: zerolog.Nop()}) }

// NewRouterWith returns an empty Router.
func NewRouterWith(opts RouterOptions) *Router {
	if opts.ShadowConcurrency <= 0 {
		opts.ShadowConcurrency = 1
	}
	return &Router{
		models:      make(map[string]*routedModel),
		draining:    make(map[*routedVersion]struct{}),
		shadowSlots: make(chan struct{}, opts.ShadowConcurrency),
		log:         opts.Logger.With().Str("component", "router").Logger(),
	}
}

// Add makes m routable under (m.Name(), m.Version()). The first version of
// a model becomes its default; makeDefault makes m the default in any case.
// Adding a version that is already routed is an error wrapping
// ErrInvalidArgument.
func (r *Router) Add(m Model, makeDefault bool) error {
	name, version := m.Name(), m.Version()
	if name == "" || version == "" {
		return fmt.Errorf("router: model %q version %q: name and version must be set: %w", name, version, ErrInvalidArgument)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rm := r.models[name]
	if rm == nil {
		rm = &routedModel{versions: make(map[string]*routedVersion)}
		r.models[name] = rm
	}
	if _, ok := rm.versions[version]; ok {
		return fmt.Errorf("router: %s/%s is already routed: %w", name, version, ErrInvalidArgument)
	}
	rm.versions[version] = &routedVersion{m: m}
	if makeDefault || rm.def == "" {
		rm.def = version
	}
	return nil
}

// Acquire returns the Model for (model, version), version "" meaning the
// model's default, and a release function that must be called exactly once
// when the request is done with it (further calls do nothing). Unknown
// models and versions are errors wrapping ErrNotFound.
//
// With version "" and a canary set, the canary's share of requests get the
// canary; with a shadow set, its share of the requests that get the default
// are mirrored to the shadow after they ran (see SetShadow). A named
// version is always that version.
func (r *Router) Acquire(model, version string) (Model, func(), error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	rm := r.models[model]
	if rm == nil {
		return nil, nil, unknownModel("'" + model + "' is not found")
	}
	byDefault := version == ""
	if byDefault {
		if rm.def == "" {
			return nil, nil, unknownModel("'" + model + "' has no available versions")
		}
		version = rm.def
	}
	rv := rm.versions[version]
	if rv == nil {
		return nil, nil, unknownModel("'" + model + "' version " + version + " is not found")
	}
	if byDefault && rm.canary != nil && sampled(rm.canarySeq.Add(1), rm.canaryCut) {
		rv = rm.canary
	} else if byDefault && rm.shadow != nil && sampled(rm.shadowSeq.Add(1), rm.shadowCut) {
		select {
		case r.shadowSlots <- struct{}{}:
			rv.inflight.Add(1)
			rm.shadow.inflight.Add(1)
			sr := &shadowRun{routedVersion: rv, shadow: rm.shadow, r: r}
			var once sync.Once
			return sr, func() { once.Do(sr.release) }, nil
		default:
			rm.shadowSkipped.Add(1)
		}
	}
	rv.inflight.Add(1)
	var once sync.Once
	return rv, func() { once.Do(rv.inflight.Done) }, nil
}

// unknownModel is Acquire's not-found error, worded as Triton's (clients
// match on its start: "Request for unknown model: 'x' is not found").
func unknownModel(what string) error {
	return errdefs.Sentinel(ErrNotFound, "Request for unknown model: "+what)
}

// sampled reports whether request number n falls in a share cut/2^64: n is
// hashed by splitmix64's finaliser, and the share is the fraction of hashes
// below cut. The choice for one request tells nothing about the next, so a
// periodic client pattern cannot line up with it, and neither can clients
// whose timing depends on earlier choices (a canary that fails fast makes
// its clients send sooner). A Weyl sequence (n·φ mod 1) was used before: it
// is exact to a few requests, but its choices follow from the ones before,
// and closed-loop clients locked onto it (TestRouterCanaryIgnoresClientTiming:
// the canary saw half its share of failing inputs). The count is binomial:
// within 4·sqrt(N·p·(1−p)) of N·p.
func sampled(n, cut uint64) bool {
	z := n * 0x9E3779B97F4A7C15
	z = (z ^ z>>30) * 0xBF58476D1CE4E5B9
	z = (z ^ z>>27) * 0x94D049BB133111EB
	return z^z>>31 < cut
}

func shareCut(share float64) uint64 {
	switch {
	case share <= 0:
		return 0
	case share >= 1:
		return math.MaxUint64
	}
	return uint64(share * (1 << 64))
}

// SetCanary sends share (0–1) of the model's default-routed requests to
// version, which must be routed and not the default. version "" (or share
// 0) clears the canary. A model has at most one canary.
func (r *Router) SetCanary(model, version string, share float64) error {
	return r.setCandidate(model, version, share, true)
}

// SetShadow mirrors share (0–1) of the requests that the model's default
// version answers to version, which must be routed and not the default.
// The mirror runs after the primary Run returned, on copies of the inputs
// and outputs, in its own goroutine, bounded by ShadowConcurrency (a
// sampled request with no free slot is not mirrored); its outputs are
// compared with the primary's (CompareOutputs) and recorded in the
// shadow's Stats. The shadow never answers a request and its errors never
// reach the client. version "" clears the shadow.
func (r *Router) SetShadow(model, version string, share float64) error {
	return r.setCandidate(model, version, share, false)
}

func (r *Router) setCandidate(model, version string, share float64, canary bool) error {
	if math.IsNaN(share) || share < 0 || share > 1 {
		return fmt.Errorf("router: share %v: want 0–1: %w", share, ErrInvalidArgument)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rm := r.models[model]
	if rm == nil {
		return fmt.Errorf("model %q: %w", model, ErrNotFound)
	}
	var rv *routedVersion
	if version != "" && share > 0 {
		if rv = rm.versions[version]; rv == nil {
			return fmt.Errorf("model %q version %q: %w", model, version, ErrNotFound)
		}
		if version == rm.def {
			return fmt.Errorf("router: %s/%s is the default version; it cannot also be a candidate: %w", model, version, ErrInvalidArgument)
		}
	}
	if canary {
		rm.canary, rm.canaryCut = rv, shareCut(share)
	} else {
		rm.shadow, rm.shadowCut = rv, shareCut(share)
	}
	return nil
}

// Stats returns a snapshot of a routed version's counters.
func (r *Router) Stats(model, version string) (StatsSnapshot, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	rm := r.models[model]
	if rm == nil || rm.versions[version] == nil {
		return StatsSnapshot{}, fmt.Errorf("model %q version %q: %w", model, version, ErrNotFound)
	}
	return rm.versions[version].stats.Snapshot(), nil
}

// Traffic is how a model's default-routed requests are split.
type Traffic struct {
	Default string
	// Canary gets CanaryShare of them; Shadow gets a copy of ShadowShare.
	Canary, Shadow           string
	CanaryShare, ShadowShare float64
	// ShadowSkipped counts sampled requests that were not mirrored for
	// lack of a free shadow slot.
	ShadowSkipped uint64
}

// Traffic returns how the model's requests are split.
func (r *Router) Traffic(model string) (Traffic, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	rm := r.models[model]
	if rm == nil {
		return Traffic{}, fmt.Errorf("model %q: %w", model, ErrNotFound)
	}
	t := Traffic{Default: rm.def, ShadowSkipped: rm.shadowSkipped.Load()}
	if rm.canary != nil {
		t.Canary, t.CanaryShare = rm.canary.m.Version(), float64(rm.canaryCut)/(1<<64)
	}
	if rm.shadow != nil {
		t.Shadow, t.ShadowShare = rm.shadow.m.Version(), float64(rm.shadowCut)/(1<<64)
	}
	return t, nil
}

// SetDefault makes version the default of model.
func (r *Router) SetDefault(model, version string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	rm := r.models[model]
	if rm == nil {
		return fmt.Errorf("model %q: %w", model, ErrNotFound)
	}
	if _, ok := rm.versions[version]; !ok {
		return fmt.Errorf("model %q version %q: %w", model, version, ErrNotFound)
	}
	rm.def = version
	if rm.canary != nil && rm.canary.m.Version() == version {
		rm.canary, rm.canaryCut = nil, 0
	}
	if rm.shadow != nil && rm.shadow.m.Version() == version {
		rm.shadow, rm.shadowCut = nil, 0
	}
	return nil
}

// Remove stops routing new requests to (model, version), waits until every
// request that acquired it has released it, then closes it if it is an
// io.Closer, returning Close's error. If it was the default, the model has
// no default until SetDefault (or Add with makeDefault): a hot swap sets
// the new default before removing the old version. A removed canary or
// shadow stops being one at once; shadow runs in progress finish first.
func (r *Router) Remove(model, version string) error {
	r.mu.Lock()
	rm := r.models[model]
	var rv *routedVersion
	if rm != nil {
		rv = rm.versions[version]
	}
	if rv == nil {
		r.mu.Unlock()
		return fmt.Errorf("model %q version %q: %w", model, version, ErrNotFound)
	}
	delete(rm.versions, version)
	if rm.def == version {
		rm.def = ""
	}
	if rm.canary == rv {
		rm.canary, rm.canaryCut = nil, 0
	}
	if rm.shadow == rv {
		rm.shadow, rm.shadowCut = nil, 0
	}
	if len(rm.versions) == 0 {
		delete(r.models, model)
	}
	r.draining[rv] = struct{}{}
	r.mu.Unlock()

	rv.inflight.Wait()
	var err error
	if c, ok := rv.m.(io.Closer); ok {
		err = c.Close()
	}
	r.mu.Lock()
	delete(r.draining, rv)
	r.mu.Unlock()
	return err
}

// Close removes every version (see Remove) and returns the errors joined.
func (r *Router) Close() error {
	var errs []error
	for _, e := range r.Index() {
		if e.State == StateServing {
			if err := r.Remove(e.Model, e.Version); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// IndexEntry is one version in Router.Index.
type IndexEntry struct {
	Model    string
	Version  string
	Default  bool
	State    string // StateServing or StateDraining
	Provider string
}

// Index lists the routed and draining versions, sorted by model then
// version.
func (r *Router) Index() []IndexEntry {
	r.mu.RLock()
	var out []IndexEntry
	for name, rm := range r.models {
		for v, rv := range rm.versions {
			out = append(out, IndexEntry{Model: name, Version: v, Default: v == rm.def, State: StateServing, Provider: rv.m.Provider()})
		}
	}
	for rv := range r.draining {
		out = append(out, IndexEntry{Model: rv.m.Name(), Version: rv.m.Version(), State: StateDraining, Provider: rv.m.Provider()})
	}
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Model != out[j].Model {
			return out[i].Model < out[j].Model
		}
		if out[i].Version != out[j].Version {
			return out[i].Version < out[j].Version
		}
		return out[i].State > out[j].State // serving before draining
	})
	return out
}

// Model methods of routedVersion: delegate to m; Run records stats.

func (v *routedVersion) Name() string          { return v.m.Name() }
func (v *routedVersion) Version() string       { return v.m.Version() }
func (v *routedVersion) Platform() string      { return v.m.Platform() }
func (v *routedVersion) Provider() string      { return v.m.Provider() }
func (v *routedVersion) Inputs() []TensorInfo  { return v.m.Inputs() }
func (v *routedVersion) Outputs() []TensorInfo { return v.m.Outputs() }

// Config is the version's SessionConfig when its Model has one (a
// *Session), else the zero config.
func (v *routedVersion) Config() SessionConfig {
	if c, ok := v.m.(interface{ Config() SessionConfig }); ok {
		return c.Config()
	}
	return SessionConfig{}
}

// ObserveRequest records a frontend's view of one request in the version's
// stats (Triton's statistics extension; Router.Stats reads them).
func (v *routedVersion) ObserveRequest(t RequestTimes) { v.stats.ObserveRequest(t) }

// Run implements Model.
func (v *routedVersion) Run(ctx context.Context, inputs []Tensor, outputs []string, alloc Allocator) ([]Tensor, error) {
	start := time.Now()
	outs, err := v.m.Run(ctx, inputs, outputs, alloc)
	v.stats.observe(ctx, time.Since(start), err)
	return outs, err
}

// statsModel is a Model that splits its Run time (*Session).
type statsModel interface {
	RunWithStats(ctx context.Context, inputs []Tensor, outputs []string, alloc Allocator) ([]Tensor, RunStats, error)
}

// RunWithStats is Session.RunWithStats when the version has it (the HTTP
// layer's queue/compute metrics), else Run with the whole time as compute.
func (v *routedVersion) RunWithStats(ctx context.Context, inputs []Tensor, outputs []string, alloc Allocator) ([]Tensor, RunStats, error) {
	start := time.Now()
	var outs []Tensor
	var st RunStats
	var err error
	if sm, ok := v.m.(statsModel); ok {
		outs, st, err = sm.RunWithStats(ctx, inputs, outputs, alloc)
	} else {
		outs, err = v.m.Run(ctx, inputs, outputs, alloc)
		st = RunStats{Compute: time.Since(start), Runs: 1}
	}
	v.stats.observe(ctx, time.Since(start), err)
	return outs, st, err
}

// shadowRun is what Acquire hands out for a request sampled for mirroring:
// the primary version, plus a claim on a shadow slot and on the shadow
// version's inflight count. Whoever sets handed first (the Run that starts
// the mirror, or release when no Run did) gives both back.
type shadowRun struct {
	*routedVersion
	shadow *routedVersion
	r      *Router
	handed atomic.Bool
}

// Run implements Model: the primary's Run, then the mirror.
func (s *shadowRun) Run(ctx context.Context, inputs []Tensor, outputs []string, alloc Allocator) ([]Tensor, error) {
	outs, err := s.routedVersion.Run(ctx, inputs, outputs, alloc)
	s.mirror(err, inputs, outputs, outs)
	return outs, err
}

// RunWithStats implements the HTTP layer's stats interface, like Run.
func (s *shadowRun) RunWithStats(ctx context.Context, inputs []Tensor, outputs []string, alloc Allocator) ([]Tensor, RunStats, error) {
	outs, st, err := s.routedVersion.RunWithStats(ctx, inputs, outputs, alloc)
	s.mirror(err, inputs, outputs, outs)
	return outs, st, err
}

// mirror starts the shadow run on copies of the request (the caller's
// buffers are released when its request ends). A failed primary run is not
// mirrored: there is nothing to compare with.
func (s *shadowRun) mirror(err error, inputs []Tensor, names []string, primary []Tensor) {
	if err != nil || !s.handed.CompareAndSwap(false, true) {
		return
	}
	ins, want := cloneTensors(inputs), cloneTensors(primary)
	names = append([]string(nil), names...)
	go func() {
		defer s.giveBack()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		start := time.Now()
		got, err := s.shadow.m.Run(ctx, ins, names, HeapAllocator{})
		s.shadow.stats.observe(ctx, time.Since(start), err)
		if err != nil {
			s.r.log.Debug().Err(err).Str("model", s.shadow.m.Name()).Str("version", s.shadow.m.Version()).Msg("shadow run failed")
			return
		}
		s.shadow.stats.addDrift(CompareOutputs(want, got))
	}()
}

func (s *shadowRun) giveBack() {
	s.shadow.inflight.Done()
	<-s.r.shadowSlots
}

func (s *shadowRun) release() {
	s.routedVersion.inflight.Done()
	if s.handed.CompareAndSwap(false, true) {
		s.giveBack()
	}
}

func cloneTensors(ts []Tensor) []Tensor {
	out := make([]Tensor, len(ts))
	for i, t := range ts {
		out[i] = Tensor{Name: t.Name, DataType: t.DataType, Shape: append([]int64(nil), t.Shape...)}
		if t.Data != nil {
			out[i].Data = append([]byte(nil), t.Data...)
		}
		if t.Strings != nil {
			out[i].Strings = make([][]byte, len(t.Strings))
			for j, b := range t.Strings {
				out[i].Strings[j] = append([]byte(nil), b...)
			}
		}
	}
	return out
}
