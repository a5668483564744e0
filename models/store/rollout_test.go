package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/models/store"
	"github.com/edgeai/edge-node/models/testsuite"
)

// A rollout's record and its decisions go through the catalog with their
// outbox reports; a second running rollout is refused; Stage brings a
// candidate up beside Active; a restart aborts the rollout and retires the
// candidate.
func TestRolloutRecords(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s := newTestStore(t, store.DefaultOptions(root))
	dir := t.TempDir()
	for _, v := range []string{"1", "2"} {
		if _, err := s.Import(ctx, models.ImportRequest{Model: "m", Version: v, ModelFile: testsuite.WriteFile(t, dir, "m"+v+".onnx", 1024)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Activate(ctx, "m", "1", &testsuite.Loader{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Rollout(ctx, "m"); !errors.Is(err, models.ErrNotFound) {
		t.Fatalf("rollout before any: %v", err)
	}
	st, _ := models.DecodeStrategy([]byte(`{"kind":"canary","canary_percent":20}`))
	r, err := s.StartRollout(ctx, models.Rollout{Model: "m", Version: "2", Baseline: "1", Strategy: st})
	if err != nil {
		t.Fatal(err)
	}
	if r.Phase != models.RolloutRunning || len(r.Decisions) != 1 || r.Decisions[0].Event != models.EventStarted {
		t.Fatalf("started rollout: %+v", r)
	}
	if _, err := s.StartRollout(ctx, models.Rollout{Model: "m", Version: "2", Strategy: st}); !errors.Is(err, models.ErrInUse) {
		t.Errorf("second running rollout: %v", err)
	}
	if _, err := s.Stage(ctx, "m", "2", models.Active, &testsuite.Loader{}); !errors.Is(err, models.ErrInvalidArgument) {
		t.Errorf("stage as Active: %v", err)
	}
	if v, err := s.Stage(ctx, "m", "2", models.Canary, &testsuite.Loader{}); err != nil || v.State != models.Canary {
		t.Fatalf("stage: %v %v", v.State, err)
	}
	if mi, _ := s.Model(ctx, "m"); mi.Active != "1" || mi.Canary != "2" {
		t.Fatalf("after stage: active %q canary %q", mi.Active, mi.Canary)
	}
	d := models.Decision{Event: models.EventRolledBack, Reason: "error rate", Figures: map[string]float64{"error_rate": 0.2}}
	move := &models.Move{Version: "2", To: models.Failed, Opts: models.TransitionOptions{Reason: models.ReasonHealthRegression, Detail: "error rate"}}
	if r, err = s.Decide(ctx, "m", models.RolloutRolledBack, d, move); err != nil {
		t.Fatal(err)
	}
	if r.Phase != models.RolloutRolledBack || len(r.Decisions) != 2 {
		t.Fatalf("after decide: %+v", r)
	}
	if v, _ := s.Version(ctx, "m", "2"); v.State != models.Failed || v.Reason != models.ReasonHealthRegression {
		t.Errorf("candidate after rollback: %s(%s)", v.State, v.Reason)
	}
	reps, err := s.Reports(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	last := reps[len(reps)-1]
	if last.Event != models.EventRolledBack || last.Phase != models.RolloutRolledBack || last.Figures["error_rate"] != 0.2 || last.To != models.Failed {
		t.Errorf("last outbox report: %+v", last)
	}
	// An illegal move fails the whole decision: nothing recorded.
	bad := &models.Move{Version: "2", To: models.Active}
	if _, err := s.Decide(ctx, "m", models.RolloutPromoted, models.Decision{Event: models.EventPromoted}, bad); !errors.Is(err, models.ErrInvalidTransition) {
		t.Errorf("illegal move: %v", err)
	}
	if r, _ := s.Rollout(ctx, "m"); r.Phase != models.RolloutRolledBack {
		t.Errorf("phase after a refused decision: %s", r.Phase)
	}

	// A new rollout of a Retired candidate, interrupted by a restart.
	if _, err := s.Retry(ctx, "m", "2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartRollout(ctx, models.Rollout{Model: "m", Version: "2", Baseline: "1", Strategy: st}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stage(ctx, "m", "2", models.Shadow, &testsuite.Loader{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = newTestStore(t, store.DefaultOptions(root))
	if _, err := s.Boot(ctx); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Rollout(ctx, "m"); r.Phase != models.RolloutAborted {
		t.Errorf("rollout after restart: %s", r.Phase)
	}
	if v, _ := s.Version(ctx, "m", "2"); v.State != models.Retired {
		t.Errorf("candidate after restart: %s", v.State)
	}
	if mi, _ := s.Model(ctx, "m"); mi.Active != "1" {
		t.Errorf("active after restart: %q", mi.Active)
	}
}
