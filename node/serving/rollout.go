package node

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/models"
)

// ErrRolloutAborted is the reason recorded when a rollout is stopped by an
// operator or by shutdown rather than by its gates.
var ErrRolloutAborted = errors.New("rollout aborted")

// rollouts runs on-device rollouts: one goroutine per model with a rollout
// in progress, owned by the node and stopped (rollout aborted, candidate
// retired, Active untouched) by Close. Nothing here needs the cloud link:
// decisions go to the store, whose outbox the link flushes when it can.
type rollouts struct {
	n        *Node
	log      zerolog.Logger
	interval time.Duration

	ctx    context.Context // cancelled by close
	cancel context.CancelFunc
	wg     sync.WaitGroup // running goroutines

	// mu guards running.
	mu      sync.Mutex
	running map[string]*rolloutRun // by model
}

// rolloutRun is one rollout in progress.
type rolloutRun struct {
	model, version string
	strategy       models.Strategy
	cancel         context.CancelCauseFunc
	done           chan struct{} // closed when the goroutine ended

	// mu guards progress: the figures of the last gate evaluation.
	mu       sync.Mutex
	progress map[string]float64
}

func newRollouts(n *Node, interval time.Duration, log zerolog.Logger) *rollouts {
	if interval <= 0 {
		interval = time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &rollouts{n: n, log: log.With().Str("component", "rollout").Logger(), interval: interval,
		ctx: ctx, cancel: cancel, running: make(map[string]*rolloutRun)}
}

// close aborts every rollout in progress and waits for their goroutines
// (which retire their candidates). It runs before the router and the store
// close.
func (rs *rollouts) close() {
	rs.cancel()
	rs.wg.Wait()
}

// Rollout starts rolling version out as model's Active version with
// strategy s, and returns once the rollout is recorded (the work goes on
// in a goroutine owned by the node; WaitRollout waits for its end). It is
// what the desired-state reconciler calls, and what
// POST /admin/models/{m}/versions/{v}/rollout calls. It needs no network.
//
// The version must be Ready or Retired (Failed versions need a Retry
// first). A version that is already Active is a no-op (nil), so a
// reconciler may call Rollout again with the same desired state. A model
// with a rollout in progress is refused with an error wrapping
// models.ErrInUse; AbortRollout stops it.
func (n *Node) Rollout(ctx context.Context, model, version string, s models.Strategy) error {
	s, err := s.Normalize()
	if err != nil {
		return err
	}
	mi, err := n.store.Model(ctx, model)
	if err != nil {
		return err
	}
	v, err := n.store.Version(ctx, model, version)
	if err != nil {
		return err
	}
	if v.State == models.Active {
		return nil
	}
	if v.State != models.Ready && v.State != models.Retired {
		return fmt.Errorf("rollout %s/%s: version is %s, want Ready or Retired: %w", model, version, v.State,
			&models.TransitionError{Model: model, Version: version, From: v.State, To: models.Loading})
	}
	rs := n.rollouts
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.ctx.Err() != nil {
		return fmt.Errorf("rollout %s/%s: node is closing: %w", model, version, inference.ErrUnavailable)
	}
	if cur := rs.running[model]; cur != nil {
		return fmt.Errorf("rollout %s/%s: %s is still rolling out: %w", model, version, cur.version, models.ErrInUse)
	}
	if _, err := n.store.StartRollout(ctx, models.Rollout{Model: model, Version: version, Baseline: mi.Active, Strategy: s}); err != nil {
		return err
	}
	rctx, cancel := context.WithCancelCause(rs.ctx)
	run := &rolloutRun{model: model, version: version, strategy: s, cancel: cancel, done: make(chan struct{})}
	rs.running[model] = run
	rs.wg.Add(1)
	go func() {
		defer rs.wg.Done()
		defer close(run.done)
		defer func() {
			rs.mu.Lock()
			delete(rs.running, model)
			rs.mu.Unlock()
		}()
		rs.run(rctx, run, mi.Active)
	}()
	rs.log.Info().Str("model", model).Str("version", version).Str("baseline", mi.Active).Str("strategy", string(s.Kind)).Msg("rollout started")
	return nil
}

// rollingOut reports the version of model whose rollout is running, if any.
func (n *Node) rollingOut(model string) (string, bool) {
	n.rollouts.mu.Lock()
	defer n.rollouts.mu.Unlock()
	if run := n.rollouts.running[model]; run != nil {
		return run.version, true
	}
	return "", false
}

// WaitRollout waits until model has no rollout in progress (or ctx ends)
// and returns its latest rollout record.
func (n *Node) WaitRollout(ctx context.Context, model string) (models.Rollout, error) {
	n.rollouts.mu.Lock()
	run := n.rollouts.running[model]
	n.rollouts.mu.Unlock()
	if run != nil {
		select {
		case <-run.done:
		case <-ctx.Done():
			return models.Rollout{}, ctx.Err()
		}
	}
	return n.store.Rollout(ctx, model)
}

// AbortRollout stops model's rollout: a running one is cancelled, a held
// one has its candidate unloaded; either way the candidate is Retired and
// Active keeps serving. It waits for the end and returns the record.
func (n *Node) AbortRollout(ctx context.Context, model, reason string) (models.Rollout, error) {
	n.rollouts.mu.Lock()
	run := n.rollouts.running[model]
	n.rollouts.mu.Unlock()
	if run != nil {
		run.cancel(fmt.Errorf("%w: %s", ErrRolloutAborted, reason))
		return n.WaitRollout(ctx, model)
	}
	r, err := n.store.Rollout(ctx, model)
	if err != nil {
		return r, err
	}
	if r.Phase != models.RolloutHeld {
		return r, fmt.Errorf("rollout of %s is %s, not running or held: %w", model, r.Phase, models.ErrInvalidTransition)
	}
	return n.rollouts.retire(ctx, r.Model, r.Version, models.RolloutAborted, models.EventAborted, reason, nil)
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
func (n *Node) Rollouts(ctx context.Context) ([]RolloutStatus, error) {
	rs, err := n.store.Rollouts(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]RolloutStatus, len(rs))
	for i, r := range rs {
		out[i].Rollout = r
		if tr, err := n.router.Traffic(r.Model); err == nil {
			out[i].Traffic = &tr
		}
		n.rollouts.mu.Lock()
		run := n.rollouts.running[r.Model]
		n.rollouts.mu.Unlock()
		if run != nil {
			run.mu.Lock()
			out[i].Progress = run.progress
			run.mu.Unlock()
		}
	}
	return out, nil
}

// run carries out one rollout to its end.
func (rs *rollouts) run(ctx context.Context, run *rolloutRun, baseline string) {
	log := rs.log.With().Str("model", run.model).Str("version", run.version).Logger()
	n, s := rs.n, run.strategy
	// Decisions are written even when ctx was cancelled (shutdown): the
	// store closes only after this goroutine ended.
	dctx := context.WithoutCancel(ctx)
	decide := func(phase models.RolloutPhase, event, reason string, figs map[string]float64, move *models.Move) {
		if _, err := n.store.Decide(dctx, run.model, phase, models.Decision{Event: event, Reason: reason, Figures: cleanFigures(figs)}, move); err != nil {
			log.Error().Err(err).Str("event", event).Msg("recording a rollout decision")
		}
		ev := log.Info()
		if phase == models.RolloutRolledBack || phase == models.RolloutHeld {
			ev = log.Warn()
		}
		ev.Str("event", event).Str("reason", reason).Fields(map[string]any{"figures": figs}).Msg("rollout decision")
	}

	if s.Kind == models.StrategyImmediate || baseline == "" {
		start := time.Now()
		reason := "immediate"
		if s.Kind != models.StrategyImmediate {
			reason = "no Active version to compare with: promoted after warm-up"
		}
		if err := n.activate(ctx, run.model, run.version); err != nil {
			decide(models.RolloutRolledBack, models.EventRolledBack, "activation failed: "+err.Error(), nil, nil)
			return
		}
		decide(models.RolloutPromoted, models.EventPromoted, reason, map[string]float64{"activate_seconds": time.Since(start).Seconds()}, nil)
		return
	}

	state := models.Canary
	if s.Kind == models.StrategyShadow {
		state = models.Shadow
	}
	start := time.Now()
	l := n.engine.loader()
	if _, err := n.store.Stage(ctx, run.model, run.version, state, l); err != nil {
		l.discard()
		// The store recorded Failed(LoadError/WarmupFailed) already.
		decide(models.RolloutRolledBack, models.EventRolledBack, "staging failed: "+err.Error(), nil, nil)
		return
	}
	sess := l.take()
	if err := n.engine.addCandidate(sess); err != nil {
		decide(models.RolloutRolledBack, models.EventRolledBack, "routing the candidate: "+err.Error(), nil,
			&models.Move{Version: run.version, To: models.Retired, Opts: models.TransitionOptions{Detail: err.Error()}})
		return
	}
	share := s.CanaryPercent / 100
	setShare := n.router.SetCanary
	if s.Kind == models.StrategyShadow {
		share, setShare = s.ShadowPercent/100, n.router.SetShadow
	}
	base0, err := n.router.Stats(run.model, baseline)
	if err == nil {
		err = setShare(run.model, run.version, share)
	}
	if err != nil { // the baseline went away (an admin call): give up
		rs.retire(dctx, run.model, run.version, models.RolloutAborted, models.EventAborted, "baseline not routed: "+err.Error(), nil)
		return
	}
	cand0, _ := n.router.Stats(run.model, run.version)
	staged := time.Now()
	decide(models.RolloutRunning, models.EventStaged, fmt.Sprintf("%s at %g%%", state, share*100),
		map[string]float64{"stage_seconds": staged.Sub(start).Seconds(), "share": share}, nil)

	tick := time.NewTicker(rs.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			reason := "node shutting down"
			if c := context.Cause(ctx); errors.Is(c, ErrRolloutAborted) {
				reason = c.Error()
			}
			rs.retire(dctx, run.model, run.version, models.RolloutAborted, models.EventAborted, reason, run.snapshot())
			return
		case <-tick.C:
		}
		base, err1 := n.router.Stats(run.model, baseline)
		cand, err2 := n.router.Stats(run.model, run.version)
		if err := errors.Join(err1, err2); err != nil {
			rs.retire(dctx, run.model, run.version, models.RolloutAborted, models.EventAborted, "version no longer routed: "+err.Error(), run.snapshot())
			return
		}
		v := evaluate(s, time.Since(staged), base.Sub(base0), cand.Sub(cand0))
		run.mu.Lock()
		run.progress = v.figures
		run.mu.Unlock()
		switch v.verdict {
		case verdictWait:
			continue
		case verdictPass:
			move := &models.Move{Version: run.version, To: models.Active, Opts: models.TransitionOptions{Detail: "rollout passed its gates"}}
			if _, err := n.store.Decide(dctx, run.model, models.RolloutPromoted,
				models.Decision{Event: models.EventPromoted, Reason: v.reason, Figures: cleanFigures(v.figures)}, move); err != nil {
				log.Error().Err(err).Msg("recording the promotion; the candidate is retired")
				rs.retire(dctx, run.model, run.version, models.RolloutAborted, models.EventAborted, "promotion failed: "+err.Error(), v.figures)
				return
			}
			if err := n.engine.promote(nil, models.VersionInfo{Model: run.model, Version: run.version}); err != nil {
				log.Error().Err(err).Msg("routing the promoted version")
			}
			log.Info().Str("reason", v.reason).Fields(map[string]any{"figures": v.figures}).Msg("rollout promoted")
			return
		case verdictFail:
			if s.OnFailure == models.Hold {
				if err := setShare(run.model, "", 0); err != nil {
					log.Warn().Err(err).Msg("stopping candidate traffic")
				}
				decide(models.RolloutHeld, models.EventHeld, v.reason, v.figures, nil)
				return
			}
			rs.retire(dctx, run.model, run.version, models.RolloutRolledBack, models.EventRolledBack, v.reason, v.figures)
			return
		}
	}
}

func (run *rolloutRun) snapshot() map[string]float64 {
	run.mu.Lock()
	defer run.mu.Unlock()
	return run.progress
}

// retire takes a candidate out: no new traffic at once, unloaded after its
// in-flight requests (and shadow runs), then recorded — Failed
// (HealthRegression) for a rollback, Retired for an abort — with the
// decision in the same transaction. figures gets rollback_seconds: from
// the decision to the candidate being unloaded.
func (rs *rollouts) retire(ctx context.Context, model, version string, phase models.RolloutPhase, event, reason string, figures map[string]float64) (models.Rollout, error) {
	start := time.Now()
	n := rs.n
	_ = n.router.SetCanary(model, "", 0)
	_ = n.router.SetShadow(model, "", 0)
	if err := n.engine.remove(model, version); err != nil && !errors.Is(err, inference.ErrNotFound) {
		rs.log.Warn().Err(err).Str("model", model).Str("version", version).Msg("unloading the candidate")
	}
	figs := make(map[string]float64, len(figures)+1)
	for k, v := range figures {
		figs[k] = v
	}
	figs["rollback_seconds"] = time.Since(start).Seconds()
	var move *models.Move
	if v, err := n.store.Version(ctx, model, version); err == nil && (v.State == models.Canary || v.State == models.Shadow) {
		move = &models.Move{Version: version, To: models.Retired, Opts: models.TransitionOptions{Detail: reason}}
		if phase == models.RolloutRolledBack {
			move.To, move.Opts.Reason = models.Failed, models.ReasonHealthRegression
		}
	}
	r, err := n.store.Decide(ctx, model, phase, models.Decision{Event: event, Reason: reason, Figures: cleanFigures(figs)}, move)
	if err != nil {
		rs.log.Error().Err(err).Str("model", model).Str("version", version).Msg("recording a rollout decision")
	}
	rs.log.Warn().Str("model", model).Str("version", version).Str("event", event).Str("reason", reason).
		Fields(map[string]any{"figures": figs}).Msg("rollout decision")
	return r, err
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
// MinDuration. It is pure, for testing.
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
	if int64(observed) < s.MinRequests {
		if s.MaxDuration > 0 && elapsed >= s.MaxDuration.D() {
			return fail("not enough traffic: %d of %d observations in %v", observed, s.MinRequests, s.MaxDuration.D())
		}
		return e
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
	if g.MaxP99Ratio != nil && math.IsNaN(ratio) {
		e.reason += " (latency gate not evaluated: no baseline latency in the window)"
	}
	return e
}
