package reconcile

import (
	"testing"

	"github.com/edgeai/edge-node/sync/wire"
)

// Per model, the source that accepted a desired state most recently wins;
// a model only one source names comes from that source, with its
// generations (which decide whether a local override still holds).
func TestLatestSourceWinsPerModel(t *testing.T) {
	r := &Reconciler{sources: map[string]sourceState{}}
	r.sources["mqtt"] = sourceState{seq: 1, gens: map[string]uint64{"mqtt/node": 4},
		models: map[string]wire.ModelSpec{"a": {Version: "1"}, "b": {Version: "1"}}}
	r.sources["kubeedge-dmi"] = sourceState{seq: 2, gens: map[string]uint64{"kubeedge-dmi": 9},
		models: map[string]wire.ModelSpec{"b": {Version: "2"}, "c": {Version: "3"}}}
	got := r.effectiveLocked()
	want := map[string]struct {
		version, source string
		gen             uint64
	}{"a": {"1", "mqtt/node", 4}, "b": {"2", "kubeedge-dmi", 9}, "c": {"3", "kubeedge-dmi", 9}}
	if len(got) != len(want) {
		t.Fatalf("effective %v, want %d models", got, len(want))
	}
	for name, w := range want {
		g := got[name]
		if g.spec.Version != w.version || g.gens[w.source] != w.gen {
			t.Errorf("%s: version %q gens %v, want %q from %s@%d", name, g.spec.Version, g.gens, w.version, w.source, w.gen)
		}
	}
	// MQTT accepts a newer state: it takes b back.
	r.sources["mqtt"] = sourceState{seq: 3, gens: map[string]uint64{"mqtt/node": 5}, models: map[string]wire.ModelSpec{"b": {Version: "4"}}}
	if g := r.effectiveLocked()["b"]; g.spec.Version != "4" || g.gens["mqtt/node"] != 5 {
		t.Errorf("b after a newer MQTT state: %+v", g)
	}
}

func TestSameSpec(t *testing.T) {
	canary := func(p float64) *wire.Strategy { return &wire.Strategy{Kind: wire.StrategyCanary, CanaryPercent: p} }
	for _, tc := range []struct {
		a, b wire.ModelSpec
		same bool
	}{
		{wire.ModelSpec{Version: "1"}, wire.ModelSpec{Version: "1"}, true},
		{wire.ModelSpec{Version: "1"}, wire.ModelSpec{Version: "2"}, false},
		{wire.ModelSpec{Version: "1", Strategy: canary(10)}, wire.ModelSpec{Version: "1", Strategy: canary(10)}, true},
		{wire.ModelSpec{Version: "1", Strategy: canary(10)}, wire.ModelSpec{Version: "1", Strategy: canary(20)}, false},
		{wire.ModelSpec{Version: "1", Rollout: &wire.RolloutRef{ID: "r", Wave: 1}}, wire.ModelSpec{Version: "1", Rollout: &wire.RolloutRef{ID: "r", Wave: 2}}, false},
	} {
		if got := sameSpec(tc.a, tc.b); got != tc.same {
			t.Errorf("sameSpec(%+v, %+v) = %v", tc.a, tc.b, got)
		}
	}
}
