package rollout

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/internal/testwait"
	"github.com/edgeai/edge-node/sync/fleetsim"
	"github.com/edgeai/edge-node/sync/wire"
)

// joinFleet connects n more simulated nodes (late-00000 …) of group cams,
// running det 1, to e's broker: nodes that join the target after a
// rollout started.
func joinFleet(t *testing.T, e *env, n int, prof fleetsim.Profile) *fleetsim.Fleet {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f, err := fleetsim.Start(ctx, fleetsim.Config{BrokerURL: e.broker.URL(), Topics: e.tp, Nodes: n, Prefix: "late",
		Groups: []string{"cams"}, Initial: map[string]string{"det": "1"}, Profile: prof}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

// TestRolloutContinuousAddsJoiners: a continuous rollout whose waves all
// finished does not complete: it watches, and nodes that join the target
// then get the version (added to the last wave, counted in Joined, judged
// like the others).
func TestRolloutContinuousAddsJoiners(t *testing.T) {
	e := newEnv(t, 10, quickProfile)
	c := e.controller(t, "a")
	spec := testSpec("r-cont", "2")
	spec.Waves, spec.Continuous = []int{50, 100}, true
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := c.Start(ctx, spec); err != nil {
		t.Fatal(err)
	}
	r, err := runUntil(ctx, c, spec.ID, func(r *Record) bool { return r.Phase != PhaseRunning })
	if err != nil || r.Phase != PhaseWatching {
		t.Fatalf("after the last wave: %v, phase %s (%s), want watching", err, r.Phase, r.Reason)
	}
	late := joinFleet(t, e, 3, quickProfile)
	r, err = runUntil(ctx, c, spec.ID, func(r *Record) bool {
		return r.Joined == 3 && r.WavesWritten == len(r.Members) && r.Counts[len(r.Counts)-1].Active == len(r.Members[len(r.Members)-1])
	})
	if err != nil || r.Phase != PhaseWatching || r.Joined != 3 || r.Nodes() != 13 {
		t.Fatalf("after 3 nodes joined: %v, phase %s (%s), joined %d, nodes %d", err, r.Phase, r.Reason, r.Joined, r.Nodes())
	}
	for n, v := range late.Active("det") {
		if v != "2" {
			t.Fatalf("joined node %s runs %q, want 2", n, v)
		}
		if r.Runs[n].Joined.IsZero() || r.Previous[n] != "1" {
			t.Fatalf("joined node %s: run %+v, previous %q", n, r.Runs[n], r.Previous[n])
		}
	}
	checkAllActive(t, e, "2")
	// A watching rollout ends by the operator: a rollback covers the
	// joined nodes too.
	if _, err := Command(ctx, c.store, spec.ID, CmdRollback); err != nil {
		t.Fatal(err)
	}
	if r, err = c.Run(ctx, spec.ID, nil); err != nil || r.Phase != PhaseRolledBack {
		t.Fatalf("rollback: %v, %+v", err, r)
	}
	// The phase says the rollback was written; the nodes apply it after.
	testwait.For(t, "the joined nodes back on version 1", func() bool {
		for _, v := range late.Active("det") {
			if v != "1" {
				return false
			}
		}
		return true
	}, time.Minute)
	for n, ms := range late.NodeGenerations() {
		if ms != 2 {
			t.Fatalf("joined node %s at desired generation %d, want 2 (the rollout, the rollback)", n, ms)
		}
	}
}

// TestRolloutReportsNodesOutside: without Continuous, nodes that join the
// target after start are left alone, and the record counts them.
func TestRolloutReportsNodesOutside(t *testing.T) {
	e := newEnv(t, 6, quickProfile)
	c := e.controller(t, "a")
	spec := testSpec("r-outside", "2")
	spec.Waves = []int{50, 100}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := c.Start(ctx, spec); err != nil {
		t.Fatal(err)
	}
	late := joinFleet(t, e, 2, quickProfile)
	r, err := c.Run(ctx, spec.ID, nil)
	if err != nil || r.Phase != PhaseCompleted {
		t.Fatalf("%v, %+v", err, r)
	}
	if r.Outside != 2 || r.Joined != 0 || r.Nodes() != 6 {
		t.Fatalf("outside %d, joined %d, nodes %d; want 2 outside, none joined, 6 nodes", r.Outside, r.Joined, r.Nodes())
	}
	for n, d := range late.Downloads("det") {
		if len(d) != 0 {
			t.Fatalf("node %s joined after start, downloaded %v", n, d)
		}
	}
}

// TestRolloutRetriesFailedNodes: a node that fails the version is given it
// again Retries times (a new desired generation each) before it counts as
// failed; the attempts are in the record.
func TestRolloutRetriesFailedNodes(t *testing.T) {
	prof := quickProfile
	prof.FailVerify = map[string]float64{"bad": 1}
	e := newEnv(t, 3, prof)
	spec := testSpec("r-retry", "bad")
	spec.Waves, spec.Retries = []int{100}, 2
	r, _ := runRollout(t, e, e.controller(t, "a"), spec)
	if r.Phase != PhaseRolledBack {
		t.Fatalf("phase %s (%s), want rolled_back once the retries are spent", r.Phase, r.Reason)
	}
	for n, d := range e.fleet.Downloads("det") {
		if fmt.Sprint(d) != "[bad bad bad 1]" && fmt.Sprint(d) != "[bad bad bad]" {
			t.Fatalf("node %s downloaded %v, want bad 3 times (1 attempt, 2 retries)", n, d)
		}
		if got := r.Attempts(n); got != 3 || r.BadNodes[n] != StateFailed {
			t.Fatalf("node %s: %d attempts, state %s; want 3, failed", n, got, r.BadNodes[n])
		}
	}
}

// TestRolloutRetryRevivesTimedOutNode: a node that timed out is retried;
// when it then applies the retry and reports the version Active, the
// rollout completes with it active, 2 attempts.
func TestRolloutRetryRevivesTimedOutNode(t *testing.T) {
	e := newEnv(t, 4, quickProfile)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pub := testLink(t, e.broker.URL(), "ghost-status")
	ghost := func(gen uint64, ms wire.ModelStatus) {
		t.Helper()
		st := wire.Status{Protocol: wire.Protocol, Node: "ghost", Time: time.Now().UTC().Format(time.RFC3339Nano),
			Desired: wire.AppliedGenerations{Node: gen, Groups: map[string]uint64{"cams": 0}},
			Models:  map[string]wire.ModelStatus{"det": ms}}
		b, err := st.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if err := pub.Publish(ctx, e.tp.Status("ghost"), true, b); err != nil {
			t.Fatal(err)
		}
	}
	ghost(0, wire.ModelStatus{Version: "1", State: "Active"})
	spec := testSpec("r-revive", "2")
	spec.Waves, spec.Retries = []int{100}, 1
	spec.Abort = Abort{MaxFailedPercent: 0, MinFinished: 1}
	spec.NodeTimeout, spec.WaveTimeout = 2*time.Second, 5*time.Minute
	c := e.controller(t, "a")
	if _, err := c.Start(ctx, spec); err != nil {
		t.Fatal(err)
	}
	revived := false
	r, err := c.Run(ctx, spec.ID, func(r *Record) {
		// The node comes back once the retry is written: it applies it
		// and finishes.
		if g := r.Runs["ghost"].RetryGeneration; g > 0 && !revived {
			revived = true
			ghost(g, wire.ModelStatus{Version: "2", State: "Active"})
		}
	})
	if err != nil || r.Phase != PhaseCompleted {
		t.Fatalf("%v, phase %s (%s), want completed with the retried node active", err, r.Phase, r.Reason)
	}
	if got := r.Attempts("ghost"); got != 2 || r.Counts[0].Active != 5 || len(r.BadNodes) != 0 {
		t.Fatalf("ghost attempts %d, counts %+v, bad %v; want 2 attempts, 5 active, none bad", got, r.Counts[0], r.BadNodes)
	}
}

// TestRolloutJoinersArePaced: nodes that join a watching rollout are
// written within MaxPerMinute like a wave's: on a frozen clock only the
// bucket's burst, then one second's worth more per second.
func TestRolloutJoinersArePaced(t *testing.T) {
	e := newEnv(t, 2, quickProfile)
	c, advance := frozenController(t, e)
	spec := testSpec("r-cont-paced", "2")
	spec.Waves, spec.MaxPerMinute, spec.Continuous = []int{100}, 60, true // 1 a second, a burst of 2
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := c.Start(ctx, spec); err != nil {
		t.Fatal(err)
	}
	step := func() *Record { t.Helper(); return mustStep(t, ctx, c, spec.ID) }
	testwait.For(t, "the rollout watching", func() bool {
		advance(time.Second)
		return step().Phase == PhaseWatching
	}, time.Minute)
	advance(time.Minute) // a full bucket: 2
	late := joinFleet(t, e, 5, quickProfile)
	joined := func() int {
		n := 0
		for _, g := range late.NodeGenerations() {
			if g > 0 {
				n++
			}
		}
		return n
	}
	for range 3 {
		step()
	}
	testwait.For(t, "the burst's 2 joined nodes applying their desired state", func() bool { return joined() == 2 }, time.Minute)
	if r := step(); r.Joined != 5 || joined() != 2 {
		t.Fatalf("frozen clock: %d joined, %d written; want 5 joined, the burst of 2 written", r.Joined, joined())
	}
	advance(time.Second)
	step()
	testwait.For(t, "one more joined node written after 1 s", func() bool { return joined() == 3 }, time.Minute)
}
