package reconcile

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"sync"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/kubeedge"
	"github.com/edgeai/edge-node/sync/wire"
)

// KubeEdge implements kubeedge.Applier over the reconciler: a Device's
// desired models are one more desired-state source (ApplyDesired), reported
// in the same vocabulary. Per model, the source that accepted a desired
// state most recently wins — a Device twin update after a fleet deploy
// takes the model, and the next fleet generation takes it back (the
// precedence table in docs/architecture.md).
//
// A version the store does not have is fetched like one from the MQTT
// desired state when the node has a cloud link; without one it is refused
// up front (UnknownModel, UnknownVersion), so EdgeCore shows why.
//
// A desired SHA256 is checked against the version's manifest (its model
// file) when the store has the version: a mismatch keeps the model on what
// it ran and is reported as Failed(ChecksumMismatch). A version the store
// does not have yet is checked once it is in the store (reported then; it
// is not held back — see docs/operations.md).
type KubeEdge struct {
	r   *Reconciler
	log zerolog.Logger

	mu sync.Mutex // guards the fields below
	// desired is the version last asked for per model, by any KubeEdge
	// source.
	desired map[string]kubeedge.DesiredModel
	// mismatched are the models whose desired sha256 does not match the
	// stored version (model → that version).
	mismatched map[string]string
}

// NewKubeEdge builds the applier over r.
func NewKubeEdge(r *Reconciler, log zerolog.Logger) *KubeEdge {
	return &KubeEdge{r: r, log: log.With().Str("component", "kubeedge").Logger(),
		desired: map[string]kubeedge.DesiredModel{}, mismatched: map[string]string{}}
}

// modelSHA256 is the sha256 of the manifest's model file ("" if none).
func modelSHA256(m models.Manifest) string {
	if f, ok := m.ModelFile(); ok {
		return f.SHA256
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
func (k *KubeEdge) ApplyDesired(ctx context.Context, source string, gen uint64, want map[string]kubeedge.DesiredModel) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	st := k.r.cfg.Store
	specs := map[string]wire.ModelSpec{}
	var rej []kubeedge.Rejection
	mismatched := map[string]string{}
	for name, d := range want {
		v, err := st.Version(ctx, name, d.Version)
		known := err == nil
		if err != nil && !errors.Is(err, models.ErrNotFound) {
			return err // transient: the twin tries again
		}
		if !known && !k.r.CanFetch() {
			reason, detail := kubeedge.ReasonUnknownVersion, fmt.Sprintf("version %s of %s is not in the store and the cloud link is disabled", d.Version, name)
			if !k.hasModel(ctx, name) {
				reason, detail = kubeedge.ReasonUnknownModel, fmt.Sprintf("model %s is not in the store and the cloud link is disabled", name)
			}
			rej = append(rej, kubeedge.Rejection{Property: kubeedge.PropertyName(name, kubeedge.FieldVersion), Model: name, Reason: reason, Detail: detail})
			continue
		}
		if known && d.SHA256 != "" && modelSHA256(v.Manifest) != d.SHA256 {
			k.log.Warn().Str("model", name).Str("version", d.Version).Str("want_sha256", d.SHA256).
				Str("manifest_sha256", modelSHA256(v.Manifest)).Msg("desired sha256 does not match the version; keeping what runs")
			mismatched[name] = d.Version
			k.desired[name] = d
			continue
		}
		specs[name] = wire.ModelSpec{Version: d.Version, Strategy: toWireStrategy(d.Strategy)}
	}
	if err := k.r.ApplyDesired(ctx, source, gen, specs); err != nil {
		return err
	}
	for name := range specs {
		k.desired[name] = want[name]
	}
	k.mismatched = mismatched
	if len(rej) > 0 {
		return &kubeedge.RejectedError{Rejections: rej}
	}
	return nil
}

func (k *KubeEdge) hasModel(ctx context.Context, name string) bool {
	ms, err := k.r.cfg.Owner.Models(ctx)
	if err != nil {
		return false
	}
	for _, mi := range ms {
		if mi.Name == name {
			return true
		}
	}
	return false
}

// Status implements kubeedge.Applier.
func (k *KubeEdge) Status(ctx context.Context) ([]kubeedge.ModelStatus, error) {
	ms, err := k.r.cfg.Owner.Models(ctx)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	desired := maps.Clone(k.desired)
	mismatched := maps.Clone(k.mismatched)
	k.mu.Unlock()
	notes := k.r.DesiredModels()
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
			s.State, s.Reason = stateOf(mi, d, mismatched[mi.Name], notes[mi.Name])
		}
		if mi.Active != "" {
			if snap, err := k.r.cfg.Owner.Stats(mi.Name, mi.Active); err == nil && snap.Requests > 0 {
				s.Health = &kubeedge.Health{P99: snap.Quantile(0.99), ErrorRate: snap.ErrorRate()}
			} else if err != nil && !errors.Is(err, inference.ErrNotFound) {
				k.log.Debug().Err(err).Str("model", mi.Name).Msg("router stats")
			}
		}
		out = append(out, s)
	}
	for name, d := range desired {
		if seen[name] {
			continue
		}
		s := kubeedge.ModelStatus{Model: name, Desired: d.Version}
		s.State, s.Reason = stateOf(models.ModelInfo{Name: name}, d, mismatched[name], notes[name])
		out = append(out, s)
	}
	return out, nil
}

// stateOf is the state of the desired version: a checksum mismatch found
// here or later, else the reconciler's view, else the store's.
func stateOf(mi models.ModelInfo, d kubeedge.DesiredModel, mismatched string, rn DesiredStatus) (models.State, models.Reason) {
	if mismatched == d.Version {
		return models.Failed, models.ReasonChecksumMismatch
	}
	for _, v := range mi.Versions {
		if v.Version == d.Version && d.SHA256 != "" && modelSHA256(v.Manifest) != d.SHA256 {
			// Fetched after the desired state was accepted: reported, not undone.
			return models.Failed, models.ReasonChecksumMismatch
		}
	}
	if rn.Version == d.Version && rn.State != "" {
		return rn.State, rn.Reason
	}
	for _, v := range mi.Versions {
		if v.Version == d.Version {
			return v.State, v.Reason
		}
	}
	return models.Pending, ""
}

// Reporter is what WatchChanges asks for a report (the DMI mapper and the
// EventBus bridge).
type Reporter interface{ RequestReport() }

// WatchChanges asks every reporter for a report whenever the models'
// KubeEdge status changes (state, version, reason — not health, which goes
// out every report interval), until ctx ends. It listens to the
// reconciler's change notifications, which carry the serving owner's too:
// every change alike — reconciler, rollouts, admin API, boot.
func (k *KubeEdge) WatchChanges(ctx context.Context, reporters ...Reporter) {
	changed := k.r.Subscribe(ctx)
	var last map[string]kubeedge.ModelStatus
	for {
		st, err := k.Status(ctx)
		if err != nil {
			k.log.Debug().Err(err).Msg("status for change detection")
		} else {
			cur := make(map[string]kubeedge.ModelStatus, len(st))
			for _, s := range st {
				s.Health = nil
				cur[s.Model] = s
			}
			// The first look always reports: changes made before it are not
			// otherwise seen.
			if last == nil || !reflect.DeepEqual(cur, last) {
				k.log.Debug().Msg("model status changed: reporting")
				for _, rp := range reporters {
					rp.RequestReport()
				}
			}
			last = cur
		}
		if _, ok := <-changed; !ok {
			return // ctx ended or the reconciler stopped
		}
	}
}
