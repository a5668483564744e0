package rollout

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeai/edge-node/sync/fleet"
	"github.com/edgeai/edge-node/sync/fleetsim"
	"github.com/edgeai/edge-node/sync/wire"
)

// TestSecondRolloutRefusedSameState: a second rollout of the same model on
// overlapping nodes is refused, naming the running one, while the first is
// not finished (same state file: nothing written yet).
func TestSecondRolloutRefusedSameState(t *testing.T) {
	e := newEnv(t, 10, quickProfile)
	c := e.controller(t, "a")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.Start(ctx, testSpec("r-first", "2")); err != nil {
		t.Fatal(err)
	}
	_, err := c.Start(ctx, testSpec("r-second", "3"))
	if err == nil || !strings.Contains(err.Error(), "r-first") {
		t.Fatalf("second rollout: %v, want refused naming r-first", err)
	}
	// Another model on the same nodes is fine.
	other := testSpec("r-other", "2")
	other.Model = "cls"
	if _, err := c.Start(ctx, other); err != nil {
		t.Fatal(err)
	}
}

// TestSecondRolloutRefusedOtherController: a controller with its own state
// file sees the first rollout in the nodes' retained desired state and
// refuses while those nodes have not finished it.
func TestSecondRolloutRefusedOtherController(t *testing.T) {
	prof := quickProfile
	prof.Gate = 10 * time.Minute // wave 1's nodes stay in Canary
	e := newEnv(t, 10, prof)
	c1 := e.controller(t, "a")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	spec := testSpec("r-first", "2")
	spec.Waves = []int{50, 100}
	if _, err := c1.Start(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if _, err := runUntil(ctx, c1, spec.ID, func(r *Record) bool { return r.WavesWritten >= 1 }); err != nil {
		t.Fatal(err)
	}
	e2 := *e
	e2.state = filepath.Join(t.TempDir(), "other.db")
	c2 := e2.controller(t, "b")
	_, err := c2.Start(ctx, testSpec("r-second", "3"))
	if err == nil || !strings.Contains(err.Error(), "r-first") {
		t.Fatalf("second rollout from another state file: %v, want refused naming r-first", err)
	}
}

// TestRolloutBumpsFromRetainedGeneration: another writer changes a node's
// desired state after the controller read it; the controller's write
// bumps the generation the broker holds (not its cached copy) and keeps the
// other writer's entry, so the node applies it and the rollout completes.
func TestRolloutBumpsFromRetainedGeneration(t *testing.T) {
	e := newEnv(t, 3, quickProfile)
	c := e.controller(t, "a")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	spec := testSpec("r-cas", "2")
	spec.Waves, spec.Strategy, spec.WaveTimeout = []int{100}, nil, 20*time.Second
	if _, err := c.Start(ctx, spec); err != nil {
		t.Fatal(err)
	}
	node := e.fleet.IDs()[0]
	other := testLink(t, e.broker.URL(), "other-writer")
	if _, err := fleet.DeployWith(ctx, other, e.tp, fleet.Target{Node: node}, "cls", wire.ModelSpec{Version: "7"}, fleet.DeployOptions{Quiet: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	r, err := c.Run(ctx, spec.ID, nil)
	if err != nil || r.Phase != PhaseCompleted {
		t.Fatalf("rollout after another writer: %v, %s (%s)", err, r.Phase, r.Reason)
	}
	if g := e.fleet.NodeGenerations()[node]; g != 2 {
		t.Fatalf("node %s at desired generation %d, want 2 (the other writer's 1, then the rollout's)", node, g)
	}
	got, err := fleet.ReadRetained(ctx, other, e.tp.NodeDesired(node), 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	d, err := wire.DecodeDesired(got[e.tp.NodeDesired(node)])
	if err != nil || d.Models["cls"].Version != "7" || d.Models["det"].Version != "2" {
		t.Fatalf("retained desired state %+v, %v: want cls 7 kept and det 2", d, err)
	}
}

// TestRolloutHoldsWhenOverwritten: a concurrent writer that read the same
// generation publishes it with other content (MQTT has no conditional
// publish, so both writes land); the controller sees two different states
// under one generation and holds, naming the node, instead of counting
// the node as its own.
func TestRolloutHoldsWhenOverwritten(t *testing.T) {
	prof := fleetsim.Profile{Download: 10 * time.Minute} // nodes stay downloading
	e := newEnv(t, 3, prof)
	c := e.controller(t, "a")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	spec := testSpec("r-mine", "2")
	spec.Waves = []int{100}
	if _, err := c.Start(ctx, spec); err != nil {
		t.Fatal(err)
	}
	node := e.fleet.IDs()[1]
	other := testLink(t, e.broker.URL(), "other-writer")
	written := false
	r, err := c.Run(ctx, spec.ID, func(r *Record) {
		if r.WavesWritten < 1 || written {
			return
		}
		written = true
		d := wire.DesiredState{Protocol: wire.Protocol, Generation: 1, Models: map[string]wire.ModelSpec{
			"det": {Version: "3", Rollout: &wire.RolloutRef{ID: "r-theirs", Wave: 1}}}}
		b, err := d.Encode()
		if err != nil {
			t.Error(err)
			return
		}
		if err := other.Publish(ctx, e.tp.NodeDesired(node), true, b); err != nil {
			t.Error(err)
		}
	})
	if err != nil || r.Phase != PhaseHeld || !strings.Contains(r.Reason, node) {
		t.Fatalf("after a concurrent write: %v, %s (%s), want held naming %s", err, r.Phase, r.Reason, node)
	}
}

// TestRolloutKeepsSignedDesiredEntries: a node's retained desired state was
// written signed (edgectl deploy --key) with another model in it. The
// controller builds on it like on an unsigned one — the other model's entry
// and the generation stay — instead of taking it for invalid and replacing
// it.
func TestRolloutKeepsSignedDesiredEntries(t *testing.T) {
	e := newEnv(t, 3, quickProfile)
	c := e.controller(t, "a")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	node := e.fleet.IDs()[0]
	other := testLink(t, e.broker.URL(), "signing-writer")
	if _, err := fleet.DeployWith(ctx, other, e.tp, fleet.Target{Node: node}, "cls", wire.ModelSpec{Version: "7"},
		fleet.DeployOptions{Quiet: 300 * time.Millisecond, Key: key}); err != nil {
		t.Fatal(err)
	}
	spec := testSpec("r-signed", "2")
	spec.Waves, spec.Strategy, spec.WaveTimeout = []int{100}, nil, 20*time.Second
	if _, err := c.Start(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if r, err := c.Run(ctx, spec.ID, nil); err != nil || r.Phase != PhaseCompleted {
		t.Fatalf("rollout over a signed desired state: %v, %s (%s)", err, r.Phase, r.Reason)
	}
	got, err := fleet.ReadRetained(ctx, other, e.tp.NodeDesired(node), 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	d, err := wire.DecodeDesired(got[e.tp.NodeDesired(node)])
	if err != nil || d.Models["cls"].Version != "7" || d.Models["det"].Version != "2" || d.Generation != 2 || d.Target != "" {
		t.Fatalf("retained desired state %+v, %v: want cls 7 kept, det 2, generation 2, unsigned (no target)", d, err)
	}
}
