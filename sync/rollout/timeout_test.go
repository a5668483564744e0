package rollout

import (
	"context"
	"testing"
	"time"

	"github.com/edgeai/edge-node/sync/wire"
)

// TestRolloutOfflineNodeTimesOut: a node whose retained status selects it
// but that is offline (it never reacts) is counted timed out after the
// per-node timeout; with 1 of 10 bad under a 20 % bound the rollout
// completes instead of holding its wave until the wave timeout aborts it.
func TestRolloutOfflineNodeTimesOut(t *testing.T) {
	e := newEnv(t, 9, quickProfile)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ghost := wire.Status{Protocol: wire.Protocol, Node: "ghost", Time: time.Now().UTC().Format(time.RFC3339Nano),
		Desired: wire.AppliedGenerations{Groups: map[string]uint64{"cams": 0}},
		Models:  map[string]wire.ModelStatus{"det": {Version: "1", State: "Active"}}}
	b, err := ghost.Encode()
	if err != nil {
		t.Fatal(err)
	}
	pub := testLink(t, e.broker.URL(), "ghost-status")
	if err := pub.Publish(ctx, e.tp.Status("ghost"), true, b); err != nil {
		t.Fatal(err)
	}
	spec := testSpec("r-offline", "2")
	spec.Waves = []int{100}
	spec.Abort = Abort{MaxFailedPercent: 20, MinFinished: 5}
	spec.NodeTimeout = 3 * time.Second
	spec.WaveTimeout = 5 * time.Minute
	r, _ := runRollout(t, e, e.controller(t, "a"), spec)
	if r.Phase != PhaseCompleted {
		t.Fatalf("phase %s (%s), want completed with the offline node timed out", r.Phase, r.Reason)
	}
	if c := r.Counts[0]; c.TimedOut != 1 || c.Active != 9 {
		t.Fatalf("counts %+v, want 9 active and 1 timed out", c)
	}
	if got := r.BadNodes["ghost"]; got != StateTimedOut {
		t.Fatalf("bad nodes %v, want ghost timed_out", r.BadNodes)
	}
}
