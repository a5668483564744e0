package serving

import (
	"context"
	"fmt"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/models/store"
)

// Triton's repository control (POST /v2/repository/models/{m}/load and
// /unload) as operations of the one owner. Unload is a local operator's
// decision like Activate: it is recorded as the model's override (action
// "unload", no version), so a desired state that names the model is not
// silently undone and does not silently undo it either — it gets
// Waiting(Overridden) until a source accepts a newer generation naming the
// model (which ends the override and loads the model again) or Load or
// DELETE /admin/models/{m}/override hands it back.

// OverrideUnload is the override action Unload records.
const OverrideUnload = "unload"

// unloaded reports whether model is held unloaded by an unload override.
func (o *Owner) unloaded(ctx context.Context, model string) bool {
	mi, err := o.store.Model(ctx, model)
	return err == nil && mi.Override != nil && mi.Override.Action == OverrideUnload
}

// Unload stops serving every version of model (each after its in-flight
// requests) and records the decision as the model's override. The store
// keeps its versions and states: the Active version is what Load (or the
// next desired generation) serves again, and a restart does not load a
// model whose override is an unload. A running or held rollout of the
// model makes it fail (models.ErrInUse) unless a.AbortRollout.
func (o *Owner) Unload(ctx context.Context, model string, a Admin) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	defer o.changes.Notify()
	if _, err := o.store.Model(ctx, model); err != nil {
		return fmt.Errorf("unload %s: %w", model, err)
	}
	if err := o.yieldRolloutLocked(ctx, model, "", a, "unload"); err != nil {
		return err
	}
	for _, ix := range o.router.Index() {
		if ix.Model == model && ix.State == inference.StateServing {
			o.engine.unload(model, ix.Version, "unloaded by repository control")
		}
	}
	return o.overrideLocked(ctx, model, "", OverrideUnload)
}

// Load serves model, Triton's repository load: a model held by an unload
// override is handed back to desired state (the override is dropped) and
// its Active version loaded again; a model already served is left as it is
// (Triton would reload it from its files; the store's files do not change
// under a version); a model with no Active version gets its newest Ready
// version activated, as a local decision recorded like Activate's.
func (o *Owner) Load(ctx context.Context, model string) (models.VersionInfo, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	defer o.changes.Notify()
	mi, err := o.store.Model(ctx, model)
	if err != nil {
		return models.VersionInfo{}, fmt.Errorf("load %s: %w", model, err)
	}
	if ov := mi.Override; ov != nil && ov.Action == OverrideUnload {
		if err := o.store.SetOverride(ctx, model, nil); err != nil {
			return models.VersionInfo{}, err
		}
		o.log.Info().Str("model", model).Msg("repository load ends the unload override: the model is back under desired state")
	}
	if mi.Active != "" {
		return o.serveActiveLocked(ctx, model, mi.Active)
	}
	latest, ok := store.LatestReady(mi)
	if !ok {
		return models.VersionInfo{}, fmt.Errorf("load %s: no Active or Ready version to serve: %w", model, models.ErrNotFound)
	}
	v, err := o.activateLocked(ctx, model, latest)
	if err != nil {
		return v, err
	}
	return v, o.overrideLocked(ctx, model, latest, "load")
}

// serveActiveLocked routes the store's Active version of model as its
// default, loading it when it is not loaded (after an unload).
func (o *Owner) serveActiveLocked(ctx context.Context, model, version string) (models.VersionInfo, error) {
	v, err := o.store.Version(ctx, model, version)
	if err != nil {
		return v, err
	}
	if o.engine.routed(model, version) {
		return v, o.engine.promote(nil, v)
	}
	dir, err := o.store.Materialize(ctx, model, version)
	if err != nil {
		return v, err
	}
	if err := o.engine.serve(ctx, v, dir); err != nil {
		return v, fmt.Errorf("loading %s/%s: %w", model, version, err)
	}
	return v, nil
}
