package serving

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/pipeline"
	"github.com/edgeai/edge-node/internal/changes"
	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/models/store"
)

// ErrRolloutAborted is the cause recorded when a rollout is stopped by an
// operator, a desired state or shutdown rather than by its gates.
var ErrRolloutAborted = errors.New("rollout aborted")

// Config is what the owner is built from. Store, Router and Env are opened
// (and closed) by the caller; the owner only changes what they hold.
type Config struct {
	Store  *store.Store
	Router *inference.Router
	Env    *inference.Environment
	// MemoryBudgetBytes bounds the estimated memory of loaded sessions
	// (0: none; see budget.go).
	MemoryBudgetBytes int64
	// EvalInterval is how often a rollout's gates are evaluated (default
	// one second).
	EvalInterval time.Duration
	// PipelineMetrics records the stage times of ensembles (nil: none).
	PipelineMetrics *pipeline.Metrics
}

// Owner is the one owner of what the node has loaded and routed. See the
// package doc for its lock and its precedence rules.
type Owner struct {
	store    *store.Store
	router   *inference.Router
	engine   *engine
	log      zerolog.Logger
	interval time.Duration

	// mu serialises every version change. Each is a store transition and
	// the matching router change, made together under mu, so that whenever
	// mu is free the router's default version of every model is the one
	// the store calls Active.
	mu sync.Mutex
	// view makes each version change one step for readers that do not
	// hold mu (Models, Model, Version: the admin API, the status to the
	// cloud, the model metrics): a change holds it for writing from the
	// store transaction that records it to the router's switch; readers
	// hold it for reading. No load happens under it (the store calls back
	// through versionLoader.Commit only for the final transaction), so a
	// reader waits at most for one transaction and one routing switch.
	view sync.RWMutex
	// running are the rollouts in progress, by model (guarded by mu).
	running map[string]*rolloutRun

	ctx    context.Context // cancelled by Close: stops rollouts
	cancel context.CancelFunc
	wg     sync.WaitGroup // rollout goroutines

	changes changes.Feed

	closeOnce sync.Once
}

// New builds the owner. Nothing is loaded until Boot.
func New(cfg Config, log zerolog.Logger) *Owner {
	interval := cfg.EvalInterval
	if interval <= 0 {
		interval = time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	o := &Owner{
		store:  cfg.Store,
		router: cfg.Router,
		engine: &engine{env: cfg.Env, router: cfg.Router, log: log.With().Str("component", "engine").Logger(),
			budget: cfg.MemoryBudgetBytes, pipelineMetrics: cfg.PipelineMetrics},
		log:      log.With().Str("component", "serving").Logger(),
		interval: interval,
		running:  map[string]*rolloutRun{},
		ctx:      ctx,
		cancel:   cancel,
	}
	// An ensemble's members go through the one owner like any request.
	o.engine.acquire = o.Acquire
	return o
}

// Close aborts every rollout in progress (each candidate retired, the
// abort recorded) and waits for them. It runs before the router and the
// store close; it is idempotent.
func (o *Owner) Close() {
	o.closeOnce.Do(func() {
		o.cancel()
		o.wg.Wait()
		o.changes.Close()
	})
}

// Subscribe returns a channel that receives a value after every change the
// owner makes (activation, rollback, rollout decision, delete, import,
// boot). Changes are coalesced: a slow reader gets one value for many. The
// channel is closed when ctx ends or the owner closes.
func (o *Owner) Subscribe(ctx context.Context) <-chan struct{} { return o.changes.Subscribe(ctx) }

// Acquire returns the session that serves (model, version) — version "" is
// the model's default — and its release func; the inference frontends call
// it for every request.
func (o *Owner) Acquire(model, version string) (inference.Model, func(), error) {
	return o.router.Acquire(model, version)
}

// Boot serves what the store says is Active (the offline boot: no network),
// then imports the model repository folder repo (if not empty) and
// activates any model's newest imported version that is newer than its
// Active one.
func (o *Owner) Boot(ctx context.Context, repo string) error {
	defer o.changes.Notify()
	report, err := o.store.Boot(ctx)
	if err != nil {
		return fmt.Errorf("store boot check: %w", err)
	}
	for _, f := range report.Failed {
		o.log.Warn().Str("model", f.Model).Str("version", f.Version).Str("reason", string(f.Reason)).Str("detail", f.Detail).Msg("version failed the boot check")
	}
	o.mu.Lock()
	for _, s := range report.Serve {
		if o.unloaded(ctx, s.Info.Model) {
			o.log.Info().Str("model", s.Info.Model).Str("version", s.Info.Version).Msg("not loaded: the model was unloaded by repository control (load it, or clear its override)")
			continue
		}
		o.serveAtBootLocked(ctx, s.Info, s.Dir)
	}
	o.mu.Unlock()
	if repo == "" {
		return nil
	}
	res, err := o.store.ImportRepository(ctx, repo)
	if err != nil {
		return fmt.Errorf("model repository %s: %w", repo, err)
	}
	touched := map[string]bool{}
	for _, v := range res.Imported {
		touched[v.Model] = true
	}
	for name := range touched {
		mi, err := o.store.Model(ctx, name)
		if err != nil {
			return err
		}
		latest, ok := store.LatestReady(mi)
		if !ok || (mi.Active != "" && models.CompareVersions(latest, mi.Active) <= 0) || o.unloaded(ctx, name) {
			continue
		}
		o.mu.Lock()
		_, err = o.activateLocked(ctx, name, latest)
		o.mu.Unlock()
		if err != nil {
			o.log.Error().Err(err).Str("model", name).Str("version", latest).Msg("cannot activate imported version")
		}
	}
	return nil
}

// serveAtBootLocked loads an Active version found by the boot check. When
// it does not load, the store records Failed(LoadError), which hands Active
// over to the Previous version if that is Retired; it then loads that one,
// and so on, each version at most once.
func (o *Owner) serveAtBootLocked(ctx context.Context, v models.VersionInfo, dir string) {
	tried := map[string]bool{}
	for {
		tried[v.Version] = true
		err := o.engine.serve(ctx, v, dir)
		if err == nil {
			return
		}
		log := o.log.With().Str("model", v.Model).Str("version", v.Version).Logger()
		log.Error().Err(err).Msg("cannot load active version")
		if _, ferr := o.store.Fail(ctx, v.Model, v.Version, models.ReasonLoadError, err.Error()); ferr != nil {
			log.Error().Err(ferr).Msg("recording the load failure")
			return
		}
		mi, err := o.store.Model(ctx, v.Model)
		if err != nil || mi.Active == "" || tried[mi.Active] {
			return
		}
		log.Warn().Str("previous", mi.Active).Msg("serving the previous version instead")
		if dir, err = o.store.Materialize(ctx, v.Model, mi.Active); err == nil {
			v, err = o.store.Version(ctx, v.Model, mi.Active)
		}
		if err != nil {
			log.Error().Err(err).Str("previous", mi.Active).Msg("cannot prepare the previous version")
			return
		}
	}
}

// Admin is how a local operator's action is treated (the admin API).
type Admin struct {
	// AbortRollout aborts a running or held rollout of another version of
	// the model first. Without it such a rollout makes the action fail
	// with an error wrapping models.ErrInUse that names the rollout.
	AbortRollout bool
}

// Activate makes exactly this version Active and routes traffic to it, as
// a local operator's decision: it is recorded as the model's override,
// which holds against desired state until a source accepts a newer
// generation naming the model. A version that is not loaded goes through
// Loading → Warming → Active; one still loaded (the Active one, the
// rollback target, a held candidate) switches without reloading.
func (o *Owner) Activate(ctx context.Context, model, version string, a Admin) (models.VersionInfo, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	defer o.changes.Notify()
	if err := o.yieldRolloutLocked(ctx, model, version, a, "activate "+version); err != nil {
		return models.VersionInfo{}, err
	}
	run := o.running[model] // a rollout of this very version, if any
	if run != nil {
		_ = o.router.SetCanary(model, "", 0)
		_ = o.router.SetShadow(model, "", 0)
	}
	v, err := o.activateLocked(ctx, model, version)
	if run != nil {
		phase, event, reason := models.RolloutPromoted, models.EventPromoted, "activated by an operator"
		if err != nil {
			phase, event, reason = models.RolloutAborted, models.EventAborted, "activation by an operator failed: "+err.Error()
		}
		o.decideLocked(ctx, run, phase, event, reason, run.snapshot(), nil)
		o.endLocked(run)
	}
	if err != nil {
		return v, err
	}
	return v, o.overrideLocked(ctx, model, version, "activate")
}

// Rollback makes the model's Previous version Active again, as a local
// operator's decision (recorded as the override, like Activate). When the
// Previous version is still loaded the switch is instant; otherwise it is
// reloaded from the store first. The demoted version is unloaded.
func (o *Owner) Rollback(ctx context.Context, model string, a Admin) (models.VersionInfo, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	defer o.changes.Notify()
	mi, err := o.store.Model(ctx, model)
	if err != nil {
		return models.VersionInfo{}, err
	}
	if err := o.yieldRolloutLocked(ctx, model, mi.Previous, a, "rollback"); err != nil {
		return models.VersionInfo{}, err
	}
	if mi, err = o.store.Model(ctx, model); err != nil {
		return models.VersionInfo{}, err
	}
	var v models.VersionInfo
	if mi.Previous == "" || !o.engine.routed(model, mi.Previous) {
		l := o.loader(o.engine.promote)
		defer l.discard()
		v, err = o.store.Rollback(ctx, model, models.RollbackOptions{Loader: l})
	} else {
		o.view.Lock()
		if v, err = o.store.Rollback(ctx, model, models.RollbackOptions{}); err == nil {
			err = o.engine.promote(nil, v)
		}
		o.view.Unlock()
	}
	if err != nil {
		return v, err
	}
	// The demoted version is Retired (or Failed) in the store and no longer
	// the default: unload it after its in-flight requests, outside view (a
	// reader does not wait for them).
	if mi.Active != "" && mi.Active != v.Version {
		if err := o.engine.remove(model, mi.Active); err != nil && !errors.Is(err, inference.ErrNotFound) {
			o.log.Warn().Err(err).Str("model", model).Str("version", mi.Active).Msg("unloading the demoted version")
		}
	}
	return v, o.overrideLocked(ctx, model, v.Version, "rollback")
}

// ClearOverride hands the model back to desired state: the next reconcile
// pass brings it to what its sources ask for. A model held unloaded
// (repository unload) serves its Active version again at once.
func (o *Owner) ClearOverride(ctx context.Context, model string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	defer o.changes.Notify()
	mi, err := o.store.Model(ctx, model)
	if err != nil {
		return err
	}
	if err := o.store.SetOverride(ctx, model, nil); err != nil {
		return err
	}
	if mi.Override != nil && mi.Override.Action == OverrideUnload && mi.Active != "" {
		_, err = o.serveActiveLocked(ctx, model, mi.Active)
	}
	return err
}

// Delete removes a version from the store and, if it was still loaded (the
// rollback target), unloads it once its in-flight requests finish. The
// store refuses a serving version (models.ErrInUse).
func (o *Owner) Delete(ctx context.Context, model, version string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	defer o.changes.Notify()
	if err := o.store.Delete(ctx, model, version); err != nil {
		return err
	}
	if err := o.engine.remove(model, version); err != nil && !errors.Is(err, inference.ErrNotFound) {
		o.log.Warn().Err(err).Str("model", model).Str("version", version).Msg("unloading a deleted version")
	}
	return nil
}

// Import copies a local model file into the store as a Ready version
// (PUT /admin/models/{m}/versions/{v}); with activate it is then activated
// as an admin decision.
func (o *Owner) Import(ctx context.Context, req models.ImportRequest, activate bool) (models.VersionInfo, error) {
	v, err := o.store.Import(ctx, req)
	o.changes.Notify()
	if err != nil || !activate {
		return v, err
	}
	return o.Activate(ctx, req.Model, req.Version, Admin{})
}

// GC collects unreferenced versions and blobs (nothing served is touched).
func (o *Owner) GC(ctx context.Context) (models.GCStats, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.store.GC(ctx)
}

// Models lists every model with its versions, pointers and override.
func (o *Owner) Models(ctx context.Context) ([]models.ModelInfo, error) {
	o.view.RLock()
	defer o.view.RUnlock()
	return o.store.Models(ctx)
}

// Model returns one model.
func (o *Owner) Model(ctx context.Context, name string) (models.ModelInfo, error) {
	o.view.RLock()
	defer o.view.RUnlock()
	return o.store.Model(ctx, name)
}

// Version returns one version as the store records it.
func (o *Owner) Version(ctx context.Context, model, version string) (models.VersionInfo, error) {
	o.view.RLock()
	defer o.view.RUnlock()
	return o.store.Version(ctx, model, version)
}

// Parameters describes a stored version beyond its tensors: its
// manifest's lineage (models.Lineage.Parameters) and, for an ensemble, its
// pinned members ("ensemble.det": "ppocr_det/1", ...). nil when there is
// nothing to say or the version is unknown.
func (o *Owner) Parameters(ctx context.Context, model, version string) map[string]string {
	v, err := o.store.Version(ctx, model, version)
	if err != nil {
		return nil
	}
	p := v.Manifest.Lineage.Parameters()
	if cfg, err := ParseModelConfig([]byte(v.Manifest.Config)); err == nil && cfg.Ensemble != nil {
		if p == nil {
			p = map[string]string{}
		}
		o := cfg.Ensemble.OCR
		p["ensemble.kind"] = "ocr"
		p["ensemble.det"], p["ensemble.cls"], p["ensemble.rec"] = o.Det.String(), o.Cls.String(), o.Rec.String()
	}
	return p
}

// Stats returns the router's counters of a serving version.
func (o *Owner) Stats(model, version string) (inference.StatsSnapshot, error) {
	return o.router.Stats(model, version)
}

// activateLocked makes version Active and routes to it (o.mu held). The
// version that was Active stays loaded (the instant rollback target);
// older ones are unloaded.
func (o *Owner) activateLocked(ctx context.Context, model, version string) (models.VersionInfo, error) {
	if o.engine.routed(model, version) {
		// Already loaded: the rollback target, a held rollout candidate, or
		// the Active version itself. Switch without reloading.
		defer o.changes.Notify()
		o.view.Lock()
		v, err := o.store.Activate(ctx, model, version, nil)
		if err == nil {
			err = o.engine.promote(nil, v)
		}
		o.view.Unlock()
		if err != nil {
			return v, err
		}
		if r, err := o.store.Rollout(ctx, model); err == nil && r.Phase == models.RolloutHeld && r.Version == version {
			if _, err := o.store.Decide(ctx, model, models.RolloutPromoted, models.Decision{Event: models.EventPromoted, Reason: "held candidate activated"}, nil); err != nil {
				o.log.Warn().Err(err).Str("model", model).Msg("recording the promotion of a held rollout")
			}
		}
		return v, nil
	}
	defer o.changes.Notify() // a failure is a change too (Failed recorded)
	if v, err := o.store.Version(ctx, model, version); err == nil && v.State == models.Active {
		return o.serveActiveLocked(ctx, model, version) // Active but unloaded (repository unload)
	}
	l := o.loader(o.engine.promote)
	defer l.discard()
	return o.store.Activate(ctx, model, version, l)
}

// loader is a models.Loader whose final transaction and route, what the
// router does with the loaded session, are one step under view.
func (o *Owner) loader(route func(servable, models.VersionInfo) error) *versionLoader {
	l := o.engine.loader()
	l.view, l.route = &o.view, route
	return l
}

// overrideLocked records an admin decision as the model's override, with
// the generations it overrides.
func (o *Owner) overrideLocked(ctx context.Context, model, version, action string) error {
	gens, err := o.store.DesiredGenerations(ctx)
	if err != nil {
		return err
	}
	ov := &models.Override{Version: version, Action: action, Generations: gens, At: time.Now().UTC()}
	if err := o.store.SetOverride(ctx, model, ov); err != nil {
		return fmt.Errorf("recording the override of %s: %w", model, err)
	}
	o.log.Info().Str("model", model).Str("version", version).Str("action", action).Msg("local override recorded; it holds until a newer desired generation names the model")
	return nil
}

// yieldRolloutLocked is an admin action's check against a rollout of
// model: none, or one of keep itself, lets it go on; another one is
// aborted when a.AbortRollout, else refused naming it.
func (o *Owner) yieldRolloutLocked(ctx context.Context, model, keep string, a Admin, what string) error {
	ver, phase, ok := o.rolloutOfLocked(ctx, model)
	if !ok || (ver == keep && keep != "") {
		return nil
	}
	if !a.AbortRollout {
		return fmt.Errorf("%s of %s: a rollout of version %s is %s (abort it first, or ask to abort it): %w", what, model, ver, phase, models.ErrInUse)
	}
	_, err := o.abortLocked(ctx, model, "aborted by an admin call to "+what)
	return err
}

// rolloutOfLocked returns the version of model whose rollout is running
// or held, if any.
func (o *Owner) rolloutOfLocked(ctx context.Context, model string) (string, models.RolloutPhase, bool) {
	if run := o.running[model]; run != nil {
		return run.version, models.RolloutRunning, true
	}
	r, err := o.store.Rollout(ctx, model)
	if err == nil && r.Phase == models.RolloutHeld {
		if v, err := o.store.Version(ctx, model, r.Version); err == nil && (v.State == models.Canary || v.State == models.Shadow) {
			return r.Version, r.Phase, true
		}
	}
	return "", "", false
}

// Desired is one model's desired version as a desired-state source (the
// reconciler) hands it to the owner.
type Desired struct {
	Model, Version string
	// Strategy is how the version replaces the Active one (nil:
	// immediate).
	Strategy *models.Strategy
	// Generations are the accepted generations of the sources this desired
	// version comes from (source → generation, as in
	// Store.DesiredGenerations); they decide whether a local override still
	// holds.
	Generations map[string]uint64
}

// Outcome is where a desired version stands after Apply.
type Outcome struct {
	State  models.State
	Reason models.Reason
	// Override is the local override that holds the model, when Reason
	// is ReasonOverridden.
	Override *models.Override
}

// Wait reports whether the outcome is not final (a rollout runs).
func (oc Outcome) Wait() bool { return oc.Reason == models.ReasonRollingOut }

// Apply brings a model to a desired version that is in the store (Ready,
// Retired, Active or a candidate), by the precedence rules of the package
// doc: a local override that still holds wins (ReasonOverridden); otherwise
// any rollout of another version is aborted, and the version is activated
// (immediate) or rolled out with its strategy. It returns at once while a
// rollout runs (ReasonRollingOut): Subscribe tells when to look again.
// Calling it again with the same desired version is harmless.
func (o *Owner) Apply(ctx context.Context, d Desired) (Outcome, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	mi, err := o.store.Model(ctx, d.Model)
	if err != nil && !errors.Is(err, models.ErrNotFound) {
		return Outcome{}, err
	}
	if ov := mi.Override; ov != nil {
		superseded := false
		for src, gen := range d.Generations {
			superseded = superseded || ov.SupersededBy(src, gen)
		}
		switch {
		case !superseded && ov.Version == d.Version:
			// The fleet asks for what the operator chose: carry on (the
			// override stays until a newer generation).
		case !superseded:
			return Outcome{State: models.Waiting, Reason: models.ReasonOverridden, Override: ov}, nil
		default:
			if err := o.store.SetOverride(ctx, d.Model, nil); err != nil {
				return Outcome{}, err
			}
			o.changes.Notify()
			o.log.Info().Str("model", d.Model).Str("override", ov.Version).Str("desired", d.Version).Msg("a newer desired generation ends the local override")
		}
	}
	if ver, _, ok := o.rolloutOfLocked(ctx, d.Model); ok && ver != d.Version {
		if _, err := o.abortLocked(ctx, d.Model, "superseded by desired version "+d.Version); err != nil {
			return Outcome{}, err
		}
	}
	if run := o.running[d.Model]; run != nil { // a rollout of d.Version itself
		return Outcome{State: run.stateLocked(), Reason: models.ReasonRollingOut}, nil
	}
	v, err := o.store.Version(ctx, d.Model, d.Version)
	if err != nil {
		return Outcome{}, err
	}
	switch v.State {
	case models.Active:
		// Not routed after an unload whose override a newer generation
		// just ended: load it again.
		if !o.engine.routed(d.Model, d.Version) {
			if _, err := o.serveActiveLocked(ctx, d.Model, d.Version); err != nil {
				return Outcome{State: models.Active}, err
			}
		}
		return Outcome{State: models.Active}, nil
	case models.Canary, models.Shadow:
		return Outcome{State: v.State, Reason: models.ReasonHeld}, nil
	case models.Failed:
		return Outcome{State: models.Failed, Reason: v.Reason}, nil
	}
	immediate := d.Strategy == nil || d.Strategy.Kind == "" || d.Strategy.Kind == models.StrategyImmediate
	if immediate || v.State == models.Active {
		v, err := o.activateLocked(ctx, d.Model, d.Version)
		if err != nil {
			return Outcome{State: v.State, Reason: v.Reason}, err
		}
		return Outcome{State: models.Active}, nil
	}
	if err := o.startRolloutLocked(ctx, d.Model, d.Version, *d.Strategy); err != nil {
		return Outcome{}, err
	}
	return Outcome{State: models.Loading, Reason: models.ReasonRollingOut}, nil
}

// VersionStatus is one stored version as the repository index shows it.
type VersionStatus struct {
	Model, Version string
	State          models.State
	Reason         models.Reason
	Detail         string
	// Serving is true when the router takes requests for it.
	Serving bool
}

// Index lists every version the store knows, with whether it serves.
func (o *Owner) Index(ctx context.Context) ([]VersionStatus, error) {
	ms, err := o.store.Models(ctx)
	if err != nil {
		return nil, err
	}
	routed := map[[2]string]bool{}
	for _, ix := range o.router.Index() {
		routed[[2]string{ix.Model, ix.Version}] = ix.State == inference.StateServing
	}
	var out []VersionStatus
	for _, m := range ms {
		for _, v := range m.Versions {
			out = append(out, VersionStatus{Model: m.Name, Version: v.Version, State: v.State, Reason: v.Reason, Detail: v.Detail,
				Serving: routed[[2]string{m.Name, v.Version}]})
		}
	}
	return out, nil
}
