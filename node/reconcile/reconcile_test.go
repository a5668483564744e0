package reconcile

import (
	"context"
	"math"
	"testing"

	"github.com/rs/zerolog"

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

// gensStore is a Store that only holds generations.
type gensStore struct {
	Store
	gens map[string]uint64
}

func (s gensStore) DesiredGenerations(context.Context) (map[string]uint64, error) { return s.gens, nil }

// A generation over 2^53-1 that an earlier node accepted and stored (issue
// 14's poison) counts as none accepted, so valid desired state can follow.
func TestStoredPoisonedGenerationIgnored(t *testing.T) {
	r := &Reconciler{cfg: Config{Store: gensStore{gens: map[string]uint64{
		mqttGenPrefix + "node": math.MaxUint64, mqttGenPrefix + "group/cams": math.MaxUint64, mqttGenPrefix + "group/lab": 7,
	}}}, log: zerolog.Nop()}
	g, err := r.Generations(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if g.Node != 0 || g.Groups["cams"] != 0 || g.Groups["lab"] != 7 {
		t.Fatalf("generations %+v, want node 0, cams 0, lab 7", g)
	}
	st := wire.Status{Protocol: 1, Node: "n1", Time: "2026-01-01T00:00:00Z", Desired: g}
	if err := st.Validate(); err != nil {
		t.Fatalf("status with them: %v", err)
	}
}
