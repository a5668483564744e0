package rollout

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/sync/wire"
)

func TestParseWaves(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []int
		err  string
	}{
		{"1%,10%,50%,100%", []int{1, 10, 50, 100}, ""},
		{"100", []int{100}, ""},
		{" 5 , 100% ", []int{5, 100}, ""},
		{"10,5,100", nil, "increase"},
		{"10,50", nil, "last wave"},
		{"0,100", nil, "increase"},
		{"x,100", nil, "not a percentage"},
		{"", nil, "not a percentage"},
		{"50,150", nil, "increase"},
	} {
		got, err := ParseWaves(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseWaves(%q) error %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("ParseWaves(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}

func TestParseSelectorAndSelects(t *testing.T) {
	sel, err := ParseSelector("arch=arm64, site=site-1")
	if err != nil || !reflect.DeepEqual(sel, map[string]string{"arch": "arm64", "site": "site-1"}) {
		t.Fatalf("ParseSelector = %v, %v", sel, err)
	}
	for _, bad := range []string{"arch", "a/b=c", "arch=x y", "=v"} {
		if _, err := ParseSelector(bad); err == nil {
			t.Errorf("ParseSelector(%q) accepted", bad)
		}
	}
	st := &wire.Status{Labels: map[string]string{"arch": "arm64", "site": "site-1", "accelerator": "cuda"},
		Desired: wire.AppliedGenerations{Groups: map[string]uint64{"cams": 0}}}
	for _, c := range []struct {
		group string
		sel   map[string]string
		want  bool
	}{
		{"", nil, true},
		{"cams", nil, true},
		{"other", nil, false},
		{"", sel, true},
		{"cams", map[string]string{"arch": "amd64"}, false},
		{"", map[string]string{"gpu": "x"}, false},
	} {
		if got := Selects(st, c.group, c.sel); got != c.want {
			t.Errorf("Selects(%q, %v) = %v, want %v", c.group, c.sel, got, c.want)
		}
	}
	if Selects(nil, "", nil) {
		t.Error("a node without status is selected")
	}
}

func TestAssignWaves(t *testing.T) {
	var nodes []string
	for i := 0; i < 1000; i++ {
		nodes = append(nodes, fmt.Sprintf("n-%04d", i))
	}
	w := AssignWaves("r1", nodes, []int{1, 10, 50, 100})
	sizes := []int{len(w[0]), len(w[1]), len(w[2]), len(w[3])}
	if !reflect.DeepEqual(sizes, []int{10, 90, 400, 500}) {
		t.Fatalf("wave sizes %v", sizes)
	}
	seen := map[string]bool{}
	for _, m := range w {
		for _, n := range m {
			if seen[n] {
				t.Fatalf("%s in two waves", n)
			}
			seen[n] = true
		}
	}
	if len(seen) != 1000 {
		t.Fatalf("%d nodes assigned", len(seen))
	}
	// Deterministic and independent of input order.
	rev := append([]string(nil), nodes...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	if !reflect.DeepEqual(AssignWaves("r1", rev, []int{1, 10, 50, 100}), w) {
		t.Fatal("assignment depends on input order")
	}
	// Another rollout id gives another first wave (not always the same canaries).
	if reflect.DeepEqual(AssignWaves("r2", nodes, []int{1, 10, 50, 100})[0], w[0]) {
		t.Fatal("first wave independent of rollout id")
	}
	// Small fleets: ceil keeps the first wave non-empty.
	small := AssignWaves("r1", []string{"a", "b", "c"}, []int{1, 10, 50, 100})
	if len(small[0]) != 1 || len(small[0])+len(small[1])+len(small[2])+len(small[3]) != 3 {
		t.Fatalf("small fleet waves %v", small)
	}
}

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		ms   *wire.ModelStatus
		want NodeState
	}{
		{nil, StatePending},
		{&wire.ModelStatus{Version: "1", State: "Active"}, StatePending}, // the old version
		{&wire.ModelStatus{Version: "2", State: "Pending"}, StatePending},
		{&wire.ModelStatus{Version: "2", State: "Downloading"}, StateDownloading},
		{&wire.ModelStatus{Version: "2", State: "Warming"}, StateDownloading},
		{&wire.ModelStatus{Version: "2", State: "Canary"}, StateCanary},
		{&wire.ModelStatus{Version: "2", State: "Shadow"}, StateCanary},
		{&wire.ModelStatus{Version: "2", State: "Active"}, StateActive},
		{&wire.ModelStatus{Version: "2", State: "Failed", Reason: "HealthRegression"}, StateRolledBack},
		{&wire.ModelStatus{Version: "2", State: "Failed", Reason: "ChecksumMismatch"}, StateFailed},
	} {
		if got := Classify(c.ms, "2"); got != c.want {
			t.Errorf("Classify(%+v) = %s, want %s", c.ms, got, c.want)
		}
	}
}

func TestDecide(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	spec := Spec{Abort: Abort{MaxFailedPercent: 20, MinFinished: 5, MaxP99Ratio: 1.5}, WaveTimeout: time.Minute}
	rec := func(wave int, written int, counts ...Counts) *Record {
		r := &Record{Spec: spec, Phase: PhaseRunning, Wave: wave, WavesWritten: written, BaselineP99Ms: 10,
			Members: make([][]string, 3), Counts: counts}
		for range r.Members {
			r.WaveStarted = append(r.WaveStarted, t0)
		}
		return r
	}
	done := func(total, active, failed, rb int) Counts {
		return Counts{Total: total, Active: active, Failed: failed, RolledBack: rb}
	}
	cases := []struct {
		name string
		r    *Record
		now  time.Time
		want ActionKind
		why  string
	}{
		{"wave running", rec(0, 1, Counts{Total: 10, Active: 3, Downloading: 7}, Counts{}, Counts{}), t0, ActNone, ""},
		{"wave done: advance", rec(0, 1, done(10, 9, 0, 1), Counts{}, Counts{}), t0, ActAdvance, "wave 1 finished"},
		{"last wave done: complete", rec(2, 3, done(10, 10, 0, 0), done(10, 10, 0, 0), done(10, 10, 0, 0)), t0, ActComplete, ""},
		{"not written yet: wait", rec(1, 1, done(10, 10, 0, 0), done(10, 10, 0, 0), Counts{}), t0, ActNone, ""},
		{"failure rate over bound", rec(0, 1, Counts{Total: 10, Active: 3, RolledBack: 2, Canary: 5}, Counts{}, Counts{}), t0, ActAbort, "2 of 5"},
		{"below the minimum count", rec(0, 1, Counts{Total: 10, RolledBack: 2, Active: 2, Canary: 6}, Counts{}, Counts{}), t0, ActNone, ""},
		{"at the bound: no abort", rec(0, 1, Counts{Total: 10, Active: 8, Failed: 2}, Counts{}, Counts{}), t0, ActAdvance, ""},
		{"per wave", rec(1, 2, done(10, 9, 1, 0), Counts{Total: 90, Active: 10, Failed: 5, Downloading: 75}, Counts{}), t0, ActAbort, "wave 2: 5 of 15"},
		{"summed over waves", rec(1, 2, done(10, 8, 2, 0), Counts{Total: 90, Active: 2, Failed: 1, Downloading: 87}, Counts{}), t0, ActAbort, "3 of 13"},
		{"p99 ratio", rec(0, 1, Counts{Total: 10, Active: 6, Canary: 4, P99Ms: 16}, Counts{}, Counts{}), t0, ActAbort, "fleet p99"},
		{"p99 within bound", rec(0, 1, Counts{Total: 10, Active: 6, Canary: 4, P99Ms: 14}, Counts{}, Counts{}), t0, ActNone, ""},
		{"wave timeout", rec(0, 1, Counts{Total: 10, Active: 9, Downloading: 1}, Counts{}, Counts{}), t0.Add(2 * time.Minute), ActAbort, "timed out"},
		{"small wave all failed", rec(0, 1, done(1, 0, 1, 0), Counts{}, Counts{}), t0, ActAbort, "wave 1: 1 of 1"},
		{"small fleet all failed: never complete", rec(2, 3, done(1, 0, 1, 0), done(1, 0, 0, 1), done(2, 0, 2, 0)), t0, ActAbort, "failed"},
		{"small wave, one of four failed", rec(0, 1, done(4, 3, 1, 0), Counts{}, Counts{}), t0, ActAbort, "wave 1: 1 of 4"},
		{"small wave still running", rec(0, 1, Counts{Total: 4, Active: 2, Failed: 1, Canary: 1}, Counts{}, Counts{}), t0, ActNone, ""},
		{"timed out counts as bad", rec(0, 1, Counts{Total: 10, Active: 7, TimedOut: 3}, Counts{}, Counts{}), t0, ActAbort, "wave 1: 3 of 10"},
		{"timed out within the bound", rec(0, 1, Counts{Total: 10, Active: 9, TimedOut: 1}, Counts{}, Counts{}), t0, ActAdvance, "1 timed out"},
		// Per failure type (AWS IoT Jobs' abortConfig criteria): timed-out
		// nodes alone over their own, tighter bound abort, though all bad
		// nodes together stay within 20%.
		{"per type: timed out over its bound", withSpec(rec(0, 1, Counts{Total: 20, Active: 18, TimedOut: 2}, Counts{}, Counts{}),
			func(s *Spec) { s.Abort.ByType = []TypeCriterion{{Type: FailTimedOut, MaxPercent: 5, MinFinished: 10}} }), t0, ActAbort, "2 of 20 finished nodes timed out (10.0% > 5.0%"},
		{"per type: below its minimum count", withSpec(rec(0, 1, Counts{Total: 20, Active: 4, TimedOut: 1, Canary: 15}, Counts{}, Counts{}),
			func(s *Spec) { s.Abort.ByType = []TypeCriterion{{Type: FailTimedOut, MaxPercent: 5, MinFinished: 10}} }), t0, ActNone, ""},
		{"per type: another type does not count", withSpec(rec(0, 1, Counts{Total: 20, Active: 18, Failed: 2}, Counts{}, Counts{}),
			func(s *Spec) { s.Abort.ByType = []TypeCriterion{{Type: FailTimedOut, MaxPercent: 5, MinFinished: 10}} }), t0, ActAdvance, ""},
		{"per type: rolled back, summed over waves", withSpec(rec(1, 2, done(10, 9, 0, 1), Counts{Total: 10, Active: 4, RolledBack: 1, Canary: 5}, Counts{}),
			func(s *Spec) {
				s.Abort.ByType = []TypeCriterion{{Type: FailRolledBack, MaxPercent: 12, MinFinished: 15}}
			}), t0, ActAbort, "2 of 15 finished nodes rolled back (13.3% > 12.0%"},
		// Success threshold (hawkBit's): the next wave starts as soon as
		// that share of the wave is Active, without waiting for stragglers;
		// a wave that finished below it stops the rollout.
		{"success threshold reached: advance early", withSpec(rec(0, 1, Counts{Total: 10, Active: 9, Downloading: 1}, Counts{}, Counts{}),
			func(s *Spec) { s.SuccessPercent = 90 }), t0, ActAdvance, "9 of 10 nodes active (90.0% ≥ 90.0%)"},
		{"success threshold not reached yet: wait", withSpec(rec(0, 1, Counts{Total: 10, Active: 8, Downloading: 2}, Counts{}, Counts{}),
			func(s *Spec) { s.SuccessPercent = 90 }), t0, ActNone, ""},
		{"wave finished below the success threshold", withSpec(rec(0, 1, done(10, 8, 2, 0), Counts{}, Counts{}),
			func(s *Spec) { s.SuccessPercent = 90; s.Abort.MaxFailedPercent = 50 }), t0, ActAbort, "8 of 10 nodes active (80.0% < 90.0%"},
		{"last wave: complete only when every node finished", withSpec(rec(2, 3, done(10, 10, 0, 0), done(10, 10, 0, 0), Counts{Total: 10, Active: 9, Canary: 1}),
			func(s *Spec) { s.SuccessPercent = 90 }), t0, ActNone, ""},
		{"last wave done, an earlier wave's straggler not: wait", withSpec(rec(2, 3, done(10, 10, 0, 0), Counts{Total: 10, Active: 9, Downloading: 1}, done(10, 10, 0, 0)),
			func(s *Spec) { s.SuccessPercent = 90 }), t0, ActNone, ""},
		// A continuous rollout whose waves all finished keeps watching:
		// the criteria still judge the nodes that joined.
		{"watching: the criteria still judge joiners", func() *Record {
			r := rec(2, 3, done(10, 10, 0, 0), done(10, 10, 0, 0), done(12, 9, 3, 0))
			r.Phase, r.Spec.Continuous = PhaseWatching, true
			return r
		}(), t0, ActAbort, "wave 3: 3 of 12"},
		{"watching, joiners finished: nothing more", func() *Record {
			r := rec(2, 3, done(10, 10, 0, 0), done(10, 10, 0, 0), done(12, 12, 0, 0))
			r.Phase, r.Spec.Continuous = PhaseWatching, true
			return r
		}(), t0, ActNone, ""},
		// The wave timeout of a wave a node joined (or was retried in)
		// runs from then: a late node does not time the wave out at once.
		{"joined late: the wave timeout runs from the join", func() *Record {
			r := rec(0, 1, Counts{Total: 10, Active: 9, Downloading: 1}, Counts{}, Counts{})
			r.Members[0] = []string{"late"}
			r.Runs = map[string]NodeRun{"late": {Joined: t0.Add(2 * time.Minute)}}
			return r
		}(), t0.Add(2*time.Minute + 30*time.Second), ActNone, ""},
		{"retried: the wave timeout runs from the retry", func() *Record {
			r := rec(0, 1, Counts{Total: 10, Active: 9, Downloading: 1}, Counts{}, Counts{})
			r.Members[0] = []string{"again"}
			r.Runs = map[string]NodeRun{"again": {Retries: 1, RetriedAt: t0.Add(2 * time.Minute)}}
			return r
		}(), t0.Add(3*time.Minute + time.Second), ActAbort, "timed out"},
		{"paused: nothing", func() *Record {
			r := rec(0, 1, done(10, 10, 0, 0), Counts{}, Counts{})
			r.Phase = PhasePaused
			return r
		}(), t0, ActNone, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := Decide(c.r, c.now)
			if a.Kind != c.want || !strings.Contains(a.Reason, c.why) {
				t.Fatalf("Decide = %+v, want %s (%q)", a, c.want, c.why)
			}
		})
	}
}

// withSpec changes a record's spec (its criteria) for one case.
func withSpec(r *Record, f func(*Spec)) *Record {
	f(&r.Spec)
	return r
}

// TestParseAbortOn: --abort-on TYPE:PERCENT[:MIN], with a table of bad
// inputs.
func TestParseAbortOn(t *testing.T) {
	got, err := ParseAbortOn([]string{"timed_out:5:10", " failed : 2.5 ", "rolled_back:0"})
	want := []TypeCriterion{{FailTimedOut, 5, 10}, {FailFailed, 2.5, 0}, {FailRolledBack, 0, 0}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseAbortOn = %+v, %v; want %+v", got, err, want)
	}
	for _, c := range []struct{ in, err string }{
		{"", "TYPE:PERCENT"},
		{"timed_out", "TYPE:PERCENT"},
		{"lost:5", "failure type \"lost\""},
		{"failed:x", "percent"},
		{"failed:101", "percent"},
		{"failed:-1", "percent"},
		{"failed:NaN", "percent"},
		{"failed:5:-2", "minimum"},
		{"failed:5:two", "minimum"},
		{"failed:5:1:9", "TYPE:PERCENT"},
		{"failed:5,failed:6", "percent"},
	} {
		if _, err := ParseAbortOn([]string{c.in}); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("ParseAbortOn(%q) error %v, want %q", c.in, err, c.err)
		}
	}
	if _, err := ParseAbortOn([]string{"failed:5", "failed:6"}); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("a type given twice: %v", err)
	}
}

// FuzzParseAbortOn: whatever an operator types, ParseAbortOn either refuses
// it or returns criteria that Validate accepts.
func FuzzParseAbortOn(f *testing.F) {
	for _, s := range []string{"timed_out:5:10", "failed:2.5", "rolled_back:0", "x:1", "failed:1e309", "failed::"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		cs, err := ParseAbortOn([]string{in})
		if err != nil {
			return
		}
		s := Spec{ID: "r1", Model: "m", Version: "2", Waves: []int{100}, OnAbort: OnAbortRollback, Abort: Abort{ByType: cs}}
		if err := s.Validate(); err != nil {
			t.Fatalf("ParseAbortOn(%q) = %+v, which Validate refuses: %v", in, cs, err)
		}
	})
}

func TestCriteriaText(t *testing.T) {
	s := Spec{Abort: Abort{MaxFailedPercent: 10, MinFinished: 5, MaxP99Ratio: 1.5,
		ByType: []TypeCriterion{{Type: FailTimedOut, MaxPercent: 5, MinFinished: 10}}}, SuccessPercent: 90, MaxPerMinute: 100}
	want := "abort over 10% bad of ≥ 5 finished; timed out over 5% of ≥ 10; p99 over 1.5× baseline; at most 100 nodes written a minute; next wave at 90% active"
	if got := s.CriteriaText(); got != want {
		t.Errorf("CriteriaText = %q, want %q", got, want)
	}
	s.Ramp = &Ramp{BasePerMinute: 10, Factor: 2, EverySucceeded: 50}
	if got := s.CriteriaText(); !strings.Contains(got, "10 nodes written a minute, ×2 for every 50 active, at most 100") {
		t.Errorf("with a ramp: %q", got)
	}
	if got := (Spec{}).CriteriaText(); !strings.HasSuffix(got, "next wave when every node finished") {
		t.Errorf("no success threshold: %q", got)
	}
}

func TestSpecValidate(t *testing.T) {
	good := Spec{ID: "r1", Model: "m", Version: "2", Waves: []int{10, 100}, OnAbort: OnAbortRollback,
		Strategy: &wire.Strategy{Kind: wire.StrategyCanary, CanaryPercent: 10}, Abort: Abort{MaxFailedPercent: 10, MinFinished: 3}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Spec){
		"id":       func(s *Spec) { s.ID = "a/b" },
		"waves":    func(s *Spec) { s.Waves = []int{50} },
		"strategy": func(s *Spec) { s.Strategy = &wire.Strategy{Kind: "canary", CanaryPercent: 150} },
		"on abort": func(s *Spec) { s.OnAbort = "panic" },
		"percent":  func(s *Spec) { s.Abort.MaxFailedPercent = 101 },
		"selector": func(s *Spec) { s.Selector = map[string]string{"a": "b c"} },
		"timeout":  func(s *Spec) { s.WaveTimeout = -1 },
		"type":     func(s *Spec) { s.Abort.ByType = []TypeCriterion{{Type: "lost", MaxPercent: 5}} },
		"type pct": func(s *Spec) { s.Abort.ByType = []TypeCriterion{{Type: FailFailed, MaxPercent: 200}} },
		"type min": func(s *Spec) { s.Abort.ByType = []TypeCriterion{{Type: FailFailed, MaxPercent: 5, MinFinished: -1}} },
		"type dup": func(s *Spec) {
			s.Abort.ByType = []TypeCriterion{{Type: FailFailed, MaxPercent: 5}, {Type: FailFailed, MaxPercent: 6}}
		},
		"success":          func(s *Spec) { s.SuccessPercent = 101 },
		"pace":             func(s *Spec) { s.MaxPerMinute = -1 },
		"retries":          func(s *Spec) { s.Retries = MaxRetries + 1 },
		"retries negative": func(s *Spec) { s.Retries = -1 },
	} {
		s := good
		mut(&s)
		if err := s.Validate(); err == nil {
			t.Errorf("%s: accepted %+v", name, s)
		}
	}
}

// TestResumeStopsWaveClock: the time a rollout spent paused does not count
// against the wave timeout.
func TestResumeStopsWaveClock(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0.Add(10 * time.Minute)
	c, err := NewController(Config{StatePath: t.TempDir() + "/r.db", Owner: "x", Now: func() time.Time { return now }}, nil, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	r := &Record{Spec: Spec{ID: "r1", Model: "m", Version: "2", Waves: []int{50, 100}, WaveTimeout: time.Minute, OnAbort: OnAbortHold,
		Abort: Abort{MaxFailedPercent: 10}},
		Phase: PhasePaused, Wave: 0, WavesWritten: 1, WaveStarted: []time.Time{t0}, PausedAt: t0.Add(30 * time.Second),
		Members: [][]string{{"a"}, {"b"}}, Counts: make([]Counts, 2), Command: CmdResume}
	if err := c.store.Create(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	got, err := c.step(context.Background(), "r1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Phase != PhaseRunning || !got.WaveStarted[0].Equal(t0.Add(9*time.Minute+30*time.Second)) {
		t.Fatalf("after resume: phase %s, wave started %s (%s)", got.Phase, got.WaveStarted[0], got.Reason)
	}
	now = now.Add(2 * time.Minute)
	if got, err = c.step(context.Background(), "r1"); err != nil || got.Phase != PhaseHeld || !strings.Contains(got.Reason, "timed out") {
		t.Fatalf("timeout after resume: %v, %s %q", err, got.Phase, got.Reason)
	}
}

// TestPausedNodesDoNotTimeOut: while a rollout is paused its nodes' timeout
// clock stops too; on resume it goes on from where it stopped.
func TestPausedNodesDoNotTimeOut(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0.Add(10 * time.Minute)
	c, err := NewController(Config{StatePath: t.TempDir() + "/r.db", Owner: "x", Now: func() time.Time { return now }}, nil, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	r := &Record{Spec: Spec{ID: "r1", Model: "m", Version: "2", Waves: []int{50, 100}, NodeTimeout: time.Minute, OnAbort: OnAbortHold,
		Abort: Abort{MaxFailedPercent: 10}},
		Phase: PhasePaused, Wave: 0, WavesWritten: 1, WaveStarted: []time.Time{t0}, PausedAt: t0.Add(30 * time.Second),
		Members: [][]string{{"a"}, {"b"}}, Counts: make([]Counts, 2)}
	if err := c.store.Create(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	got, err := c.step(context.Background(), "r1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Counts[0].TimedOut != 0 || got.Counts[0].Pending != 1 || len(got.BadNodes) != 0 {
		t.Fatalf("paused 30 s into a 1 min node timeout: counts %+v, bad nodes %v; want the node pending", got.Counts[0], got.BadNodes)
	}
	if _, err := c.store.Update(context.Background(), "r1", func(r *Record) error { r.Command = CmdResume; return nil }); err != nil {
		t.Fatal(err)
	}
	if got, err = c.step(context.Background(), "r1"); err != nil || got.Phase != PhaseRunning || got.Counts[0].TimedOut != 0 {
		t.Fatalf("resumed: %v, phase %s, counts %+v", err, got.Phase, got.Counts[0])
	}
	now = now.Add(20 * time.Second) // 50 s of the minute used
	if got, err = c.step(context.Background(), "r1"); err != nil || got.Counts[0].TimedOut != 0 {
		t.Fatalf("50 s after the wave started (pause excluded): %v, counts %+v", err, got.Counts[0])
	}
	now = now.Add(20 * time.Second) // 70 s
	if got, err = c.step(context.Background(), "r1"); err != nil || got.Counts[0].TimedOut != 1 || got.BadNodes["a"] != StateTimedOut {
		t.Fatalf("70 s after the wave started (pause excluded): %v, counts %+v, bad %v", err, got.Counts[0], got.BadNodes)
	}
}

// A spec's requirements narrow its selector the way a Kubernetes label
// selector's matchExpressions do; bad requirements are refused.
func TestSpecSelectsWithRequirements(t *testing.T) {
	node := func(labels map[string]string) *wire.Status { return &wire.Status{Labels: labels} }
	cam := node(map[string]string{"edge-type": "camera", "arch": "arm64"})
	gw := node(map[string]string{"edge-type": "gateway", "arch": "amd64"})
	bare := node(map[string]string{"arch": "amd64"})
	for _, c := range []struct {
		match []Requirement
		sel   map[string]string
		want  [3]bool // cam, gw, bare
	}{
		{nil, nil, [3]bool{true, true, true}},
		{[]Requirement{{Key: "edge-type", Operator: OpIn, Values: []string{"camera", "doorbell"}}}, nil, [3]bool{true, false, false}},
		{[]Requirement{{Key: "edge-type", Operator: OpNotIn, Values: []string{"camera"}}}, nil, [3]bool{false, true, true}},
		{[]Requirement{{Key: "edge-type", Operator: OpExists}}, nil, [3]bool{true, true, false}},
		{[]Requirement{{Key: "edge-type", Operator: OpDoesNotExist}}, nil, [3]bool{false, false, true}},
		{[]Requirement{{Key: "edge-type", Operator: OpExists}}, map[string]string{"arch": "amd64"}, [3]bool{false, true, false}},
	} {
		s := Spec{Selector: c.sel, Match: c.match}
		for i, n := range []*wire.Status{cam, gw, bare} {
			if got := s.Selects(n); got != c.want[i] {
				t.Errorf("%s selects node %d (%v): %v, want %v", targetText(s), i, n.Labels, got, c.want[i])
			}
		}
	}
	base := testSpec("r-match", "2")
	for _, bad := range []Requirement{
		{Key: "edge-type", Operator: "Matches", Values: []string{"x"}},
		{Key: "edge-type", Operator: OpIn},
		{Key: "edge-type", Operator: OpExists, Values: []string{"x"}},
		{Key: "bad key!", Operator: OpExists},
		{Key: "edge-type", Operator: OpIn, Values: []string{"not ok"}},
	} {
		s := base
		s.Match = []Requirement{bad}
		if err := s.Validate(); err == nil {
			t.Errorf("requirement %+v accepted", bad)
		}
	}
	s := base
	s.Match = []Requirement{{Key: "edge-type", Operator: OpIn, Values: []string{"camera"}}, {Key: "gpu", Operator: OpDoesNotExist}}
	if err := s.Validate(); err != nil {
		t.Errorf("good requirements refused: %v", err)
	}
	s.Group = ""
	if got, want := targetText(s), "selector edge-type in (camera), !gpu"; got != want {
		t.Errorf("targetText %q, want %q", got, want)
	}
}

// TestParseRamp: --ramp BASE:FACTOR:EVERY, with a table of bad inputs.
func TestParseRamp(t *testing.T) {
	if r, err := ParseRamp(" 10 : 1.5 : 50 "); err != nil || *r != (Ramp{10, 1.5, 50}) {
		t.Fatalf("ParseRamp = %+v, %v", r, err)
	}
	if r, err := ParseRamp(""); err != nil || r != nil {
		t.Fatalf("empty ramp = %+v, %v; want none", r, err)
	}
	for _, c := range []struct{ in, err string }{
		{"10", "BASE:FACTOR:EVERY"},
		{"10:2", "BASE:FACTOR:EVERY"},
		{"10:2:5:1", "BASE:FACTOR:EVERY"},
		{"x:2:5", "base"},
		{"0:2:5", "base 0"},
		{"2000000:2:5", "out of range"},
		{"10:y:5", "factor"},
		{"10:1:5", "factor 1"},
		{"10:6:5", "factor 6"},
		{"10:NaN:5", "factor NaN"},
		{"10:2:0", "at least 1"},
		{"10:2:-3", "at least 1"},
		{"10:2:z", "every"},
	} {
		if _, err := ParseRamp(c.in); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("ParseRamp(%q) error %v, want %q", c.in, err, c.err)
		}
	}
}

// FuzzParseRamp: whatever an operator types, ParseRamp refuses it or
// returns a ramp Validate accepts, whose pace stays within MaxPace however
// many nodes succeed.
func FuzzParseRamp(f *testing.F) {
	for _, s := range []string{"10:2:50", "1:5:1", "1000000:1.0001:1", "10:1e309:1", "::"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		rp, err := ParseRamp(in)
		if err != nil || rp == nil {
			return
		}
		s := Spec{ID: "r1", Model: "m", Version: "2", Waves: []int{100}, OnAbort: OnAbortRollback, Ramp: rp}
		if err := s.Validate(); err != nil {
			t.Fatalf("ParseRamp(%q) = %+v, which Validate refuses: %v", in, rp, err)
		}
		r := &Record{Spec: s, Counts: []Counts{{Total: 1 << 30, Active: 1 << 30}}}
		if p := r.Pace(); !(p > 0 && p <= MaxPace) {
			t.Fatalf("pace %g out of (0, %d]", p, MaxPace)
		}
	})
}

// TestPace: the ramp's pace for the nodes Active so far, capped by
// MaxPerMinute; MaxPerMinute alone; none.
func TestPace(t *testing.T) {
	ramp := &Ramp{BasePerMinute: 10, Factor: 2, EverySucceeded: 5}
	for _, c := range []struct {
		name   string
		max    int
		ramp   *Ramp
		active []int // per wave
		want   float64
	}{
		{"no pace", 0, nil, []int{7}, 0},
		{"flat", 100, nil, []int{7}, 100},
		{"ramp, none active", 0, ramp, nil, 10},
		{"ramp, 4 active", 0, ramp, []int{4}, 10},
		{"ramp, 5 active", 0, ramp, []int{5}, 20},
		{"ramp, 12 active over two waves", 0, ramp, []int{6, 6}, 40},
		{"ramp capped", 30, ramp, []int{12}, 30},
		{"ramp under the cap", 30, ramp, []int{5}, 20},
		{"ramp bounded by MaxPace", 0, ramp, []int{1 << 20}, MaxPace},
	} {
		r := &Record{Spec: Spec{MaxPerMinute: c.max, Ramp: c.ramp}}
		for _, a := range c.active {
			r.Counts = append(r.Counts, Counts{Total: a, Active: a})
		}
		if got := r.Pace(); got != c.want {
			t.Errorf("%s: pace %g, want %g", c.name, got, c.want)
		}
	}
}
