package kubeedge

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestParseDesiredGood(t *testing.T) {
	got, rej := ParseDesired([]Property{
		{"silero_vad.version", "3"},
		{"silero_vad.rollout", "canary:25"},
		{"silero_vad.state", ""}, // ReadOnly, listed with no desired value
		{"ppocr.det.v4.version", "2024-06-01"},
		{"ppocr.det.v4.rollout", "shadow:100"},
		{"ppocr.det.v4.sha256", strings.Repeat("ab", 32)},
		{"gone.version", "none"},
		{"empty.version", ""},
		{"x.version", "1"},
		{"x.rollout", "immediate"},
	})
	if len(rej) != 0 {
		t.Fatalf("rejections: %v", rej)
	}
	want := map[string]DesiredModel{
		"silero_vad":   {Version: "3", Strategy: Strategy{Kind: StrategyCanary, CanaryPercent: 25}},
		"ppocr.det.v4": {Version: "2024-06-01", Strategy: Strategy{Kind: StrategyShadow, ShadowPercent: 100}, SHA256: strings.Repeat("ab", 32)},
		"x":            {Version: "1", Strategy: Strategy{Kind: StrategyImmediate}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %+v, want %+v", k, got[k], v)
		}
	}
}

// TestParseDesiredBad is the table of bad inputs: each refuses the model it
// names (which is then absent from the result) with the given reason, and
// leaves the good model alone.
func TestParseDesiredBad(t *testing.T) {
	good := Property{"ok.version", "1"}
	for _, tc := range []struct {
		name   string
		props  []Property
		model  string
		reason RejectReason
	}{
		{"name outside the alphabet", []Property{{"m version", "1"}}, "", ReasonInvalidPropertyName},
		{"name too long", []Property{{strings.Repeat("m", 121) + ".version", "1"}}, "", ReasonInvalidPropertyName},
		{"empty name", []Property{{"", "1"}}, "", ReasonInvalidPropertyName},
		{"no field", []Property{{"version", "1"}}, "", ReasonUnknownProperty},
		{"unknown field", []Property{{"m.colour", "blue"}}, "", ReasonUnknownProperty},
		{"trailing dot", []Property{{"m.", "1"}}, "", ReasonUnknownProperty},
		{"model name with a slash", []Property{{"a/b.version", "1"}}, "", ReasonInvalidModelName},
		{"model name starting with a dot", []Property{{".m.version", "1"}}, "", ReasonInvalidModelName},
		{"duplicate", []Property{{"m.version", "1"}, {"m.version", "2"}}, "m", ReasonDuplicateProperty},
		{"read-only", []Property{{"m.version", "1"}, {"m.p99_ms", "3"}}, "m", ReasonReadOnlyProperty},
		{"value with a space", []Property{{"m.version", "1 2"}}, "m", ReasonInvalidValue},
		{"value with unicode", []Property{{"m.version", "v1é"}}, "m", ReasonInvalidValue},
		{"value with a newline", []Property{{"m.version", "1\n"}}, "m", ReasonInvalidValue},
		{"value too long", []Property{{"m.version", strings.Repeat("1", 513)}}, "m", ReasonInvalidValue},
		{"JSON value", []Property{{"m.version", `{"v":1}`}}, "m", ReasonInvalidValue},
		{"version with a leading dash", []Property{{"m.version", "-1"}}, "m", ReasonInvalidVersion},
		{"version with a colon", []Property{{"m.version", "1:2"}}, "m", ReasonInvalidVersion},
		{"version of 65 characters", []Property{{"m.version", strings.Repeat("v", 65)}}, "m", ReasonInvalidVersion},
		{"rollout unknown", []Property{{"m.version", "1"}, {"m.rollout", "rolling"}}, "m", ReasonInvalidRollout},
		{"rollout immediate with percent", []Property{{"m.version", "1"}, {"m.rollout", "immediate:5"}}, "m", ReasonInvalidRollout},
		{"canary without percent", []Property{{"m.version", "1"}, {"m.rollout", "canary"}}, "m", ReasonInvalidRollout},
		{"canary empty percent", []Property{{"m.version", "1"}, {"m.rollout", "canary:"}}, "m", ReasonInvalidRollout},
		{"canary 0", []Property{{"m.version", "1"}, {"m.rollout", "canary:0"}}, "m", ReasonInvalidRollout},
		{"canary 100", []Property{{"m.version", "1"}, {"m.rollout", "canary:100"}}, "m", ReasonInvalidRollout},
		{"canary leading zero", []Property{{"m.version", "1"}, {"m.rollout", "canary:010"}}, "m", ReasonInvalidRollout},
		{"canary negative", []Property{{"m.version", "1"}, {"m.rollout", "canary:-5"}}, "m", ReasonInvalidRollout},
		{"canary huge", []Property{{"m.version", "1"}, {"m.rollout", "canary:99999999999999999999"}}, "m", ReasonInvalidRollout},
		{"shadow 101", []Property{{"m.version", "1"}, {"m.rollout", "shadow:101"}}, "m", ReasonInvalidRollout},
		{"two percentages", []Property{{"m.version", "1"}, {"m.rollout", "canary:5:6"}}, "m", ReasonInvalidRollout},
		{"upper-case kind", []Property{{"m.version", "1"}, {"m.rollout", "Canary:5"}}, "m", ReasonInvalidRollout},
		{"sha256 upper-case", []Property{{"m.version", "1"}, {"m.sha256", strings.Repeat("AB", 32)}}, "m", ReasonInvalidSHA256},
		{"sha256 short", []Property{{"m.version", "1"}, {"m.sha256", "abc"}}, "m", ReasonInvalidSHA256},
		{"rollout without version", []Property{{"m.rollout", "canary:5"}}, "m", ReasonMissingVersion},
		{"sha256 with version none", []Property{{"m.version", "none"}, {"m.sha256", strings.Repeat("ab", 32)}}, "m", ReasonMissingVersion},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, rej := ParseDesired(append([]Property{good}, tc.props...))
			if len(rej) != 1 || rej[0].Reason != tc.reason || rej[0].Model != tc.model {
				t.Fatalf("rejections %v, want one %s for model %q", rej, tc.reason, tc.model)
			}
			if _, ok := got["m"]; ok {
				t.Fatalf("refused model in the result: %v", got)
			}
			if got["ok"].Version != "1" {
				t.Fatalf("good model lost: %v", got)
			}
			if rej[0].Detail == "" || rej[0].Error() == "" {
				t.Fatalf("rejection without detail: %+v", rej[0])
			}
		})
	}
}

func TestParseDesiredLimits(t *testing.T) {
	props := make([]Property, MaxProperties+1)
	for i := range props {
		props[i] = Property{"m.version", "1"}
	}
	if got, rej := ParseDesired(props); got != nil || len(rej) != 1 || rej[0].Reason != ReasonTooManyModels {
		t.Fatalf("too many properties: %v %v", got, rej)
	}
	props = props[:0]
	for i := 0; i <= MaxModels; i++ {
		props = append(props, Property{PropertyName("m"+strings.Repeat("x", i%7)+string(rune('a'+i%26))+itoa(i), FieldVersion), "1"})
	}
	if got, rej := ParseDesired(props); got != nil || len(rej) != 1 || rej[0].Reason != ReasonTooManyModels {
		t.Fatalf("too many models: %d %v", len(got), rej)
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

func TestStrategyRoundTrip(t *testing.T) {
	for _, v := range []string{"immediate", "canary:1", "canary:99", "shadow:1", "shadow:100"} {
		s, err := ParseStrategy(v)
		if err != nil || s.String() != v {
			t.Errorf("%q: %+v %v", v, s, err)
		}
	}
}

// FuzzParseDesired: no panic; every accepted model and its values are legal
// and every accepted strategy prints back to a value that parses to itself.
func FuzzParseDesired(f *testing.F) {
	f.Add("m.version", "1", "m.rollout", "canary:10")
	f.Add("a.b.version", "v1.2", "a.b.sha256", strings.Repeat("0", 64))
	f.Add("m.version", "none", "m.state", "x")
	f.Add("m version", "1", "m.rollout", "shadow:100")
	f.Fuzz(func(t *testing.T, n1, v1, n2, v2 string) {
		got, rej := ParseDesired([]Property{{n1, v1}, {n2, v2}})
		for m, d := range got {
			if !ValidName(PropertyName(m, FieldVersion)) || !ValidValue(d.Version) || d.Version == None {
				t.Fatalf("accepted %q: %+v", m, d)
			}
			s, err := ParseStrategy(d.Strategy.String())
			if err != nil || s != d.Strategy {
				t.Fatalf("strategy %+v does not round-trip: %v", d.Strategy, err)
			}
			for _, r := range rej {
				if r.Model == m {
					t.Fatalf("model %q both accepted and refused: %v", m, r)
				}
			}
		}
	})
}

// FuzzParseStrategy: no panic; accepted strategies round-trip exactly.
func FuzzParseStrategy(f *testing.F) {
	for _, s := range []string{"immediate", "canary:10", "shadow:100", "canary:", "canary:007", ":", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		s, err := ParseStrategy(v)
		if err != nil {
			return
		}
		if s.String() != v {
			t.Fatalf("%q parsed to %+v which prints %q", v, s, s.String())
		}
	})
}

// refusingApplier refuses one model and fails on demand.
type refusingApplier struct {
	calls  []map[string]DesiredModel
	fail   error
	refuse string
}

func (a *refusingApplier) ApplyDesired(_ context.Context, _ string, _ uint64, m map[string]DesiredModel) error {
	a.calls = append(a.calls, m)
	if a.fail != nil {
		return a.fail
	}
	if _, ok := m[a.refuse]; ok {
		return &RejectedError{Rejections: []Rejection{{Model: a.refuse, Reason: ReasonUnknownModel, Detail: "no"}}}
	}
	return nil
}

func (a *refusingApplier) Status(context.Context) ([]ModelStatus, error) { return nil, nil }

// TestTwinKeepsAcceptedOnRefusal: a refused model keeps its last accepted
// entry; identical updates are not re-applied; transient failures are
// retried by Retry.
func TestTwinKeepsAcceptedOnRefusal(t *testing.T) {
	ctx := context.Background()
	a := &refusingApplier{refuse: "nope"}
	tw := NewTwin(a, "test", zerolog.Nop(), nil)
	if err := tw.SetDesired(ctx, []Property{{"m.version", "1"}}); err != nil {
		t.Fatal(err)
	}
	err := tw.SetDesired(ctx, []Property{{"m.version", "-bad"}, {"nope.version", "1"}})
	var re *RejectedError
	if !errors.As(err, &re) || len(re.Rejections) != 2 {
		t.Fatalf("err %v, want two rejections", err)
	}
	if last := a.calls[len(a.calls)-1]; last["m"].Version != "1" {
		t.Fatalf("refused model lost its accepted entry: %v", last)
	}
	n := len(a.calls)
	if err := tw.SetDesired(ctx, []Property{{"m.version", "-bad"}, {"nope.version", "1"}}); !errors.As(err, &re) || len(re.Rejections) != 2 {
		t.Fatalf("repeat: %v", err)
	}
	if len(a.calls) != n {
		t.Fatalf("identical update re-applied")
	}
	vals, err := tw.Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	reported := map[string]string{}
	for _, v := range vals {
		reported[v.Name] = v.Reported
	}
	if reported["m.state"] != "Rejected" || reported["m.reason"] != string(ReasonInvalidVersion) || reported["nope.reason"] != string(ReasonUnknownModel) {
		t.Fatalf("report: %v", reported)
	}

	a.fail = errors.New("store busy")
	if err := tw.SetDesired(ctx, []Property{{"m.version", "2"}}); err == nil || errors.As(err, &re) {
		t.Fatalf("transient failure: %v", err)
	}
	a.fail = nil
	if err := tw.Retry(ctx); err != nil {
		t.Fatal(err)
	}
	if last := a.calls[len(a.calls)-1]; last["m"].Version != "2" {
		t.Fatalf("Retry applied %v", last)
	}
	n = len(a.calls)
	if err := tw.Retry(ctx); err != nil || len(a.calls) != n {
		t.Fatalf("Retry with nothing pending applied again (%v)", err)
	}
}
