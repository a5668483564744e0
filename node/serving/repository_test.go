package serving

import (
	"context"
	"errors"
	"testing"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
	"github.com/edgeai/edge-node/models"
)

// Unload stops serving and is recorded as an override: the fleet's desired
// state of the generation it saw gets Waiting(Overridden) and serves
// nothing; Load hands the model back (its Active version serves again); a
// newer generation also ends it and loads the desired version.
func TestUnloadIsAnOverrideLoadHandsBack(t *testing.T) {
	o, st := newTestOwner(t, 2)
	ctx := context.Background()
	if err := st.SetDesiredGeneration(ctx, "mqtt/node", 5); err != nil {
		t.Fatal(err)
	}
	if err := o.Unload(ctx, "m", Admin{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := o.Acquire("m", ""); !errors.Is(err, inference.ErrNotFound) {
		t.Fatalf("acquire after unload: %v, want ErrNotFound", err)
	}
	mi, _ := o.Model(ctx, "m")
	if mi.Active != "1" || mi.Override == nil || mi.Override.Action != OverrideUnload || mi.Override.Version != "" {
		t.Fatalf("after unload: Active %q override %+v", mi.Active, mi.Override)
	}
	// The desired state the unload saw does not undo it, even naming the Active version.
	for _, v := range []string{"1", "2"} {
		oc, err := o.Apply(ctx, Desired{Model: "m", Version: v, Generations: map[string]uint64{"mqtt/node": 5}})
		if err != nil || oc.Reason != models.ReasonOverridden || oc.Override.Action != OverrideUnload {
			t.Fatalf("desired %s of the same generation: %+v %v, want Overridden by the unload", v, oc, err)
		}
	}
	if _, _, err := o.Acquire("m", ""); !errors.Is(err, inference.ErrNotFound) {
		t.Fatalf("acquire after an overridden desired state: %v", err)
	}
	// Load: Active m/1 serves again, the override is gone.
	v, err := o.Load(ctx, "m")
	if err != nil || v.Version != "1" {
		t.Fatalf("load: %+v %v", v, err)
	}
	m, release, err := o.Acquire("m", "")
	if err != nil || m.Version() != "1" {
		t.Fatalf("acquire after load: %v", err)
	}
	release()
	if mi, _ := o.Model(ctx, "m"); mi.Override != nil {
		t.Fatalf("override after load: %+v", mi.Override)
	}
	if err := consistent(ctx, o); err != nil {
		t.Fatal(err)
	}
	// Loading a served model changes nothing.
	if v, err := o.Load(ctx, "m"); err != nil || v.Version != "1" {
		t.Fatalf("second load: %+v %v", v, err)
	}
	// Unload again; a newer generation naming the model ends the override.
	if err := o.Unload(ctx, "m", Admin{}); err != nil {
		t.Fatal(err)
	}
	oc, err := o.Apply(ctx, Desired{Model: "m", Version: "1", Generations: map[string]uint64{"mqtt/node": 6}})
	if err != nil || oc.State != models.Active {
		t.Fatalf("newer generation after unload: %+v %v", oc, err)
	}
	if err := consistent(ctx, o); err != nil {
		t.Fatal(err)
	}
	// Clearing an unload override (DELETE /admin/models/{m}/override)
	// serves the Active version again.
	if err := o.Unload(ctx, "m", Admin{}); err != nil {
		t.Fatal(err)
	}
	if err := o.ClearOverride(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	if err := consistent(ctx, o); err != nil {
		t.Fatalf("after clearing the unload override: %v", err)
	}
	if _, err := o.Load(ctx, "nope"); !errors.Is(err, models.ErrNotFound) {
		t.Errorf("load of an unknown model: %v", err)
	}
	if err := o.Unload(ctx, "nope", Admin{}); !errors.Is(err, models.ErrNotFound) {
		t.Errorf("unload of an unknown model: %v", err)
	}
}

// A model unloaded stays unloaded across a restart (Boot skips it).
func TestUnloadedModelStaysUnloadedAtBoot(t *testing.T) {
	o, st := newTestOwner(t, 1)
	ctx := context.Background()
	if err := o.Unload(ctx, "m", Admin{}); err != nil {
		t.Fatal(err)
	}
	router := inference.NewRouter()
	defer router.Close()
	o2 := New(Config{Store: st, Router: router, Env: inferencetest.Env(t)}, zerolog.Nop())
	defer o2.Close()
	if err := o2.Boot(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := o2.Acquire("m", ""); !errors.Is(err, inference.ErrNotFound) {
		t.Fatalf("acquire after boot of an unloaded model: %v", err)
	}
	if _, err := o2.Load(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	if _, release, err := o2.Acquire("m", ""); err != nil {
		t.Fatal(err)
	} else {
		release()
	}
}

// A rollout in progress makes Unload fail naming it, unless it is aborted.
func TestUnloadDuringRollout(t *testing.T) {
	o, _ := newTestOwner(t, 2)
	ctx := context.Background()
	s := models.Strategy{Kind: models.StrategyCanary, CanaryPercent: 50, MinRequests: 1e9}
	if err := o.StartRollout(ctx, "m", "2", s, Admin{}); err != nil {
		t.Fatal(err)
	}
	if err := o.Unload(ctx, "m", Admin{}); !errors.Is(err, models.ErrInUse) {
		t.Fatalf("unload during a rollout: %v, want ErrInUse", err)
	}
	if err := o.Unload(ctx, "m", Admin{AbortRollout: true}); err != nil {
		t.Fatal(err)
	}
	if ix := o.router.Index(); len(ix) != 0 {
		t.Fatalf("router after unload: %+v", ix)
	}
}
