package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/kubeedge"
	"github.com/edgeai/edge-node/sync/kubeedge/dmi"
	"github.com/edgeai/edge-node/sync/kubeedge/eventbus"
	"github.com/edgeai/edge-node/sync/wire"
)

// kubeEdgeApplier implements kubeedge.Applier over the real node.
//
// With the cloud link running, a Device's desired models go to the
// reconciler (Node.ApplyDesired) as the bridge's own source: a version the
// store does not have is fetched (signed manifest, chunk transfer) like one
// from the MQTT desired state, and a version that cannot be had is reported
// in status (Waiting(ManifestNotPublished), Failed(...)), not refused.
//
// With the cloud link disabled there is no way to fetch anything: a model
// the store does not know is refused (UnknownModel), a version it does not
// have likewise (UnknownVersion), and a version it has is activated (or
// rolled out with the desired strategy) directly, synchronously, here.
//
// A desired SHA256 is checked against the version's manifest (its model
// file) when the store has the version: a mismatch keeps the model on what
// it ran and is reported as Failed(ChecksumMismatch). A version the store
// does not have yet is forwarded to the reconciler and checked only once it
// is in the store (reported then; it is not held back — see
// docs/operations.md).
type kubeEdgeApplier struct {
	n   *Node
	log zerolog.Logger

	mu sync.Mutex
	// desired is the version last asked for per model, by any KubeEdge
	// source (for Status).
	desired map[string]kubeedge.DesiredModel
	// notes hold what this adapter found itself (cloud disabled, or a
	// checksum mismatch): model → note for the desired version.
	notes map[string]keNote
}

type keNote struct {
	version string
	state   models.State
	reason  models.Reason
}

func newKubeEdgeApplier(n *Node) *kubeEdgeApplier {
	return &kubeEdgeApplier{n: n, log: n.baseLog.With().Str("component", "kubeedge").Logger(),
		desired: map[string]kubeedge.DesiredModel{}, notes: map[string]keNote{}}
}

// modelSHA256 is the sha256 of the manifest's model file ("" if none).
func modelSHA256(m models.Manifest) string {
	for _, f := range m.Files {
		if f.Role == "model" {
			return f.SHA256
		}
	}
	return ""
}

func toWireStrategy(s kubeedge.Strategy) *wire.Strategy {
	switch s.Kind {
	case kubeedge.StrategyCanary:
		return &wire.Strategy{Kind: models.StrategyCanary, CanaryPercent: float64(s.CanaryPercent)}
	case kubeedge.StrategyShadow:
		return &wire.Strategy{Kind: models.StrategyShadow, ShadowPercent: float64(s.ShadowPercent)}
	}
	return &wire.Strategy{Kind: models.StrategyImmediate}
}

// ApplyDesired implements kubeedge.Applier.
func (a *kubeEdgeApplier) ApplyDesired(ctx context.Context, source string, gen uint64, want map[string]kubeedge.DesiredModel) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.n.store
	specs := map[string]wire.ModelSpec{}
	var rej []kubeedge.Rejection
	notes := map[string]keNote{}
	for name, d := range want {
		v, err := st.Version(ctx, name, d.Version)
		known := err == nil
		if err != nil && !errors.Is(err, models.ErrNotFound) {
			return err // transient: the twin tries again
		}
		if !known && a.n.cloud == nil {
			reason, detail := kubeedge.ReasonUnknownVersion, fmt.Sprintf("version %s of %s is not in the store and the cloud link is disabled", d.Version, name)
			if _, err := st.Model(ctx, name); errors.Is(err, models.ErrNotFound) {
				reason, detail = kubeedge.ReasonUnknownModel, fmt.Sprintf("model %s is not in the store and the cloud link is disabled", name)
			} else if err != nil {
				return err
			}
			rej = append(rej, kubeedge.Rejection{Property: kubeedge.PropertyName(name, kubeedge.FieldVersion), Model: name, Reason: reason, Detail: detail})
			continue
		}
		if known && d.SHA256 != "" && modelSHA256(v.Manifest) != d.SHA256 {
			a.log.Warn().Str("model", name).Str("version", d.Version).Str("want_sha256", d.SHA256).
				Str("manifest_sha256", modelSHA256(v.Manifest)).Msg("desired sha256 does not match the version; keeping what runs")
			notes[name] = keNote{version: d.Version, state: models.Failed, reason: models.ReasonChecksumMismatch}
			a.desired[name] = d
			continue
		}
		specs[name] = wire.ModelSpec{Version: d.Version, Strategy: toWireStrategy(d.Strategy)}
	}
	if a.n.cloud != nil {
		if err := a.n.ApplyDesired(ctx, source, gen, specs); err != nil {
			return err
		}
	} else {
		for name, spec := range specs {
			notes[name] = a.applyLocal(ctx, name, spec)
		}
	}
	for name := range specs {
		a.desired[name] = want[name]
	}
	a.notes = notes
	if len(rej) > 0 {
		return &kubeedge.RejectedError{Rejections: rej}
	}
	return nil
}

// applyLocal brings model to spec without the cloud link: the version is in
// the store. Failures leave the Active version serving and are noted.
func (a *kubeEdgeApplier) applyLocal(ctx context.Context, model string, spec wire.ModelSpec) keNote {
	nt := keNote{version: spec.Version}
	mi, err := a.n.store.Model(ctx, model)
	if err == nil && mi.Active == spec.Version && a.n.engine.routed(model, spec.Version) {
		nt.state = models.Active
		return nt
	}
	if running, ok := a.n.rollingOut(model); ok && running == spec.Version {
		nt.state = models.Canary
		return nt
	}
	if spec.Strategy == nil || spec.Strategy.Kind == models.StrategyImmediate {
		err = a.n.activate(ctx, model, spec.Version)
	} else {
		err = a.n.Rollout(ctx, model, spec.Version, *spec.Strategy)
	}
	if v, verr := a.n.store.Version(ctx, model, spec.Version); verr == nil {
		nt.state, nt.reason = v.State, v.Reason
	}
	if err != nil {
		a.log.Warn().Err(err).Str("model", model).Str("version", spec.Version).Msg("applying the KubeEdge desired version")
		if nt.state != models.Failed {
			nt.state, nt.reason = models.Failed, models.ReasonLoadError
		}
	}
	return nt
}

// Status implements kubeedge.Applier.
func (a *kubeEdgeApplier) Status(ctx context.Context) ([]kubeedge.ModelStatus, error) {
	ms, err := a.n.store.Models(ctx)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	desired := maps.Clone(a.desired)
	notes := maps.Clone(a.notes)
	a.mu.Unlock()
	seen := map[string]bool{}
	out := make([]kubeedge.ModelStatus, 0, len(ms)+len(desired))
	for _, mi := range ms {
		seen[mi.Name] = true
		s := kubeedge.ModelStatus{Model: mi.Name, Active: mi.Active, Canary: mi.Canary}
		for _, v := range mi.Versions {
			if v.Version == mi.Active {
				s.ActiveSHA256 = modelSHA256(v.Manifest)
			}
		}
		if d, ok := desired[mi.Name]; ok {
			s.Desired = d.Version
			s.State, s.Reason = a.stateOf(mi, d, notes[mi.Name])
		}
		if mi.Active != "" {
			if snap, err := a.n.router.Stats(mi.Name, mi.Active); err == nil && snap.Requests > 0 {
				s.Health = &kubeedge.Health{P99: snap.Quantile(0.99), ErrorRate: snap.ErrorRate()}
			} else if err != nil && !errors.Is(err, inference.ErrNotFound) {
				a.log.Debug().Err(err).Str("model", mi.Name).Msg("router stats")
			}
		}
		out = append(out, s)
	}
	for name, d := range desired {
		if seen[name] {
			continue
		}
		s := kubeedge.ModelStatus{Model: name, Desired: d.Version}
		s.State, s.Reason = a.stateOf(models.ModelInfo{Name: name}, d, notes[name])
		out = append(out, s)
	}
	return out, nil
}

// stateOf is the state of the desired version: this adapter's own note
// (checksum mismatch, cloud disabled), else the reconciler's note, else the
// store's.
func (a *kubeEdgeApplier) stateOf(mi models.ModelInfo, d kubeedge.DesiredModel, nt keNote) (models.State, models.Reason) {
	if nt.version == d.Version && nt.state == models.Failed {
		return nt.state, nt.reason
	}
	for _, v := range mi.Versions {
		if v.Version != d.Version {
			continue
		}
		if d.SHA256 != "" && modelSHA256(v.Manifest) != d.SHA256 {
			// Fetched by the reconciler after the desired state was
			// accepted: reported, not undone.
			return models.Failed, models.ReasonChecksumMismatch
		}
	}
	if a.n.cloud != nil {
		if rn := a.n.cloud.rec.note(mi.Name); rn.version == d.Version && rn.state != "" {
			return models.State(rn.state), models.Reason(rn.reason)
		}
	}
	for _, v := range mi.Versions {
		if v.Version == d.Version {
			return v.State, v.Reason
		}
	}
	if a.n.cloud != nil {
		return "Pending", ""
	}
	return nt.state, nt.reason
}

// kubeEdge runs the KubeEdge bridges of the node.
type kubeEdge struct {
	applier *kubeEdgeApplier
	mapper  *dmi.Mapper
	bridge  *eventbus.Bridge
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	log     zerolog.Logger
}

// changePoll is how often the bridges' status is compared with the last
// one; a change (state, version, reason — not health, which goes out every
// report interval) asks the enabled bridges for a report. Polling rather
// than hooking the reconciler catches every change alike: reconciler,
// rollouts, admin API, boot.
const changePoll = time.Second

// startKubeEdge starts the enabled bridges (nil when none is). It never
// waits for EdgeCore: the mapper registers and the bridge connects in the
// background, retrying with backoff.
func startKubeEdge(n *Node) (*kubeEdge, error) {
	cfg := n.cfg.KubeEdge
	if !cfg.DMI.Enabled && !cfg.EventBus.Enabled {
		return nil, nil
	}
	k := &kubeEdge{applier: newKubeEdgeApplier(n), log: n.baseLog.With().Str("component", "kubeedge").Logger()}
	if cfg.DMI.Enabled {
		dc := cfg.DMI.Config
		dc.Version = Version
		m, err := dmi.New(dc, k.applier, n.baseLog, n.reg)
		if err != nil {
			return nil, err
		}
		k.mapper = m
	}
	if cfg.EventBus.Enabled {
		b, err := eventbus.New(cfg.EventBus.Config, k.applier, n.baseLog, n.reg)
		if err != nil {
			k.close()
			return nil, err
		}
		k.bridge = b
	}
	ctx, cancel := context.WithCancel(context.Background())
	k.cancel = cancel
	log := n.baseLog.With().Str("component", "kubeedge").Logger()
	if k.mapper != nil {
		k.goRun(func() {
			if err := k.mapper.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				log.Error().Err(err).Msg("DMI mapper stopped")
			}
		})
	}
	if k.bridge != nil {
		k.goRun(func() {
			if err := k.bridge.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				log.Error().Err(err).Msg("EventBus bridge stopped")
			}
		})
	}
	k.goRun(func() { k.watchChanges(ctx) })
	log.Info().Bool("dmi", k.mapper != nil).Bool("eventbus", k.bridge != nil).Msg("KubeEdge bridge started")
	return k, nil
}

func (k *kubeEdge) goRun(f func()) {
	k.wg.Add(1)
	go func() { defer k.wg.Done(); f() }()
}

func (k *kubeEdge) requestReport() {
	if k.mapper != nil {
		k.mapper.RequestReport()
	}
	if k.bridge != nil {
		k.bridge.RequestReport()
	}
}

func (k *kubeEdge) watchChanges(ctx context.Context) {
	t := time.NewTicker(changePoll)
	defer t.Stop()
	var last map[string]kubeedge.ModelStatus
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := k.applier.Status(ctx)
		if err != nil {
			k.log.Debug().Err(err).Msg("status for change detection")
			continue
		}
		cur := make(map[string]kubeedge.ModelStatus, len(st))
		for _, s := range st {
			s.Health = nil
			cur[s.Model] = s
		}
		// The first comparison always reports: changes made before it
		// (between the bridges' own first reports and this tick) are not
		// otherwise seen.
		if last == nil || !reflect.DeepEqual(cur, last) {
			k.log.Debug().Msg("model status changed: reporting")
			k.requestReport()
		}
		last = cur
	}
}

// close stops the bridges (before the reconciler and the store close).
func (k *kubeEdge) close() error {
	if k.cancel != nil {
		k.cancel()
	}
	k.wg.Wait()
	var errs []error
	if k.mapper != nil {
		errs = append(errs, k.mapper.Close())
	}
	if k.bridge != nil {
		errs = append(errs, k.bridge.Close())
	}
	return errors.Join(errs...)
}
