package main

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/sync/brokertest"
	"github.com/edgeai/edge-node/sync/fleetsim"
	"github.com/edgeai/edge-node/sync/rollout"
	"github.com/edgeai/edge-node/sync/wire"
)

func TestRolloutCommands(t *testing.T) {
	m, f := startCams(t, 12, fleetsim.Profile{Download: 50 * time.Millisecond, Gate: 50 * time.Millisecond})
	state := filepath.Join(t.TempDir(), "r.db")
	g := []string{"--broker", m.URL(), "--retained-wait", "300ms", "rollout", "--state", state}
	// --force: the versions are not published (the simulated nodes do not download).
	out := run(t, append(g, "start", "--id", "r1", "--model", "det", "--version", "2", "--selector", "arch=arm64",
		"--waves", "50%,100%", "--no-progress", "--force")...)
	if !strings.Contains(out, "6 nodes in 2 waves (3, 3 nodes)") || !strings.Contains(out, "completed") {
		t.Fatalf("start: %s", out)
	}
	for id, v := range f.Active("det") {
		arm := strings.HasSuffix(id, "1") || strings.HasSuffix(id, "3") || strings.HasSuffix(id, "5") ||
			strings.HasSuffix(id, "7") || strings.HasSuffix(id, "9") // DefaultLabels: odd index = arm64
		if want := map[bool]string{true: "2", false: "1"}[arm]; v != want {
			t.Fatalf("node %s runs %s, want %s", id, v, want)
		}
	}
	if out := run(t, append(g, "status")...); !strings.Contains(out, "r1") || !strings.Contains(out, "completed") {
		t.Fatalf("status: %s", out)
	}
	// No controller holds r1: rollback is carried out by the command itself.
	if out := run(t, append(g, "rollback", "r1")...); !strings.Contains(out, "rolled_back") {
		t.Fatalf("rollback: %s", out)
	}
	// A second controller on a held rollout is refused with a clear error.
	run(t, append(g, "start", "--id", "r2", "--model", "det", "--version", "3", "--target", "cams", "--detach", "--force")...)
	if err := rollout.NewStore(state).AcquireLease("r2", "other-controller", time.Minute, time.Now()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := newRoot()
	cmd.SetArgs(append(g, "run", "r2", "--no-progress"))
	err := cmd.ExecuteContext(ctx)
	if !errors.Is(err, rollout.ErrLeaseHeld) || !strings.Contains(err.Error(), "other-controller") || !strings.Contains(err.Error(), "--take-over") {
		t.Fatalf("run on a held rollout: %v", err)
	}
	// The operator knows that controller is dead: an explicit take-over,
	// naming it, and the rollout is driven to its end.
	out = run(t, append(g, "run", "r2", "--no-progress", "--take-over")...)
	if !strings.Contains(out, "taken over from controller other-controller (its lease ran until") || !strings.Contains(out, "completed") {
		t.Fatalf("run --take-over: %s", out)
	}
	if l, held, err := rollout.NewStore(state).LeaseOf("r2"); err != nil || held && l.Owner == "other-controller" {
		t.Errorf("lease after the take-over: %+v %v %v", l, held, err)
	}
	if _, err := runErr(t, append(g, "run", "r-none", "--take-over")...); !errors.Is(err, rollout.ErrNotFound) {
		t.Errorf("take-over of an unknown rollout: %v", err)
	}
}

// TestRolloutStartFailsWhenAborted: a rollout whose every node fails ends
// rolled back and `rollout start` exits with an error saying so.
func TestRolloutStartFailsWhenAborted(t *testing.T) {
	m, _ := startCams(t, 4, fleetsim.Profile{Download: 50 * time.Millisecond, Gate: 50 * time.Millisecond, FailGate: map[string]float64{"bad": 1}})
	state := filepath.Join(t.TempDir(), "r.db")
	out, err := runErr(t, "--broker", m.URL(), "--retained-wait", "300ms", "rollout", "--state", state,
		"start", "--id", "r-bad", "--model", "det", "--version", "bad", "--target", "cams", "--no-progress", "--force")
	if err == nil || !strings.Contains(err.Error(), "rolled_back") {
		t.Fatalf("start of a failing version: err %v\n%s", err, out)
	}
}

// TestRolloutStartContinuousAndRetries: --continuous and --retries reach
// the record (-o json), status says the rollout takes in nodes that join,
// and --retries is bounded.
func TestRolloutStartContinuousAndRetries(t *testing.T) {
	m, _ := startCams(t, 2, fleetsim.Profile{})
	state := filepath.Join(t.TempDir(), "r.db")
	g := []string{"--broker", m.URL(), "--retained-wait", "300ms", "rollout", "--state", state}
	if _, err := runErr(t, append(g, "start", "--id", "r-x", "--model", "det", "--version", "2", "--target", "cams",
		"--retries", "11", "--detach", "--force")...); err == nil || !strings.Contains(err.Error(), "retries 11 out of range") {
		t.Fatalf("--retries 11: %v", err)
	}
	if _, err := runErr(t, append(g, "start", "--id", "r-x", "--model", "det", "--version", "2", "--target", "cams",
		"--ramp", "10:1:5", "--detach", "--force")...); err == nil || !strings.Contains(err.Error(), "ramp factor 1 out of range") {
		t.Fatalf("--ramp 10:1:5: %v", err)
	}
	run(t, append(g, "start", "--id", "r-c", "--model", "det", "--version", "2", "--target", "cams",
		"--continuous", "--retries", "3", "--ramp", "10:2:5", "--detach", "--force")...)
	var r rollout.Record
	if err := json.Unmarshal([]byte(run(t, append(g, "status", "r-c", "-o", "json")...)), &r); err != nil {
		t.Fatal(err)
	}
	if !r.Spec.Continuous || r.Spec.Retries != 3 || r.Spec.Ramp == nil || *r.Spec.Ramp != (rollout.Ramp{BasePerMinute: 10, Factor: 2, EverySucceeded: 5}) {
		t.Fatalf("spec %+v, want continuous with 3 retries and the ramp 10:2:5", r.Spec)
	}
	if out := run(t, append(g, "status", "r-c")...); !strings.Contains(out, "joined after start: 0 nodes") ||
		!strings.Contains(out, "retried up to 3 times") || !strings.Contains(out, "continuous: nodes that join the target get it") ||
		!strings.Contains(out, "10 nodes written a minute, ×2 for every 5 active") {
		t.Fatalf("status: %s", out)
	}
}

// TestRolloutListCountsTimedOut: the list's BAD column counts every bad
// node, timed-out ones included (it summed failed and rolled back only).
func TestRolloutListCountsTimedOut(t *testing.T) {
	state := filepath.Join(t.TempDir(), "r.db")
	r := &rollout.Record{Spec: rollout.Spec{ID: "r-t", Model: "det", Version: "2"}, Phase: rollout.PhaseRolledBack,
		Members: [][]string{{"a", "b"}, {"c", "d"}},
		Counts:  []rollout.Counts{{Total: 2, Active: 1, TimedOut: 1}, {Total: 2, Failed: 1, TimedOut: 1}}}
	if err := rollout.NewStore(state).Create(r); err != nil {
		t.Fatal(err)
	}
	out := run(t, "rollout", "--state", state, "status")
	var row []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == "r-t" {
			row = f
		}
	}
	// ID MODEL VERSION PHASE WAVE NODES ACTIVE BAD ...
	if len(row) < 8 || row[6] != "1" || row[7] != "3" {
		t.Fatalf("list row %q, want ACTIVE 1 and BAD 3\n%s", row, out)
	}
}

// startCams starts mosquitto and n simulated nodes in group cams running
// det 1 with prof, closed when the test ends.
func startCams(t *testing.T, n int, prof fleetsim.Profile) (*brokertest.Mosquitto, *fleetsim.Fleet) {
	t.Helper()
	m := brokertest.StartMosquitto(t, brokertest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f, err := fleetsim.Start(ctx, fleetsim.Config{BrokerURL: m.URL(), Topics: wire.Topics{Root: wire.DefaultRoot}, Nodes: n,
		Groups: []string{"cams"}, Initial: map[string]string{"det": "1"}, Profile: prof}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return m, f
}
