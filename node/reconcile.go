package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/cgo/pinned"
	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/desired"
	"github.com/edgeai/edge-node/sync/transfer"
	"github.com/edgeai/edge-node/sync/wire"
)

// ErrStaleGeneration is returned by ApplyDesired for a generation that is
// not newer than the last one accepted from the same source.
var ErrStaleGeneration = errors.New("stale desired-state generation")

// Desired-state sources. The MQTT watcher's merged state (node topic over
// group topics, docs/protocol.md) is one source; a bridge (KubeEdge) is
// another, named by the bridge.
const (
	SourceMQTT = "mqtt"
	// mqttGenPrefix names the persisted generations of the watcher's
	// topics: "mqtt/node", "mqtt/group/<group>".
	mqttGenPrefix = "mqtt/"
)

// retryEvery is how soon a pass that left work waiting (no manifest yet,
// broker away, transfer interrupted) runs again; a reconnect or a new
// desired state runs one at once.
const retryEvery = 5 * time.Second

// reconciler drives the store and the engine towards the desired state: for
// each desired model whose version is not the one served, read the signed
// manifest, Announce it, download it (Downloading, with progress), verify
// it (Verifying → Ready), and activate it through the node's activation path
// (Loading → Warming → Active; the previous version stays loaded). Failures
// leave the previous version serving and are reported with their reason.
// It implements desired.Applier.
type reconciler struct {
	c    *cloud
	n    *Node
	sink *transfer.StoreSink
	m    *cloudMetrics
	log  zerolog.Logger

	kickCh chan struct{} // capacity 1

	mu         sync.Mutex                 // guards the fields below
	sources    map[string]sourceState     // source → its desired models
	seq        uint64                     // bumped by every accepted desired state
	gens       wire.AppliedGenerations    // accepted MQTT generations, for status
	notes      map[string]note            // model → what the reconciler last found
	tried      map[string]uint64          // model/version → seq at which a Failed version was retried
	lastFetch  map[string]transfer.Result // model/version → the last completed transfer
	passCancel context.CancelFunc         // cancels the running pass when the desired state changes
}

// sourceState is one source's desired models.
type sourceState struct {
	seq    uint64 // when it was accepted (the latest source wins a conflict)
	models map[string]wire.ModelSpec
}

// note is the reconciler's view of one model, for status: the store's state
// of the desired version, or why the reconciler is waiting.
type note struct {
	version, state, reason string
	done, total            int64
	rollout                *wire.RolloutRef
}

func newReconciler(c *cloud, sink *transfer.StoreSink) (*reconciler, error) {
	m, err := newCloudMetrics(c.n.reg)
	if err != nil {
		return nil, err
	}
	return &reconciler{c: c, n: c.n, sink: sink, m: m, log: c.n.baseLog.With().Str("component", "reconcile").Logger(),
		kickCh: make(chan struct{}, 1), sources: map[string]sourceState{}, notes: map[string]note{}, tried: map[string]uint64{},
		lastFetch: map[string]transfer.Result{},
		gens:      wire.AppliedGenerations{Groups: map[string]uint64{}}}, nil
}

// loadGenerations reads the generations accepted before a restart (the
// watcher's Initial), so a stale retained message stays stale.
func (r *reconciler) loadGenerations(ctx context.Context) (wire.AppliedGenerations, error) {
	all, err := r.n.store.DesiredGenerations(ctx)
	if err != nil {
		return wire.AppliedGenerations{}, err
	}
	g := wire.AppliedGenerations{Node: all[mqttGenPrefix+"node"], Groups: map[string]uint64{}}
	for src, gen := range all {
		if name, ok := strings.CutPrefix(src, mqttGenPrefix+"group/"); ok {
			g.Groups[name] = gen
		}
	}
	r.mu.Lock()
	r.gens = g
	r.mu.Unlock()
	return g, nil
}

// Apply implements desired.Applier: the watcher's merged state, with the
// generations it accepted, which are persisted first (one bbolt
// transaction each) so a restart does not accept older ones again.
func (r *reconciler) Apply(ctx context.Context, s desired.Snapshot) error {
	if err := r.n.store.SetDesiredGeneration(ctx, mqttGenPrefix+"node", s.Generations.Node); err != nil {
		return err
	}
	for g, gen := range s.Generations.Groups {
		if err := r.n.store.SetDesiredGeneration(ctx, mqttGenPrefix+"group/"+g, gen); err != nil {
			return err
		}
	}
	r.mu.Lock()
	r.gens = wire.AppliedGenerations{Node: s.Generations.Node, Groups: maps.Clone(s.Generations.Groups)}
	r.mu.Unlock()
	r.setSource(SourceMQTT, s.Models)
	return nil
}

// applyDesired records a source's desired models at generation gen (which
// must be newer than the last one accepted from that source, persisted in
// the store) and starts reconciling. It returns once the state is recorded,
// not when it is reached: status and events report progress.
func (r *reconciler) applyDesired(ctx context.Context, source string, gen uint64, want map[string]wire.ModelSpec) error {
	if source == "" || source == SourceMQTT || strings.HasPrefix(source, mqttGenPrefix) {
		return fmt.Errorf("desired-state source %q is reserved or empty: %w", source, models.ErrInvalidArgument)
	}
	for name, spec := range want {
		if err := wire.ValidName(name); err != nil {
			return fmt.Errorf("model %q: %v: %w", name, err, models.ErrInvalidArgument)
		}
		if !spec.Absent {
			if err := wire.ValidName(spec.Version); err != nil {
				return fmt.Errorf("model %s version %q: %v: %w", name, spec.Version, err, models.ErrInvalidArgument)
			}
		}
	}
	all, err := r.n.store.DesiredGenerations(ctx)
	if err != nil {
		return err
	}
	if last := all[source]; gen <= last {
		return fmt.Errorf("source %s: generation %d, already at %d: %w", source, gen, last, ErrStaleGeneration)
	}
	if err := r.n.store.SetDesiredGeneration(ctx, source, gen); err != nil {
		return err
	}
	r.setSource(source, want)
	return nil
}

// setSource replaces a source's desired models, cancels the running pass
// (its target may be stale; a transfer it started resumes from the store)
// and starts a new one.
func (r *reconciler) setSource(source string, want map[string]wire.ModelSpec) {
	ms := map[string]wire.ModelSpec{}
	for name, spec := range want {
		if !spec.Absent {
			ms[name] = spec
		}
	}
	r.mu.Lock()
	r.seq++
	r.sources[source] = sourceState{seq: r.seq, models: ms}
	if r.passCancel != nil {
		r.passCancel()
	}
	r.mu.Unlock()
	r.kick()
}

func (r *reconciler) kick() {
	select {
	case r.kickCh <- struct{}{}:
	default:
	}
}

// effectiveLocked merges the sources: per model, the source that accepted
// a desired state most recently wins. "absent": true in a source only means
// that source no longer asks for the model (see docs/architecture-cloud.md).
func (r *reconciler) effectiveLocked() map[string]wire.ModelSpec {
	out := map[string]wire.ModelSpec{}
	seqOf := map[string]uint64{}
	for _, src := range r.sources {
		for name, spec := range src.models {
			if src.seq > seqOf[name] {
				out[name], seqOf[name] = spec, src.seq
			}
		}
	}
	return out
}

// run reconciles until ctx ends: a pass on every kick (new desired state,
// reconnect), and again after retryEvery while work is waiting.
func (r *reconciler) run(ctx context.Context) {
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kickCh:
		case <-retry.C:
		}
		pctx, cancel := context.WithCancel(ctx)
		r.mu.Lock()
		r.passCancel = cancel
		want, seq := r.effectiveLocked(), r.seq
		r.mu.Unlock()
		waiting := r.pass(pctx, want, seq)
		cancel()
		if waiting && ctx.Err() == nil {
			retry.Reset(retryEvery)
		}
	}
}

// pass reconciles every desired model once, in name order; it reports
// whether any is still waiting.
func (r *reconciler) pass(ctx context.Context, want map[string]wire.ModelSpec, seq uint64) (waiting bool) {
	for _, name := range slices.Sorted(maps.Keys(want)) {
		if ctx.Err() != nil {
			return true
		}
		spec := want[name]
		w := r.reconcileModel(ctx, name, spec, seq)
		waiting = waiting || w
		result := "active"
		if w {
			result = "waiting"
		} else if nt := r.note(name); nt.state == string(models.Failed) {
			result = "failed"
		}
		r.m.applies.WithLabelValues(result).Inc()
		r.c.kickStatus()
		r.c.link.KickOutbox()
	}
	return waiting
}

func (r *reconciler) setNote(model string, nt note) {
	r.mu.Lock()
	r.notes[model] = nt
	r.mu.Unlock()
	r.c.kickStatus()
}

func (r *reconciler) note(model string) note {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.notes[model]
}

// rolloutOf returns the rollout reference of the desired version, if any
// (carried into events).
func (r *reconciler) rolloutOf(model, version string) (*wire.RolloutRef, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	nt, ok := r.notes[model]
	if !ok || nt.version != version || nt.rollout == nil {
		return nil, false
	}
	return nt.rollout, true
}

// reconcileModel brings one model to spec.Version. It returns true when it
// must be tried again later (waiting for the broker, a manifest not yet
// published, an interrupted transfer); false when the version is Active or
// has failed for a reason a retry of the same desired state will not fix.
func (r *reconciler) reconcileModel(ctx context.Context, model string, spec wire.ModelSpec, seq uint64) bool {
	ver := spec.Version
	log := r.log.With().Str("model", model).Str("version", ver).Logger()
	base := note{version: ver, rollout: spec.Rollout}
	set := func(state, reason string) {
		nt := base
		nt.state, nt.reason = state, reason
		r.setNote(model, nt)
	}
	if mi, err := r.n.store.Model(ctx, model); err == nil && mi.Active == ver && r.n.engine.routed(model, ver) {
		set(string(models.Active), "")
		return false
	}
	v, err := r.n.store.Version(ctx, model, ver)
	if errors.Is(err, models.ErrNotFound) {
		var wait bool
		if v, wait, err = r.announce(ctx, model, ver, set); err != nil || wait {
			return wait
		}
	} else if err != nil {
		set("Waiting", "StoreError")
		log.Error().Err(err).Msg("reading the store")
		return true
	}
	for step := 0; step < 12; step++ {
		if ctx.Err() != nil {
			return true
		}
		set(string(v.State), string(v.Reason))
		switch v.State {
		case models.Announced:
			v, err = r.n.store.Transition(ctx, model, ver, models.Downloading, models.TransitionOptions{})
		case models.Downloading:
			var wait bool
			v, wait, err = r.download(ctx, v, base)
			if wait {
				if err != nil {
					log.Warn().Err(err).Msg("transfer interrupted; it resumes from the store")
					set(string(models.Downloading), "TransferInterrupted")
				}
				return true
			}
		case models.Verifying:
			v, err = r.n.store.VerifyVersion(ctx, model, ver)
			if err != nil && errors.Is(err, models.ErrNotFound) {
				// A blob went missing between download and verify: fetch again.
				v, err = r.n.store.Version(ctx, model, ver)
			}
		case models.Active:
			if r.n.engine.routed(model, ver) {
				set(string(models.Active), "")
				log.Info().Msg("desired version active")
				return false
			}
			err = r.n.activate(ctx, model, ver)
			if err == nil {
				v, err = r.n.store.Version(ctx, model, ver)
			}
		case models.Ready, models.Retired, models.Warming, models.Canary, models.Shadow, models.Loading:
			var wait bool
			wait, err = r.rollout(ctx, model, ver, spec.Strategy, seq)
			if v2, verr := r.n.store.Version(ctx, model, ver); verr == nil {
				v = v2
			}
			if err == nil && wait {
				set(string(v.State), "RollingOut")
				return true
			}
			if err == nil && (v.State == models.Canary || v.State == models.Shadow) {
				set(string(v.State), "Held")
				return false
			}
			if err != nil && v.State != models.Failed {
				set("Waiting", "ActivationError")
				log.Error().Err(err).Msg("activation")
				return true
			}
			if err != nil { // Failed(LoadError, WarmupFailed): the previous version serves
				return r.failed(model, ver, seq, v, err, set, log)
			}
		case models.Failed:
			key := model + "/" + ver
			r.mu.Lock()
			retried := r.tried[key] == seq
			r.tried[key] = seq
			r.mu.Unlock()
			if retried {
				set(string(models.Failed), string(v.Reason))
				log.Warn().Str("reason", string(v.Reason)).Str("detail", v.Detail).Msg("desired version failed; the previous version keeps serving")
				return false
			}
			// Once per accepted desired state, a failed version is tried
			// again: a manifest re-signed with a trusted key, chunks
			// republished, or a transient load error.
			if v.Reason == models.ReasonSignatureInvalid {
				var wait bool
				if v, wait, err = r.announce(ctx, model, ver, set); err != nil || wait {
					return wait
				}
				continue
			}
			v, err = r.n.store.Retry(ctx, model, ver)
		default:
			err = fmt.Errorf("unexpected state %s", v.State)
		}
		if err != nil {
			if ctx.Err() != nil {
				return true
			}
			if cur, verr := r.n.store.Version(ctx, model, ver); verr == nil && cur.State == models.Failed {
				return r.failed(model, ver, seq, cur, err, set, log)
			}
			set(string(v.State), "Error")
			log.Error().Err(err).Msg("reconcile step")
			return true
		}
	}
	return true
}

// failed reports a version the store recorded as Failed in this pass (so
// the pass does not retry it again for the same desired state): the
// previous version keeps serving.
func (r *reconciler) failed(model, ver string, seq uint64, v models.VersionInfo, err error, set func(state, reason string), log zerolog.Logger) bool {
	r.mu.Lock()
	r.tried[model+"/"+ver] = seq
	r.mu.Unlock()
	set(string(models.Failed), string(v.Reason))
	log.Warn().Err(err).Str("reason", string(v.Reason)).Msg("desired version failed; the previous version keeps serving")
	return false
}

// rollout is THE place where a desired version's strategy is dispatched.
// immediate (or none) goes through the node's activation path (Load, Warmup
// on golden cases, Active, routed; the previous version stays loaded as the
// rollback target). canary and shadow start the node's own on-device
// rollout (Node.Rollout), which runs by itself — gates, promotion or
// rollback — with or without the cloud; the reconciler then only waits for
// its outcome. wait is true while a rollout of this version is running, so
// the pass looks again later; a held rollout (a candidate that failed its
// gates with on_failure: hold) is left to the operator.
func (r *reconciler) rollout(ctx context.Context, model, version string, s *wire.Strategy, seq uint64) (wait bool, err error) {
	if s == nil || s.Kind == "" || s.Kind == wire.StrategyImmediate {
		return false, r.n.activate(ctx, model, version)
	}
	if running, ok := r.n.rollingOut(model); ok {
		if running == version {
			return true, nil
		}
		if _, err := r.n.AbortRollout(ctx, model, "superseded by desired version "+version); err != nil && !errors.Is(err, models.ErrNotFound) {
			return false, err
		}
	}
	v, err := r.n.store.Version(ctx, model, version)
	if err != nil {
		return false, err
	}
	if v.State == models.Canary || v.State == models.Shadow {
		return false, nil // held: an operator activates or aborts it
	}
	if err := r.n.Rollout(ctx, model, version, *s); err != nil {
		return false, err
	}
	// Gate failures are decisions, not transient errors: a version the
	// rollout fails is not tried again for the same desired state.
	r.mu.Lock()
	r.tried[model+"/"+version] = seq
	r.mu.Unlock()
	return true, nil
}

// announce reads the retained signed manifest of model/version and records
// it in the store. A manifest that fails the link's checks is counted and
// logged (rate-limited) and never reaches the store, except a bad or
// untrusted signature, which the store records as Failed(SignatureInvalid)
// for a version it does not have (never touching an existing one).
func (r *reconciler) announce(ctx context.Context, model, ver string, set func(state, reason string)) (models.VersionInfo, bool, error) {
	topic := r.c.topics.Manifest(model, ver)
	set("Waiting", "BrokerUnreachable")
	if err := r.c.link.WaitConnected(ctx); err != nil {
		return models.VersionInfo{}, true, nil
	}
	b, ok := r.readRetained(ctx, topic, manifestWait)
	if !ok {
		set("Waiting", "ManifestNotPublished")
		return models.VersionInfo{}, true, nil
	}
	m, _, derr := wire.DecodeSignedManifest(b, r.c.keys, r.n.cfg.Cloud.MaxModelBytes)
	if derr == nil && (m.Model != model || m.Version != ver) {
		derr = wire.Reject(wire.KindManifest, wire.ReasonBadField, "manifest for %s/%s on the topic of %s/%s", m.Model, m.Version, model, ver)
	}
	if derr != nil {
		r.c.rej.Observe(topic, derr)
		_, reason := wire.ReasonOf(derr)
		if reason == wire.ReasonBadSignature || reason == wire.ReasonUnknownKey {
			v, aerr := r.n.store.Announce(ctx, b)
			if aerr != nil && !errors.Is(aerr, models.ErrSignatureInvalid) {
				r.log.Warn().Err(aerr).Str("model", model).Str("version", ver).Msg("recording the bad signature")
			}
			set(string(models.Failed), string(models.ReasonSignatureInvalid))
			return v, false, errors.Join(derr, aerr)
		}
		set(string(models.Failed), "InvalidManifest")
		return models.VersionInfo{}, false, derr
	}
	v, err := r.n.store.Announce(ctx, b)
	if err != nil {
		set(string(models.Failed), "AnnounceRejected")
		r.log.Error().Err(err).Str("model", model).Str("version", ver).Msg("store refused the manifest")
		return v, false, err
	}
	return v, false, nil
}

// manifestWait bounds the wait for a retained manifest after the SUBACK
// (the broker sends a retained message right after it; none in this time
// means it is not published yet, and the pass retries later).
const manifestWait = 2 * time.Second

// readRetained returns the retained message of one topic: the first message
// that arrives after subscribing, or false when none came within wait.
func (r *reconciler) readRetained(ctx context.Context, topic string, wait time.Duration) ([]byte, bool) {
	got := make(chan []byte, 1)
	h := func(_ string, payload []byte) {
		select {
		case got <- append([]byte(nil), payload...):
		default:
		}
	}
	if err := r.c.link.Subscribe(ctx, h, topic); err != nil {
		return nil, false
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = r.c.link.Unsubscribe(uctx, topic)
	}()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case b := <-got:
		return b, len(b) > 0 // an empty retained payload is a deletion
	case <-t.C:
	case <-ctx.Done():
	}
	return nil, false
}

// download fetches v's chunks into the store and verifies the version. It
// returns wait=true when the transfer stopped before the end (ctx ended, the
// broker went away): what was written and verified stays in the store.
func (r *reconciler) download(ctx context.Context, v models.VersionInfo, base note) (models.VersionInfo, bool, error) {
	model, ver := v.Model, v.Version
	progress := func(p transfer.Progress) {
		nt := base
		nt.state, nt.done, nt.total = string(models.Downloading), p.BytesDone, p.BytesTotal
		r.setNote(model, nt)
		r.m.bytesDone.WithLabelValues(model).Set(float64(p.BytesDone))
		r.m.bytesTotal.WithLabelValues(model).Set(float64(p.BytesTotal))
	}
	res, err := r.c.fetcher.Fetch(ctx, v.Manifest, progress)
	if err != nil {
		r.sink.Close() // release open ingests; they stay resumable
		if ctx.Err() != nil {
			return v, true, nil
		}
		if errors.Is(err, transfer.ErrChecksumMismatch) {
			fv, ferr := r.n.store.Fail(context.WithoutCancel(ctx), model, ver, models.ReasonChecksumMismatch, err.Error())
			return fv, false, errors.Join(err, ferr)
		}
		return v, true, err
	}
	r.log.Info().Str("model", model).Str("version", ver).Int64("bytes_network", res.BytesNetwork).
		Int64("bytes_local", res.BytesLocal).Int64("bytes_resumed", res.BytesResumed).Int64("bytes_total", res.BytesTotal).
		Int("chunks_network", res.ChunksNetwork).Int("chunks_resumed", res.ChunksResumed).Msg("version downloaded")
	r.mu.Lock()
	r.lastFetch[model+"/"+ver] = res
	r.mu.Unlock()
	nv, err := r.n.store.VerifyVersion(ctx, model, ver)
	return nv, false, err
}

// status is the node's retained status: the accepted generations, and per
// model the desired version's state (or, for a model no source asks for,
// the Active version).
func (r *reconciler) status(ctx context.Context) wire.Status {
	r.mu.Lock()
	gens := wire.AppliedGenerations{Node: r.gens.Node, Groups: maps.Clone(r.gens.Groups)}
	want := r.effectiveLocked()
	notes := maps.Clone(r.notes)
	r.mu.Unlock()
	st := wire.Status{Protocol: wire.Protocol, Node: r.c.nodeID, Time: now(), Agent: "edge-node/" + Version,
		Desired: gens, Models: map[string]wire.ModelStatus{}}
	// Configured groups are listed from the start (generation 0 until the
	// group's desired state is accepted), so a fleet rollout that targets a
	// group finds fresh nodes too.
	for _, g := range r.n.cfg.Cloud.Groups {
		if _, ok := st.Desired.Groups[g]; !ok {
			if st.Desired.Groups == nil {
				st.Desired.Groups = map[string]uint64{}
			}
			st.Desired.Groups[g] = 0
		}
	}
	if len(st.Desired.Groups) == 0 {
		st.Desired.Groups = nil
	}
	st.Labels = r.labels()
	ms, err := r.n.store.Models(ctx)
	if err != nil {
		r.log.Warn().Err(err).Msg("status: listing the store")
	}
	for _, mi := range ms {
		if _, ok := want[mi.Name]; ok || mi.Active == "" || wire.ValidName(mi.Name) != nil || wire.ValidName(mi.Active) != nil {
			continue
		}
		st.Models[mi.Name] = wire.ModelStatus{Version: mi.Active, State: string(models.Active), P99Ms: r.p99Ms(mi.Name, mi.Active)}
	}
	for name, spec := range want {
		nt := notes[name]
		ms := wire.ModelStatus{Version: spec.Version, State: "Pending", Rollout: spec.Rollout}
		if nt.version == spec.Version {
			ms.State, ms.Reason = nt.state, nt.reason
			if nt.total > 0 && nt.done <= nt.total {
				ms.BytesDone, ms.BytesTotal = nt.done, nt.total
			}
		}
		if ms.State == string(models.Active) {
			ms.P99Ms = r.p99Ms(name, spec.Version)
		}
		st.Models[name] = ms
		if len(st.Models) >= wire.MaxModels {
			break
		}
	}
	return st
}

// labels are the node's labels for fleet selection: the configured ones,
// over what the node knows of itself (arch, os, the pinned-memory mode as
// the accelerator hint).
func (r *reconciler) labels() map[string]string {
	l := map[string]string{"arch": runtime.GOARCH, "os": runtime.GOOS, "accelerator": "none"}
	if r.n.pool != nil && r.n.pool.Mode() == pinned.CUDAHost {
		l["accelerator"] = "cuda"
	}
	for k, v := range r.n.cfg.Cloud.Labels {
		l[k] = v
	}
	return l
}

// p99Ms is the p99 inference latency the router measured for a serving
// version, in milliseconds (0 when it has served nothing yet).
func (r *reconciler) p99Ms(model, version string) float64 {
	s, err := r.n.router.Stats(model, version)
	if err != nil {
		return 0
	}
	return float64(s.Quantile(0.99).Microseconds()) / 1000
}
