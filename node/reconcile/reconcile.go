package reconcile

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/internal/changes"
	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/node/serving"
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

// Owner is what the reconciler needs from the serving owner.
type Owner interface {
	Apply(ctx context.Context, d serving.Desired) (serving.Outcome, error)
	Subscribe(ctx context.Context) <-chan struct{}
	Models(ctx context.Context) ([]models.ModelInfo, error)
	Stats(model, version string) (inference.StatsSnapshot, error)
}

// Store is what the reconciler needs from the model store: a version's way
// from a manifest to Ready, and the accepted generations. Nothing here
// changes what is loaded or routed.
type Store interface {
	Version(ctx context.Context, model, version string) (models.VersionInfo, error)
	Announce(ctx context.Context, signed []byte) (models.VersionInfo, error)
	Transition(ctx context.Context, model, version string, to models.State, opts models.TransitionOptions) (models.VersionInfo, error)
	VerifyVersion(ctx context.Context, model, version string) (models.VersionInfo, error)
	Fail(ctx context.Context, model, version string, reason models.Reason, detail string) (models.VersionInfo, error)
	Retry(ctx context.Context, model, version string) (models.VersionInfo, error)
	DesiredGenerations(ctx context.Context) (map[string]uint64, error)
	SetDesiredGeneration(ctx context.Context, source string, gen uint64) error
	RecordTransfer(ctx context.Context, model, version string, ts models.TransferStats) error
}

// Fetcher is the cloud link's side of getting a version the store does not
// have: the signed manifest and the chunks (Cloud implements it).
type Fetcher interface {
	// Connected reports whether the link is up now.
	Connected() bool
	// ReadManifest returns the retained signed manifest of model/version;
	// ok is false when none is published (or the link went down).
	ReadManifest(ctx context.Context, model, version string) (signed []byte, ok bool)
	// CheckManifest applies the link's checks to a signed manifest (size,
	// signature, names); a failure is a wire rejection, counted and logged.
	CheckManifest(signed []byte, model, version string) error
	// Fetch downloads a manifest's chunks into the store.
	Fetch(ctx context.Context, m models.Manifest, progress func(transfer.Progress)) (transfer.Result, error)
}

// Config configures a Reconciler.
type Config struct {
	Store Store
	Owner Owner
	// Fetcher is nil when the node runs without a cloud link: a desired
	// version the store does not have then waits (NoCloudLink).
	Fetcher Fetcher
	// NodeID, Groups, Labels and Agent go into the status.
	NodeID string
	Groups []string
	Labels map[string]string
	Agent  string
	// MaxTransferAttempts is how many attempts in a row without progress
	// a transfer gets before the version is Failed(TransferStalled)
	// (default 5).
	MaxTransferAttempts int
	// RetryMin and RetryMax bound the backoff between attempts of a
	// waiting model (defaults 5s and 1m).
	RetryMin, RetryMax time.Duration
	Registerer         prometheus.Registerer
}

// Reconciler drives each desired model towards its desired version, every
// model on its own worker: read the signed manifest, Announce it, download
// it (Downloading, with progress), verify it (Verifying → Ready), then hand
// it to the serving owner (Apply), which activates it or rolls it out.
// Failures leave the previous version serving and are reported with their
// reason. It implements desired.Applier; ApplyDesired is the same intake
// for other sources.
type Reconciler struct {
	cfg     Config
	log     zerolog.Logger
	m       *metrics
	changes changes.Feed // status changed

	ctx context.Context // Run's; workers run under it
	wg  sync.WaitGroup
	// trust counts changes of the keys the node trusts (TrustChanged).
	trust atomic.Uint64

	mu      sync.Mutex             // guards the fields below
	sources map[string]sourceState // source → its desired models
	seq     uint64                 // bumped by every accepted desired state
	gens    wire.AppliedGenerations
	workers map[string]*worker // model → its worker
	notes   map[string]note    // model → what its worker last found
	started bool
}

// sourceState is one source's desired models.
type sourceState struct {
	seq    uint64 // when it was accepted (the latest source wins a conflict)
	gens   map[string]uint64
	models map[string]wire.ModelSpec
}

// note is the reconciler's view of one model, for status: the state of the
// desired version, or why it waits.
type note struct {
	version     string
	state       models.State
	reason      models.Reason
	done, total int64
	rollout     *wire.RolloutRef
}

// New builds a Reconciler; Run starts its workers.
func New(cfg Config, log zerolog.Logger) (*Reconciler, error) {
	if cfg.MaxTransferAttempts <= 0 {
		cfg.MaxTransferAttempts = 5
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 5 * time.Second
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(time.Minute, cfg.RetryMin)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Reconciler{cfg: cfg, log: log.With().Str("component", "reconcile").Logger(), m: m,
		sources: map[string]sourceState{}, workers: map[string]*worker{}, notes: map[string]note{},
		gens: wire.AppliedGenerations{Groups: map[string]uint64{}}}, nil
}

// Generations reads the MQTT generations accepted before a restart (the
// watcher's Initial), so a stale retained message stays stale.
func (r *Reconciler) Generations(ctx context.Context) (wire.AppliedGenerations, error) {
	all, err := r.cfg.Store.DesiredGenerations(ctx)
	if err != nil {
		return wire.AppliedGenerations{}, err
	}
	// A generation over wire.MaxGeneration was accepted by a node before
	// that bound existed (issue 14's poison): it counts as none accepted,
	// else no valid desired state could ever follow it.
	safe := func(src string, gen uint64) uint64 {
		if gen > wire.MaxGeneration {
			r.log.Warn().Str("source", src).Uint64("generation", gen).Msg("stored generation over 2^53-1 ignored")
			return 0
		}
		return gen
	}
	g := wire.AppliedGenerations{Node: safe("node", all[mqttGenPrefix+"node"]), Groups: map[string]uint64{}}
	for src, gen := range all {
		if name, ok := strings.CutPrefix(src, mqttGenPrefix+"group/"); ok {
			g.Groups[name] = safe(src, gen)
		}
	}
	r.mu.Lock()
	r.gens = g
	r.mu.Unlock()
	return g, nil
}

// Run starts a worker for every desired model and keeps doing so as the
// desired state changes, until ctx ends; then it waits for the workers.
func (r *Reconciler) Run(ctx context.Context) {
	r.mu.Lock()
	r.ctx, r.started = ctx, true
	r.syncWorkersLocked()
	r.mu.Unlock()
	// What the owner changes shows in status too: one feed for both.
	for range r.cfg.Owner.Subscribe(ctx) {
		r.changes.Notify()
	}
	r.wg.Wait()
	r.changes.Close()
}

// Subscribe returns a channel that gets a (coalesced) value whenever the
// status may have changed: a change of the reconciler's or of the serving
// owner's.
func (r *Reconciler) Subscribe(ctx context.Context) <-chan struct{} { return r.changes.Subscribe(ctx) }

// Kick wakes every waiting worker now (the link came back).
func (r *Reconciler) Kick() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.workers {
		w.wake()
	}
	r.changes.Notify()
}

// TrustChanged tells the workers that the keys the node trusts changed (a
// key list came into force): a version that failed for its manifest's
// signature is tried once more under the same desired state, so a manifest
// whose key arrived after it is taken without the fleet deciding again.
func (r *Reconciler) TrustChanged() {
	r.trust.Add(1)
	r.Kick()
}

// Apply implements desired.Applier: the watcher's merged state, with the
// generations it accepted, which are persisted first (one bbolt
// transaction each) so a restart does not accept older ones again.
func (r *Reconciler) Apply(ctx context.Context, s desired.Snapshot) error {
	gens := map[string]uint64{mqttGenPrefix + "node": s.Generations.Node}
	for g, gen := range s.Generations.Groups {
		gens[mqttGenPrefix+"group/"+g] = gen
	}
	for src, gen := range gens {
		if err := r.cfg.Store.SetDesiredGeneration(ctx, src, gen); err != nil {
			return err
		}
	}
	r.mu.Lock()
	r.gens = wire.AppliedGenerations{Node: s.Generations.Node, Groups: maps.Clone(s.Generations.Groups)}
	r.mu.Unlock()
	r.setSource(SourceMQTT, gens, s.Models)
	return nil
}

// ApplyDesired records a source's desired models at generation gen (which
// must be newer than the last one accepted from that source, persisted in
// the store) and starts reconciling them. It returns once the state is
// recorded, not when it is reached: status and events report progress.
func (r *Reconciler) ApplyDesired(ctx context.Context, source string, gen uint64, want map[string]wire.ModelSpec) error {
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
	all, err := r.cfg.Store.DesiredGenerations(ctx)
	if err != nil {
		return err
	}
	if last := all[source]; gen <= last {
		return fmt.Errorf("source %s: generation %d, already at %d: %w", source, gen, last, ErrStaleGeneration)
	}
	if err := r.cfg.Store.SetDesiredGeneration(ctx, source, gen); err != nil {
		return err
	}
	r.setSource(source, map[string]uint64{source: gen}, want)
	return nil
}

// CanFetch reports whether a version the store lacks can be fetched (the
// node has a cloud link).
func (r *Reconciler) CanFetch() bool { return r.cfg.Fetcher != nil }

// setSource replaces a source's desired models and brings the workers in
// line: a model whose spec changed gets a new worker (the old one's
// transfer resumes from the store), one whose spec is the same is told of
// the newer generation, one no longer desired stops.
func (r *Reconciler) setSource(source string, gens map[string]uint64, want map[string]wire.ModelSpec) {
	ms := map[string]wire.ModelSpec{}
	for name, spec := range want {
		if !spec.Absent {
			ms[name] = spec
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	r.sources[source] = sourceState{seq: r.seq, gens: gens, models: ms}
	if r.started {
		r.syncWorkersLocked()
	}
	r.changes.Notify()
}

// effectiveLocked merges the sources: per model, the source that accepted
// a desired state most recently wins. "absent": true in a source only means
// that source no longer asks for the model.
func (r *Reconciler) effectiveLocked() map[string]target {
	out := map[string]target{}
	for _, src := range r.sources {
		for name, spec := range src.models {
			if cur, ok := out[name]; !ok || src.seq > cur.seq {
				out[name] = target{spec: spec, gens: src.gens, seq: src.seq}
			}
		}
	}
	return out
}

// target is one model's effective desired state.
type target struct {
	spec wire.ModelSpec
	gens map[string]uint64
	seq  uint64
}

// sameSpec reports whether two desired specs ask for the same thing.
func sameSpec(a, b wire.ModelSpec) bool { return reflect.DeepEqual(a, b) }

// syncWorkersLocked starts, retargets and stops workers to match the
// effective desired state (r.mu held).
func (r *Reconciler) syncWorkersLocked() {
	want := r.effectiveLocked()
	for name, w := range r.workers {
		if _, ok := want[name]; !ok {
			w.cancel()
			delete(r.workers, name)
			delete(r.notes, name)
		}
	}
	for name, t := range want {
		if w := r.workers[name]; w != nil {
			if sameSpec(w.target().spec, t.spec) {
				w.retarget(t)
				continue
			}
			w.cancel()
		}
		ctx, cancel := context.WithCancel(r.ctx)
		w := &worker{r: r, model: name, cancel: cancel, kick: make(chan struct{}, 1), t: t}
		r.workers[name] = w
		r.notes[name] = note{version: t.spec.Version, state: models.Pending, rollout: t.spec.Rollout}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			w.run(ctx)
		}()
	}
}

// setNote records what a worker found, if it is still the model's worker.
func (r *Reconciler) setNote(w *worker, nt note) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.workers[w.model] != w {
		return
	}
	if r.notes[w.model] != nt {
		r.notes[w.model] = nt
		r.changes.Notify()
	}
}

// RolloutOf returns the rollout reference of the desired version, if any
// (carried into events).
func (r *Reconciler) RolloutOf(model, version string) (*wire.RolloutRef, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	nt, ok := r.notes[model]
	if !ok || nt.version != version || nt.rollout == nil {
		return nil, false
	}
	return nt.rollout, true
}

// DesiredStatus is one model's desired version and where it stands.
type DesiredStatus struct {
	Version string
	State   models.State
	Reason  models.Reason
}

// DesiredModels returns every desired model's version and state.
func (r *Reconciler) DesiredModels() map[string]DesiredStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]DesiredStatus, len(r.notes))
	for name, nt := range r.notes {
		out[name] = DesiredStatus{Version: nt.version, State: nt.state, Reason: nt.reason}
	}
	return out
}

// Status is the node's retained status: the accepted MQTT generations,
// and per model the desired version's state (or, for a model no source
// asks for, the Active version).
func (r *Reconciler) Status(ctx context.Context) wire.Status {
	r.mu.Lock()
	gens := wire.AppliedGenerations{Node: r.gens.Node, Groups: maps.Clone(r.gens.Groups)}
	notes := maps.Clone(r.notes)
	r.mu.Unlock()
	st := wire.Status{Protocol: wire.Protocol, Node: r.cfg.NodeID, Time: now(), Agent: r.cfg.Agent,
		Desired: gens, Models: map[string]wire.ModelStatus{}}
	// Configured groups are listed from the start (generation 0 until the
	// group's desired state is accepted), so a fleet rollout that targets a
	// group finds fresh nodes too.
	for _, g := range r.cfg.Groups {
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
	ms, err := r.cfg.Owner.Models(ctx)
	if err != nil {
		r.log.Warn().Err(err).Msg("status: listing the store")
	}
	active := map[string]string{}
	for _, mi := range ms {
		if mi.Active == "" || wire.ValidName(mi.Name) != nil || wire.ValidName(mi.Active) != nil {
			continue
		}
		active[mi.Name] = mi.Active
		if _, ok := notes[mi.Name]; ok {
			continue
		}
		st.Models[mi.Name] = wire.ModelStatus{Version: mi.Active, State: string(models.Active), P99Ms: r.p99Ms(mi.Name, mi.Active),
			Lineage: r.lineage(ctx, mi.Name, mi.Active)}
	}
	connected := r.cfg.Fetcher != nil && r.cfg.Fetcher.Connected()
	for name, nt := range notes {
		ms := wire.ModelStatus{Version: nt.version, State: string(nt.state), Reason: string(nt.reason), Rollout: nt.rollout}
		if nt.reason == models.ReasonBrokerUnreachable && connected {
			// Found while the link was down; its worker is looking again.
			ms.State, ms.Reason = string(models.Pending), ""
		}
		if nt.total > 0 && nt.done <= nt.total {
			ms.BytesDone, ms.BytesTotal = nt.done, nt.total
		}
		if nt.state == models.Active {
			ms.P99Ms = r.p99Ms(name, nt.version)
			ms.Lineage = r.lineage(ctx, name, nt.version)
		}
		if a := active[name]; a != nt.version {
			ms.Serving = a
		}
		st.Models[name] = ms
		if len(st.Models) >= wire.MaxModels {
			break
		}
	}
	return st
}

// labels are the node's labels for fleet selection: the configured ones
// over what the node knows of itself.
func (r *Reconciler) labels() map[string]string {
	l := map[string]string{"arch": runtime.GOARCH, "os": runtime.GOOS, "accelerator": "none"}
	maps.Copy(l, r.cfg.Labels)
	return l
}

// p99Ms is the p99 inference latency of a serving version in milliseconds
// (0 when it has served nothing yet).
func (r *Reconciler) p99Ms(model, version string) float64 {
	s, err := r.cfg.Owner.Stats(model, version)
	if err != nil {
		return 0
	}
	return float64(s.Quantile(0.99).Microseconds()) / 1000
}

// lineage is a stored version's lineage (nil: none, or not stored).
func (r *Reconciler) lineage(ctx context.Context, model, version string) *models.Lineage {
	v, err := r.cfg.Store.Version(ctx, model, version)
	if err != nil {
		return nil
	}
	return v.Manifest.Lineage
}

func now() string { return time.Now().UTC().Format(time.RFC3339Nano) }

// metrics are the reconciler's metrics.
type metrics struct {
	bytesDone  *prometheus.GaugeVec
	bytesTotal *prometheus.GaugeVec
	applies    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		bytesDone: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "edge_cloud_download_bytes_done",
			Help: "Bytes of the version being downloaded that are stored and verified, per model."}, []string{"model"}),
		bytesTotal: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "edge_cloud_download_bytes_total",
			Help: "Size of the version being downloaded, per model."}, []string{"model"}),
		applies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edge_cloud_reconcile_total",
			Help: "Reconcile steps of one model towards its desired version, by result (active, failed, waiting, held)."}, []string{"result"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, col := range []prometheus.Collector{m.bytesDone, m.bytesTotal, m.applies} {
		if err := reg.Register(col); err != nil {
			return nil, err
		}
	}
	return m, nil
}
