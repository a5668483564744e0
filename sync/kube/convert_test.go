package kube

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/kube/api/v1alpha1"
	"github.com/edgeai/edge-node/sync/rollout"
	"github.com/edgeai/edge-node/sync/wire"
)

func mvWith(spec v1alpha1.ModelVersionSpec) *v1alpha1.ModelVersion {
	return &v1alpha1.ModelVersion{ObjectMeta: metav1.ObjectMeta{Namespace: "fleet", Name: "cls", UID: types.UID("u-1")}, Spec: spec}
}

// trafficWeight picks the on-device strategy; the selector, waves, gates
// and criteria carry over.
func TestRolloutSpec(t *testing.T) {
	ten, two := int32(10), int32(2)
	spec := v1alpha1.ModelVersionSpec{Model: "ppocr_cls", Version: "2", TrafficWeight: 20, Waves: []int32{10, 100},
		NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"edge-type": "camera"},
			MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "arch", Operator: metav1.LabelSelectorOpIn, Values: []string{"arm64"}}}},
		Gates: &v1alpha1.Gates{MinRequests: 200, MaxErrorRate: "0.01", MaxP99Ratio: "1.5", MinDuration: &metav1.Duration{Duration: time.Minute}},
		Abort: &v1alpha1.Abort{MaxFailedPercent: &ten, MinFinished: &two,
			ByType: []v1alpha1.TypeCriterion{{Type: "TimedOut", MaxPercent: 20, MinFinished: 3}}},
		NodeTimeout: &metav1.Duration{Duration: 15 * time.Minute}, OnAbort: "Hold", Continuous: true, Retries: 3,
		Ramp: &v1alpha1.Ramp{BasePerMinute: 10, Factor: "1.5", EverySucceeded: 20}}
	mv := mvWith(spec)
	s, err := rolloutSpec(mv, rolloutID(mv))
	if err != nil {
		t.Fatal(err)
	}
	st := s.Strategy
	if st.Kind != wire.StrategyCanary || st.CanaryPercent != 20 || st.MinRequests != 200 || *st.Gates.MaxErrorRate != 0.01 ||
		*st.Gates.MaxP99Ratio != 1.5 || time.Duration(st.MinDuration) != time.Minute {
		t.Errorf("strategy %+v", st)
	}
	if s.Selector["edge-type"] != "camera" || len(s.Match) != 1 || s.Match[0].Operator != rollout.OpIn ||
		s.Abort.MaxFailedPercent != 10 || s.Abort.MinFinished != 2 || len(s.Abort.ByType) != 1 ||
		s.Abort.ByType[0].Type != rollout.FailTimedOut || s.OnAbort != rollout.OnAbortHold || s.NodeTimeout != 15*time.Minute ||
		len(s.Waves) != 2 || s.Waves[0] != 10 || !s.Continuous || s.Retries != 3 ||
		s.Ramp == nil || *s.Ramp != (rollout.Ramp{BasePerMinute: 10, Factor: 1.5, EverySucceeded: 20}) {
		t.Errorf("spec %+v", s)
	}
	for weight, kind := range map[int32]models.StrategyKind{0: wire.StrategyShadow, 1: wire.StrategyCanary, 99: wire.StrategyCanary, 100: wire.StrategyImmediate} {
		spec := spec
		spec.TrafficWeight = weight
		s, err := rolloutSpec(mvWith(spec), "r")
		if err != nil || s.Strategy.Kind != kind {
			t.Errorf("weight %d: %v %+v, want %s", weight, err, s.Strategy, kind)
		}
	}
	if id := rolloutID(mv); id != "fleet.cls-"+id[len(id)-8:] || wire.ValidName(id) != nil {
		t.Errorf("rollout id %q", id)
	}
	long := mvWith(spec)
	long.Namespace, long.Name = strings.Repeat("n", 63), strings.Repeat("m", 200)
	if id := rolloutID(long); wire.ValidName(id) != nil {
		t.Errorf("long names: rollout id %q: %v", id, wire.ValidName(id))
	}
}

// Specs the schema would refuse (a controller may also be handed one by an
// API server without the CRD's validation) are refused here, not turned
// into a rollout.
func TestRolloutSpecBadInput(t *testing.T) {
	good := v1alpha1.ModelVersionSpec{Model: "m", Version: "2", TrafficWeight: 20}
	for name, mut := range map[string]func(*v1alpha1.ModelVersionSpec){
		"weight 101": func(s *v1alpha1.ModelVersionSpec) { s.TrafficWeight = 101 },
		"weight -1":  func(s *v1alpha1.ModelVersionSpec) { s.TrafficWeight = -1 },
		"model":      func(s *v1alpha1.ModelVersionSpec) { s.Model = "a/b" },
		"version":    func(s *v1alpha1.ModelVersionSpec) { s.Version = "" },
		"waves":      func(s *v1alpha1.ModelVersionSpec) { s.Waves = []int32{50, 10} },
		"waves end":  func(s *v1alpha1.ModelVersionSpec) { s.Waves = []int32{50} },
		"error rate": func(s *v1alpha1.ModelVersionSpec) { s.Gates = &v1alpha1.Gates{MaxErrorRate: "lots"} },
		"p99 ratio":  func(s *v1alpha1.ModelVersionSpec) { s.Gates = &v1alpha1.Gates{MaxP99Ratio: "0.5"} },
		"failure type": func(s *v1alpha1.ModelVersionSpec) {
			s.Abort = &v1alpha1.Abort{ByType: []v1alpha1.TypeCriterion{{Type: "Sad"}}}
		},
		"on abort": func(s *v1alpha1.ModelVersionSpec) { s.OnAbort = "Explode" },
		"selector key": func(s *v1alpha1.ModelVersionSpec) {
			s.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"a b": "c"}}
		},
		"selector op":    func(s *v1alpha1.ModelVersionSpec) { s.NodeSelector = selectorOp("Gt", "1") },
		"success":        func(s *v1alpha1.ModelVersionSpec) { s.SuccessPercent = 101 },
		"negative timer": func(s *v1alpha1.ModelVersionSpec) { s.WaveTimeout = &metav1.Duration{Duration: -time.Second} },
		"ramp factor 1": func(s *v1alpha1.ModelVersionSpec) {
			s.Ramp = &v1alpha1.Ramp{BasePerMinute: 1, Factor: "1", EverySucceeded: 1}
		},
		"ramp factor text": func(s *v1alpha1.ModelVersionSpec) {
			s.Ramp = &v1alpha1.Ramp{BasePerMinute: 1, Factor: "two", EverySucceeded: 1}
		},
		"ramp base 0": func(s *v1alpha1.ModelVersionSpec) { s.Ramp = &v1alpha1.Ramp{Factor: "2", EverySucceeded: 1} },
	} {
		s := good
		mut(&s)
		if _, err := rolloutSpec(mvWith(s), "r"); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := rolloutSpec(mvWith(good), "r"); err != nil {
		t.Errorf("good spec refused: %v", err)
	}
}

func selectorOp(op, v string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "k", Operator: metav1.LabelSelectorOperator(op), Values: []string{v}}}}
}

// Any spec JSON either converts to a spec the engine accepts or is
// refused; nothing panics.
func FuzzRolloutSpec(f *testing.F) {
	f.Add([]byte(`{"model":"m","version":"2","trafficWeight":20,"waves":[10,100],"gates":{"maxErrorRate":"0.01"}}`))
	f.Add([]byte(`{"model":"m","version":"2","trafficWeight":0,"nodeSelector":{"matchExpressions":[{"key":"a","operator":"Exists"}]}}`))
	f.Add([]byte(`{"model":"m","version":"2","abort":{"maxFailedPercent":5,"byType":[{"type":"Failed","maxPercent":1}]}}`))
	f.Add([]byte(`{"model":"m","version":"2","continuous":true,"retries":11}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var spec v1alpha1.ModelVersionSpec
		if json.Unmarshal(b, &spec) != nil {
			return
		}
		s, err := rolloutSpec(mvWith(spec), "r")
		if err == nil {
			if verr := s.Validate(); verr != nil {
				t.Fatalf("converted spec invalid: %v", verr)
			}
		}
	})
}

// A status.rollout that is not a record (anyone with status write access
// can put one there) is an error, not a panic or an empty rollout.
func TestDecodeRecordBadInput(t *testing.T) {
	for _, raw := range []string{`[]`, `"x"`, `{"spec":7}`, `{"phase":{}}`, `{"members":"no"}`, `{`} {
		mv := mvWith(v1alpha1.ModelVersionSpec{})
		mv.Status.Rollout = &runtime.RawExtension{Raw: []byte(raw)}
		if r, err := decodeRecord(mv); err == nil {
			t.Errorf("%s: decoded %+v", raw, r)
		}
	}
	if r, err := decodeRecord(mvWith(v1alpha1.ModelVersionSpec{})); r != nil || err != nil {
		t.Errorf("no record: %v %v", r, err)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte(`{"spec":{"id":"r","model":"m","version":"2","waves":[100]},"phase":"running","wave":0,"members":[["a"]],"counts":[{"total":1}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		mv := mvWith(v1alpha1.ModelVersionSpec{})
		mv.Status.Rollout = &runtime.RawExtension{Raw: b}
		r, err := decodeRecord(mv)
		if err != nil || r == nil {
			return
		}
		summarize(mv, r, time.Now()) // whatever the record says, the summary is written without panicking
	})
}

// The summary a person reads follows the record: phases, the Degraded
// reason from the nodes' reasons, conditions.
func TestSummarize(t *testing.T) {
	rec := func(p rollout.Phase, c rollout.Counts, reasons map[string]string) *rollout.Record {
		return &rollout.Record{Spec: rollout.Spec{Model: "m", Version: "2", Waves: []int{100}}, Phase: p, Wave: 0,
			Members: [][]string{make([]string, c.Total)}, Counts: []rollout.Counts{c}, BadReasons: reasons,
			WaveStarted: []time.Time{time.Unix(1, 0)}}
	}
	for _, c := range []struct {
		r      *rollout.Record
		phase  v1alpha1.Phase
		reason string
		ready  bool
	}{
		{rec(rollout.PhaseRunning, rollout.Counts{Total: 3, Pending: 3}, nil), v1alpha1.PhaseProgressing, "", false},
		{rec(rollout.PhaseCompleted, rollout.Counts{Total: 3, Active: 3}, nil), v1alpha1.PhaseActive, "", true},
		{rec(rollout.PhaseRunning, rollout.Counts{Total: 3, Active: 1, Failed: 2},
			map[string]string{"a": "ChecksumMismatch", "b": "ChecksumMismatch"}), v1alpha1.PhaseDegraded, "ChecksumMismatch", false},
		{rec(rollout.PhaseCompleted, rollout.Counts{Total: 3, Active: 2, TimedOut: 1}, map[string]string{"c": "NodeTimeout"}),
			v1alpha1.PhaseDegraded, "NodeTimeout", false},
		{rec(rollout.PhaseCompleted, rollout.Counts{Total: 2, Active: 1, RolledBack: 1}, map[string]string{"c": "rolled_back"}),
			v1alpha1.PhaseDegraded, "RolledBack", false},
		{rec(rollout.PhaseRolledBack, rollout.Counts{Total: 3, Failed: 1}, map[string]string{"a": "LoadError"}), v1alpha1.PhaseRolledBack, "Aborted", false},
		{rec(rollout.PhasePaused, rollout.Counts{Total: 3, Pending: 3}, nil), v1alpha1.PhasePaused, "", false},
		// A continuous rollout whose waves finished is Active and says it
		// keeps watching.
		{rec(rollout.PhaseWatching, rollout.Counts{Total: 3, Active: 3}, nil), v1alpha1.PhaseActive, "Watching", true},
	} {
		mv := mvWith(v1alpha1.ModelVersionSpec{})
		summarize(mv, c.r, time.Now())
		ready := false
		for _, cond := range mv.Status.Conditions {
			if cond.Type == v1alpha1.ConditionReady {
				ready = cond.Status == metav1.ConditionTrue
			}
		}
		if mv.Status.Phase != c.phase || mv.Status.Reason != c.reason || ready != c.ready {
			t.Errorf("%s %+v: phase %s reason %q ready %v, want %s %q %v", c.r.Phase, c.r.Counts[0], mv.Status.Phase, mv.Status.Reason, ready,
				c.phase, c.reason, c.ready)
		}
	}
}

// The status counts the nodes that joined, those outside the rollout and
// the retried ones.
func TestSummarizeJoinersAndRetries(t *testing.T) {
	r := &rollout.Record{Spec: rollout.Spec{Model: "m", Version: "2", Waves: []int{100}, Continuous: true, Retries: 2},
		Phase: rollout.PhaseWatching, Members: [][]string{{"a", "b", "c"}}, Counts: []rollout.Counts{{Total: 3, Active: 3}},
		WaveStarted: []time.Time{time.Unix(1, 0)}, Joined: 2, Outside: 1,
		Runs: map[string]rollout.NodeRun{"b": {Joined: time.Unix(2, 0)}, "c": {Joined: time.Unix(2, 0), Retries: 1}}}
	mv := mvWith(v1alpha1.ModelVersionSpec{})
	summarize(mv, r, time.Now())
	if st := mv.Status; st.Joined != 2 || st.Outside != 1 || st.Retried != 1 {
		t.Fatalf("joined %d, outside %d, retried %d; want 2, 1, 1", st.Joined, st.Outside, st.Retried)
	}
	for _, cond := range mv.Status.Conditions {
		if cond.Type == v1alpha1.ConditionProgressing && (cond.Status != metav1.ConditionTrue || cond.Reason != "Watching") {
			t.Errorf("watching: Progressing %s %s, want True Watching", cond.Status, cond.Reason)
		}
	}
}

// spec.paused and spec.rollback become engine commands, a watching
// (continuous) rollout included.
func TestCommandFromSpec(t *testing.T) {
	for _, c := range []struct {
		spec  v1alpha1.ModelVersionSpec
		phase rollout.Phase
		want  string
	}{
		{v1alpha1.ModelVersionSpec{Paused: true}, rollout.PhaseRunning, rollout.CmdPause},
		{v1alpha1.ModelVersionSpec{Paused: true}, rollout.PhaseWatching, rollout.CmdPause},
		{v1alpha1.ModelVersionSpec{Paused: true}, rollout.PhasePaused, ""},
		{v1alpha1.ModelVersionSpec{}, rollout.PhasePaused, rollout.CmdResume},
		{v1alpha1.ModelVersionSpec{Rollback: true}, rollout.PhaseWatching, rollout.CmdRollback},
		{v1alpha1.ModelVersionSpec{Rollback: true}, rollout.PhaseRolledBack, ""},
	} {
		if got := command(c.spec, c.phase); got != c.want {
			t.Errorf("paused %v rollback %v in %s: %q, want %q", c.spec.Paused, c.spec.Rollback, c.phase, got, c.want)
		}
	}
}

// Deleting rolls back only a rollout that has not finished, and only under
// deletionPolicy Rollback (the default: ""); a rollback under way is
// finished under either policy.
func TestOnDelete(t *testing.T) {
	rb, keep := v1alpha1.DeletionRollback, v1alpha1.DeletionKeep
	for _, tc := range []struct {
		phase        rollout.Phase
		rollback, kp string // under Rollback (and ""), under Keep
	}{
		{rollout.PhaseRunning, rb, keep},
		{rollout.PhasePaused, rb, keep},
		{rollout.PhaseRollingBack, rb, rb},
		{rollout.PhaseCompleted, keep, keep},
		{rollout.PhaseWatching, keep, keep},
		{rollout.PhaseHeld, keep, keep},
		{rollout.PhaseRolledBack, keep, keep},
	} {
		for policy, want := range map[string]string{rb: tc.rollback, "": tc.rollback, keep: tc.kp} {
			if got := onDelete(policy, tc.phase); got != want {
				t.Errorf("onDelete(%q, %s) = %s, want %s", policy, tc.phase, got, want)
			}
		}
	}
}
