package serving

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/models"
)

// On-device rollouts: one goroutine per model with a rollout in progress,
// owned by the Owner and stopped by Close (rollout aborted, candidate
// retired, Active untouched). Nothing here needs the cloud link: decisions
// go to the store, whose outbox the link flushes when it can.
//
// A rollout's goroutine waits for gate evidence without the owner's lock
// and takes it for every change it makes (staging, promotion, retirement),
// checking first that nobody ended the rollout meanwhile: an abort (an
// admin call, a desired state naming another version) or an activation
// ends it under the lock, so a gate verdict reached at the same time is
// dropped instead of undoing that decision.

// rolloutRun is one rollout in progress.
type rolloutRun struct {
	model, version, baseline string
	strategy                 models.Strategy
	cancel                   context.CancelFunc
	finished                 chan struct{} // closed when the rollout ended

	// Guarded by Owner.mu.
	ended  bool // the rollout is over (decided by whoever set it)
	staged bool // the candidate is loaded and routed

	// mu guards progress: the figures of the last gate evaluation.
	mu       sync.Mutex
	progress map[string]float64
}

func (run *rolloutRun) snapshot() map[string]float64 {
	run.mu.Lock()
	defer run.mu.Unlock()
	return run.progress
}

// stateLocked is the candidate's state while the rollout runs.
func (run *rolloutRun) stateLocked() models.State {
	switch {
	case !run.staged:
		return models.Loading
	case run.strategy.Kind == models.StrategyShadow:
		return models.Shadow
	}
	return models.Canary
}

// StartRollout starts rolling version out as model's Active version with
// strategy s, as a local operator's decision (POST
// /admin/models/{m}/versions/{v}/rollout): it is recorded as the model's
// override, like Activate. It returns once the rollout is recorded; the
// work goes on in a goroutine (WaitRollout waits for its end). The version
// must be Ready or Retired; one already Active is a no-op. A model with a
// rollout of another version in progress is refused (models.ErrInUse)
// unless a.AbortRollout.
func (o *Owner) StartRollout(ctx context.Context, model, version string, s models.Strategy, a Admin) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	defer o.changes.Notify()
	if err := o.yieldRolloutLocked(ctx, model, "", a, "rollout of "+version); err != nil {
		return err
	}
	if v, err := o.store.Version(ctx, model, version); err == nil && v.State == models.Active {
		return nil
	}
	if err := o.startRolloutLocked(ctx, model, version, s); err != nil {
		return err
	}
	return o.overrideLocked(ctx, model, version, "rollout")
}

// startRolloutLocked records a rollout and starts its goroutine (o.mu held).
func (o *Owner) startRolloutLocked(ctx context.Context, model, version string, s models.Strategy) error {
	s, err := s.Normalize()
	if err != nil {
		return err
	}
	mi, err := o.store.Model(ctx, model)
	if err != nil {
		return err
	}
	v, err := o.store.Version(ctx, model, version)
	if err != nil {
		return err
	}
	if v.State != models.Ready && v.State != models.Retired {
		return fmt.Errorf("rollout %s/%s: version is %s, want Ready or Retired: %w", model, version, v.State,
			&models.TransitionError{Model: model, Version: version, From: v.State, To: models.Loading})
	}
	if o.ctx.Err() != nil {
		return fmt.Errorf("rollout %s/%s: node is closing: %w", model, version, inference.ErrUnavailable)
	}
	if cur := o.running[model]; cur != nil {
		return fmt.Errorf("rollout %s/%s: %s is still rolling out: %w", model, version, cur.version, models.ErrInUse)
	}
	if _, err := o.store.StartRollout(ctx, models.Rollout{Model: model, Version: version, Baseline: mi.Active, Strategy: s}); err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(o.ctx)
	run := &rolloutRun{model: model, version: version, baseline: mi.Active, strategy: s, cancel: cancel, finished: make(chan struct{})}
	o.running[model] = run
	o.changes.Notify()
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		o.runRollout(rctx, run)
	}()
	o.log.Info().Str("model", model).Str("version", version).Str("baseline", mi.Active).Str("strategy", string(s.Kind)).Msg("rollout started")
	return nil
}

// endLocked ends run (o.mu held): nobody acts on it afterwards.
func (o *Owner) endLocked(run *rolloutRun) {
	if run.ended {
		return
	}
	run.ended = true
	if o.running[run.model] == run {
		delete(o.running, run.model)
	}
	run.cancel()
	close(run.finished)
	o.changes.Notify()
}

// WaitRollout waits until model has no rollout in progress (or ctx ends)
// and returns its latest rollout record.
func (o *Owner) WaitRollout(ctx context.Context, model string) (models.Rollout, error) {
	o.mu.Lock()
	run := o.running[model]
	o.mu.Unlock()
	if run != nil {
		select {
		case <-run.finished:
		case <-ctx.Done():
			return models.Rollout{}, ctx.Err()
		}
	}
	return o.store.Rollout(ctx, model)
}

// Rollout returns model's latest rollout record.
func (o *Owner) Rollout(ctx context.Context, model string) (models.Rollout, error) {
	return o.store.Rollout(ctx, model)
}

// AbortRollout stops model's rollout: a running one is ended, a held one
// has its candidate unloaded; either way the candidate is Retired and
// Active keeps serving. It returns the record.
func (o *Owner) AbortRollout(ctx context.Context, model, reason string) (models.Rollout, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	defer o.changes.Notify()
	return o.abortLocked(ctx, model, reason)
}

// abortLocked is AbortRollout with o.mu held.
func (o *Owner) abortLocked(ctx context.Context, model, reason string) (models.Rollout, error) {
	if run := o.running[model]; run != nil {
		defer o.endLocked(run)
		if !run.staged { // the goroutine has not staged anything yet
			return o.store.Decide(ctx, model, models.RolloutAborted, models.Decision{Event: models.EventAborted, Reason: reason}, nil)
		}
		return o.retireLocked(ctx, model, run.version, models.RolloutAborted, models.EventAborted, reason, run.snapshot())
	}
	r, err := o.store.Rollout(ctx, model)
	if err != nil {
		return r, err
	}
	if r.Phase != models.RolloutHeld {
		return r, fmt.Errorf("rollout of %s is %s, not running or held: %w", model, r.Phase, models.ErrInvalidTransition)
	}
	return o.retireLocked(ctx, r.Model, r.Version, models.RolloutAborted, models.EventAborted, reason, nil)
}

// RolloutStatus is a rollout as GET /admin/models shows it: the stored
// record, the live traffic split and, while running, the figures of the
// last gate evaluation.
type RolloutStatus struct {
	models.Rollout
	Traffic  *inference.Traffic `json:"traffic,omitempty"`
	Progress map[string]float64 `json:"progress,omitempty"`
}

// Rollouts returns every model's latest rollout with its live state.
func (o *Owner) Rollouts(ctx context.Context) ([]RolloutStatus, error) {
	rs, err := o.store.Rollouts(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]RolloutStatus, len(rs))
	for i, r := range rs {
		out[i].Rollout = r
		if tr, err := o.router.Traffic(r.Model); err == nil {
			out[i].Traffic = &tr
		}
		o.mu.Lock()
		run := o.running[r.Model]
		o.mu.Unlock()
		if run != nil {
			out[i].Progress = run.snapshot()
		}
	}
	return out, nil
}

// decideLocked records a rollout decision and logs it.
func (o *Owner) decideLocked(ctx context.Context, run *rolloutRun, phase models.RolloutPhase, event, reason string, figs map[string]float64, move *models.Move) {
	log := o.log.With().Str("model", run.model).Str("version", run.version).Logger()
	if _, err := o.store.Decide(ctx, run.model, phase, models.Decision{Event: event, Reason: reason, Figures: cleanFigures(figs)}, move); err != nil {
		log.Error().Err(err).Str("event", event).Msg("recording a rollout decision")
	}
	ev := log.Info()
	if phase == models.RolloutRolledBack || phase == models.RolloutHeld {
		ev = log.Warn()
	}
	ev.Str("event", event).Str("reason", reason).Fields(map[string]any{"figures": figs}).Msg("rollout decision")
}

// runRollout carries out one rollout to its end.
func (o *Owner) runRollout(ctx context.Context, run *rolloutRun) {
	// Decisions are written even when ctx was cancelled (shutdown): the
	// store closes only after this goroutine ended.
	dctx := context.WithoutCancel(ctx)
	s := run.strategy
	if s.Kind == models.StrategyImmediate || run.baseline == "" {
		o.mu.Lock()
		defer o.mu.Unlock()
		if run.ended {
			return
		}
		defer o.endLocked(run)
		start := time.Now()
		reason := "immediate"
		if s.Kind != models.StrategyImmediate {
			reason = "no Active version to compare with: promoted after warm-up"
		}
		if _, err := o.activateLocked(ctx, run.model, run.version); err != nil {
			o.decideLocked(dctx, run, models.RolloutRolledBack, models.EventRolledBack, "activation failed: "+err.Error(), nil, nil)
			o.dropRolloutOverrideLocked(dctx, run.model, run.version)
			return
		}
		o.decideLocked(dctx, run, models.RolloutPromoted, models.EventPromoted, reason, map[string]float64{"activate_seconds": time.Since(start).Seconds()}, nil)
		return
	}
	share, setShare, base0, staged, ok := o.stage(ctx, dctx, run)
	if !ok {
		return
	}
	cand0, _ := o.router.Stats(run.model, run.version)
	tick := time.NewTicker(o.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			o.mu.Lock()
			if !run.ended {
				o.retireLocked(dctx, run.model, run.version, models.RolloutAborted, models.EventAborted, "node shutting down", run.snapshot())
				o.endLocked(run)
			}
			o.mu.Unlock()
			return
		case <-tick.C:
		}
		base, err1 := o.router.Stats(run.model, run.baseline)
		cand, err2 := o.router.Stats(run.model, run.version)
		var v evaluation
		if err := errors.Join(err1, err2); err != nil {
			v = evaluation{verdict: verdictGone, reason: "version no longer routed: " + err.Error(), figures: run.snapshot()}
		} else {
			v = evaluate(s, time.Since(staged), base.Sub(base0), cand.Sub(cand0))
			run.mu.Lock()
			run.progress = v.figures
			run.mu.Unlock()
		}
		if v.verdict == verdictWait {
			continue
		}
		o.mu.Lock()
		if !run.ended {
			o.concludeLocked(dctx, run, v, share, setShare)
			o.endLocked(run)
		}
		o.mu.Unlock()
		return
	}
}

// stage loads, warms up and routes the candidate with its traffic share
// (o.mu taken for it). ok is false when the rollout ended here.
func (o *Owner) stage(ctx, dctx context.Context, run *rolloutRun) (share float64, setShare func(model, version string, share float64) error, base0 inference.StatsSnapshot, staged time.Time, ok bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if run.ended {
		return 0, nil, base0, staged, false
	}
	s := run.strategy
	state := models.Canary
	if s.Kind == models.StrategyShadow {
		state = models.Shadow
	}
	start := time.Now()
	l := o.engine.loader()
	if _, err := o.store.Stage(ctx, run.model, run.version, state, l); err != nil {
		l.discard()
		// The store recorded Failed(LoadError/WarmupFailed) already.
		o.decideLocked(dctx, run, models.RolloutRolledBack, models.EventRolledBack, "staging failed: "+err.Error(), nil, nil)
		o.dropRolloutOverrideLocked(dctx, run.model, run.version)
		o.endLocked(run)
		return 0, nil, base0, staged, false
	}
	if err := o.engine.addCandidate(l.take()); err != nil {
		o.decideLocked(dctx, run, models.RolloutRolledBack, models.EventRolledBack, "routing the candidate: "+err.Error(), nil,
			&models.Move{Version: run.version, To: models.Retired, Opts: models.TransitionOptions{Detail: err.Error()}})
		o.dropRolloutOverrideLocked(dctx, run.model, run.version)
		o.endLocked(run)
		return 0, nil, base0, staged, false
	}
	run.staged = true
	share, setShare = s.CanaryPercent/100, o.router.SetCanary
	if s.Kind == models.StrategyShadow {
		share, setShare = s.ShadowPercent/100, o.router.SetShadow
	}
	base0, err := o.router.Stats(run.model, run.baseline)
	if err == nil {
		err = setShare(run.model, run.version, share)
	}
	if err != nil { // the baseline went away: give up
		o.retireLocked(dctx, run.model, run.version, models.RolloutAborted, models.EventAborted, "baseline not routed: "+err.Error(), nil)
		o.endLocked(run)
		return 0, nil, base0, staged, false
	}
	staged = time.Now()
	o.changes.Notify()
	o.decideLocked(dctx, run, models.RolloutRunning, models.EventStaged, fmt.Sprintf("%s at %g%%", state, share*100),
		map[string]float64{"stage_seconds": staged.Sub(start).Seconds(), "share": share}, nil)
	return share, setShare, base0, staged, true
}

// concludeLocked carries out a gate verdict (o.mu held): promotion, hold
// or rollback.
func (o *Owner) concludeLocked(ctx context.Context, run *rolloutRun, v evaluation, share float64, setShare func(model, version string, share float64) error) {
	log := o.log.With().Str("model", run.model).Str("version", run.version).Logger()
	switch {
	case v.verdict == verdictGone:
		o.retireLocked(ctx, run.model, run.version, models.RolloutAborted, models.EventAborted, v.reason, v.figures)
	case v.verdict == verdictPass:
		move := &models.Move{Version: run.version, To: models.Active, Opts: models.TransitionOptions{Detail: "rollout passed its gates"}}
		o.view.Lock()
		_, err := o.store.Decide(ctx, run.model, models.RolloutPromoted,
			models.Decision{Event: models.EventPromoted, Reason: v.reason, Figures: cleanFigures(v.figures)}, move)
		if err != nil {
			o.view.Unlock()
			log.Error().Err(err).Msg("recording the promotion; the candidate is retired")
			o.retireLocked(ctx, run.model, run.version, models.RolloutAborted, models.EventAborted, "promotion failed: "+err.Error(), v.figures)
			return
		}
		err = o.engine.promote(nil, models.VersionInfo{Model: run.model, Version: run.version})
		o.view.Unlock()
		if err != nil {
			log.Error().Err(err).Msg("routing the promoted version")
		}
		log.Info().Str("reason", v.reason).Fields(map[string]any{"figures": v.figures}).Msg("rollout promoted")
	case run.strategy.OnFailure == models.Hold:
		if err := setShare(run.model, "", 0); err != nil {
			log.Warn().Err(err).Msg("stopping candidate traffic")
		}
		o.decideLocked(ctx, run, models.RolloutHeld, models.EventHeld, v.reason, v.figures, nil)
	default:
		o.retireLocked(ctx, run.model, run.version, models.RolloutRolledBack, models.EventRolledBack, v.reason, v.figures)
	}
}

// retireLocked takes a candidate out (o.mu held): no new traffic at once,
// unloaded after its in-flight requests (and shadow runs), then recorded —
// Failed(HealthRegression) for a rollback, Retired for an abort — with the
// decision in the same transaction. figures gets rollback_seconds: from
// the decision to the candidate being unloaded. An admin rollout's
// override is dropped with it: the model goes back to what it served.
func (o *Owner) retireLocked(ctx context.Context, model, version string, phase models.RolloutPhase, event, reason string, figures map[string]float64) (models.Rollout, error) {
	start := time.Now()
	_ = o.router.SetCanary(model, "", 0)
	_ = o.router.SetShadow(model, "", 0)
	if err := o.engine.remove(model, version); err != nil && !errors.Is(err, inference.ErrNotFound) {
		o.log.Warn().Err(err).Str("model", model).Str("version", version).Msg("unloading the candidate")
	}
	figs := make(map[string]float64, len(figures)+1)
	for k, v := range figures {
		figs[k] = v
	}
	figs["rollback_seconds"] = time.Since(start).Seconds()
	var move *models.Move
	if v, err := o.store.Version(ctx, model, version); err == nil && (v.State == models.Canary || v.State == models.Shadow) {
		move = &models.Move{Version: version, To: models.Retired, Opts: models.TransitionOptions{Detail: reason}}
		if phase == models.RolloutRolledBack {
			move.To, move.Opts.Reason = models.Failed, models.ReasonHealthRegression
		}
	}
	r, err := o.store.Decide(ctx, model, phase, models.Decision{Event: event, Reason: reason, Figures: cleanFigures(figs)}, move)
	if err != nil {
		o.log.Error().Err(err).Str("model", model).Str("version", version).Msg("recording a rollout decision")
	}
	o.dropRolloutOverrideLocked(ctx, model, version)
	o.log.Warn().Str("model", model).Str("version", version).Str("event", event).Str("reason", reason).
		Fields(map[string]any{"figures": figs}).Msg("rollout decision")
	return r, err
}

// dropRolloutOverrideLocked clears the override an admin rollout of
// model/version recorded, once that rollout ended without promoting it.
func (o *Owner) dropRolloutOverrideLocked(ctx context.Context, model, version string) {
	mi, err := o.store.Model(ctx, model)
	if err != nil || mi.Override == nil || mi.Override.Action != "rollout" || mi.Override.Version != version {
		return
	}
	if err := o.store.SetOverride(ctx, model, nil); err != nil {
		o.log.Warn().Err(err).Str("model", model).Msg("clearing the override of a failed rollout")
	}
}

// cleanFigures makes figures JSON-safe (JSON has no Inf or NaN): ±Inf
// becomes ±MaxFloat64, NaN is dropped.
func cleanFigures(f map[string]float64) map[string]float64 {
	if f == nil {
		return nil
	}
	out := make(map[string]float64, len(f))
	for k, v := range f {
		switch {
		case math.IsNaN(v):
		case math.IsInf(v, 1):
			out[k] = math.MaxFloat64
		case math.IsInf(v, -1):
			out[k] = -math.MaxFloat64
		default:
			out[k] = v
		}
	}
	return out
}

type verdict int

const (
	verdictWait verdict = iota
	verdictPass
	verdictFail
	verdictGone // a version of the rollout is no longer routed
)

type evaluation struct {
	verdict verdict
	reason  string
	figures map[string]float64
}

// evaluate applies s's gates to the rollout window: base and cand are the
// Active and candidate counters since the candidate was staged. Gates are
// checked once the candidate has MinRequests observations (candidate
// requests for a canary, compared mirrors for a shadow), so a bad
// candidate fails as soon as the evidence is in; promotion also needs
// MinDuration. At MaxDuration with fewer observations, OnLowTraffic
// decides: fail, or check the gates on what was observed and promote when
// none failed. It is pure, for testing.
func evaluate(s models.Strategy, elapsed time.Duration, base, cand inference.StatsSnapshot) evaluation {
	f := map[string]float64{
		"elapsed_seconds":   elapsed.Seconds(),
		"requests":          float64(cand.Requests),
		"errors":            float64(cand.Errors),
		"error_rate":        cand.ErrorRate(),
		"baseline_requests": float64(base.Requests),
		"baseline_errors":   float64(base.Errors),
	}
	basep99, candp99 := base.Quantile(0.99), cand.Quantile(0.99)
	f["p99_seconds"], f["baseline_p99_seconds"] = candp99.Seconds(), basep99.Seconds()
	ratio := math.NaN()
	if basep99 > 0 && candp99 > 0 {
		ratio = float64(candp99) / float64(basep99)
		f["p99_ratio"] = ratio
	}
	observed := cand.Requests
	d := cand.Drift
	if s.Kind == models.StrategyShadow {
		observed = d.Compared
		f["compared"], f["mismatched"] = float64(d.Compared), float64(d.Mismatched)
		f["max_abs_diff"], f["cosine_distance"], f["argmax_agreement"] = d.MaxAbsDiff, d.MeanCosineDistance(), d.ArgmaxAgreement()
	}
	e := evaluation{figures: f}
	fail := func(format string, args ...any) evaluation {
		e.verdict, e.reason = verdictFail, fmt.Sprintf(format, args...)
		return e
	}
	lowTraffic := false
	if int64(observed) < s.MinRequests {
		if s.MaxDuration <= 0 || elapsed < s.MaxDuration.D() {
			return e
		}
		if s.OnLowTraffic != models.LowTrafficPromote {
			return fail("not enough traffic: %d of %d observations in %v (on_low_traffic %s)", observed, s.MinRequests, s.MaxDuration.D(), s.OnLowTraffic)
		}
		lowTraffic = true // the gates below on what was observed, then promote
	}
	g := s.Gates
	if g.MaxErrorRate != nil && cand.ErrorRate() > *g.MaxErrorRate {
		return fail("error rate %.4f > %.4f (%d of %d requests)", cand.ErrorRate(), *g.MaxErrorRate, cand.Errors, cand.Requests)
	}
	if g.MaxP99Ratio != nil && !math.IsNaN(ratio) && ratio > *g.MaxP99Ratio {
		return fail("p99 latency %v is %.2f× the baseline's %v (max %.2f×)", candp99, ratio, basep99, *g.MaxP99Ratio)
	}
	if s.Kind == models.StrategyShadow {
		switch {
		case d.Mismatched > 0:
			return fail("outputs differ in name, type or shape in %d of %d compared requests", d.Mismatched, d.Compared)
		case g.MaxAbsDiff != nil && d.MaxAbsDiff > *g.MaxAbsDiff:
			return fail("output drift: max abs difference %g > %g", d.MaxAbsDiff, *g.MaxAbsDiff)
		case g.MaxCosineDistance != nil && d.MeanCosineDistance() > *g.MaxCosineDistance:
			return fail("output drift: mean cosine distance %g > %g", d.MeanCosineDistance(), *g.MaxCosineDistance)
		case g.MinArgmaxAgreement != nil && d.ArgmaxAgreement() < *g.MinArgmaxAgreement:
			return fail("output drift: argmax agreement %.4f < %.4f", d.ArgmaxAgreement(), *g.MinArgmaxAgreement)
		}
	}
	if elapsed < s.MinDuration.D() {
		return e
	}
	e.verdict = verdictPass
	e.reason = fmt.Sprintf("gates passed after %d observations in %v", observed, elapsed.Round(time.Millisecond))
	if lowTraffic {
		e.reason = fmt.Sprintf("max_duration %v reached with %d of %d observations and no gate failed: promoted (on_low_traffic promote)",
			s.MaxDuration.D(), observed, s.MinRequests)
	}
	if g.MaxP99Ratio != nil && math.IsNaN(ratio) {
		e.reason += " (latency gate not evaluated: no baseline latency in the window)"
	}
	return e
}
