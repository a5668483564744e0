package models_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgeai/edge-node/models"
)

func TestDecodeStrategyDefaults(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want func(models.Strategy) bool
	}{
		{`{}`, func(s models.Strategy) bool {
			return s.Kind == models.StrategyImmediate && s.OnFailure == models.Rollback && s.Gates == (models.Gates{})
		}},
		{`{"kind":"canary"}`, func(s models.Strategy) bool {
			return s.CanaryPercent == models.DefaultCanaryPercent && s.MinRequests == models.DefaultMinRequests &&
				s.MinDuration == models.DefaultMinDuration && *s.Gates.MaxErrorRate == models.DefaultMaxErrorRate &&
				*s.Gates.MaxP99Ratio == models.DefaultMaxP99Ratio
		}},
		{`{"kind":"shadow","shadow_percent":25,"min_duration":"90s","min_requests":7,"gates":{"max_abs_diff":0.001}}`, func(s models.Strategy) bool {
			return s.ShadowPercent == 25 && s.MinDuration.D() == 90*time.Second && s.MinRequests == 7 &&
				*s.Gates.MaxAbsDiff == 0.001 && s.Gates.MaxErrorRate == nil // explicit gates: no defaults added
		}},
		{`{"kind":"canary","canary_percent":100,"min_duration":2.5,"gates":{"max_error_rate":0},"on_failure":"hold"}`, func(s models.Strategy) bool {
			return s.CanaryPercent == 100 && s.MinDuration.D() == 2500*time.Millisecond && *s.Gates.MaxErrorRate == 0 && s.OnFailure == models.Hold
		}},
	} {
		s, err := models.DecodeStrategy([]byte(tc.in))
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if !tc.want(s) {
			t.Errorf("%s: decoded %+v", tc.in, s)
		}
		// A normalised strategy survives a JSON round trip unchanged.
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := models.DecodeStrategy(b)
		if err != nil {
			t.Errorf("round trip of %s: %v", b, err)
		} else if b2, _ := json.Marshal(s2); string(b2) != string(b) {
			t.Errorf("round trip: %s → %s", b, b2)
		}
	}
}

// TestStrategyLowTrafficDefaults: a canary or shadow gets a maximum
// duration (10m, or min_duration when longer) and promotes on low traffic
// unless told to fail.
func TestStrategyLowTrafficDefaults(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  time.Duration
		rule models.LowTraffic
	}{
		{`{"kind":"canary"}`, 10 * time.Minute, models.LowTrafficPromote},
		{`{"kind":"shadow","min_duration":"20m"}`, 20 * time.Minute, models.LowTrafficPromote},
		{`{"kind":"canary","max_duration":"2m","on_low_traffic":"fail"}`, 2 * time.Minute, models.LowTrafficFail},
		{`{"kind":"immediate"}`, 0, ""},
	} {
		s, err := models.DecodeStrategy([]byte(tc.in))
		if err != nil || s.MaxDuration.D() != tc.max || s.OnLowTraffic != tc.rule {
			t.Errorf("%s: max_duration %v, on_low_traffic %q, %v; want %v, %q", tc.in, s.MaxDuration.D(), s.OnLowTraffic, err, tc.max, tc.rule)
		}
	}
}

func TestDecodeStrategyRejects(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{``, "EOF"},
		{`[]`, "cannot unmarshal"},
		{`{"kind":"blue-green"}`, `kind "blue-green"`},
		{`{"kind":"canary","canary_percent":0.0001,"x":1}`, `unknown field "x"`},
		{`{"kind":"canary","canary_percent":101}`, "canary_percent 101"},
		{`{"kind":"canary","canary_percent":-5}`, "canary_percent -5"},
		{`{"kind":"canary","shadow_percent":5}`, "takes no shadow_percent"},
		{`{"kind":"shadow","canary_percent":5}`, "takes no canary_percent"},
		{`{"kind":"immediate","canary_percent":5}`, "takes no canary_percent"},
		{`{"kind":"shadow","shadow_percent":1e400}`, "shadow_percent"},
		{`{"kind":"canary","min_duration":"soon"}`, "soon"},
		{`{"kind":"canary","min_duration":-1}`, "must not be negative"},
		{`{"kind":"canary","min_duration":1e300}`, "out of range"},
		{`{"kind":"canary","min_requests":-1}`, "must not be negative"},
		{`{"kind":"canary","min_requests":2000000000}`, "more than 1e9"},
		{`{"kind":"canary","min_duration":"10m","max_duration":"1m"}`, "shorter than min_duration"},
		{`{"kind":"canary","gates":{"max_error_rate":1.5}}`, "gates.max_error_rate 1.5"},
		{`{"kind":"canary","gates":{"max_p99_ratio":0.5}}`, "gates.max_p99_ratio 0.5"},
		{`{"kind":"canary","gates":{"max_abs_diff":0.1}}`, "shadow only"},
		{`{"kind":"shadow","gates":{"max_cosine_distance":3}}`, "max_cosine_distance 3"},
		{`{"kind":"shadow","gates":{"min_argmax_agreement":-0.1}}`, "min_argmax_agreement"},
		{`{"kind":"shadow","gates":{"max_abs_diff":-1}}`, "max_abs_diff -1"},
		{`{"kind":"canary","on_failure":"pray"}`, `on_failure "pray"`},
		{`{"kind":"canary","on_low_traffic":"maybe"}`, `on_low_traffic "maybe"`},
		{`{"kind":"immediate","on_low_traffic":"fail"}`, "kind immediate takes no on_low_traffic"},
		{`{"kind":"canary"} {}`, "data after"},
		{`{"kind":"canary"}` + strings.Repeat(" ", models.MaxStrategyBytes), "more than"},
	} {
		_, err := models.DecodeStrategy([]byte(tc.in))
		if err == nil || !errors.Is(err, models.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%.60q: error %v, want one containing %q and wrapping ErrInvalidArgument", tc.in, err, tc.want)
		}
	}
}

// FuzzDecodeStrategy: no input panics; whatever decodes is valid, and
// decoding is idempotent (a decoded strategy re-encodes to one that decodes
// to the same thing).
func FuzzDecodeStrategy(f *testing.F) {
	for _, s := range []string{`{}`, `{"kind":"canary","canary_percent":10,"min_duration":"1m","min_requests":5}`,
		`{"kind":"shadow","gates":{"max_abs_diff":0.1,"max_cosine_distance":0.2,"min_argmax_agreement":0.9}}`,
		`{"kind":"canary","max_duration":30,"on_failure":"hold","gates":{"max_error_rate":0.1,"max_p99_ratio":3}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := models.DecodeStrategy(b)
		if err != nil {
			if !errors.Is(err, models.ErrInvalidArgument) {
				t.Fatalf("error %v does not wrap ErrInvalidArgument", err)
			}
			return
		}
		if _, err := s.Normalize(); err != nil {
			t.Fatalf("decoded strategy %+v is not valid: %v", s, err)
		}
		enc, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := models.DecodeStrategy(enc)
		if err != nil {
			t.Fatalf("re-decoding %s: %v", enc, err)
		}
		if enc2, _ := json.Marshal(s2); string(enc2) != string(enc) {
			t.Fatalf("not idempotent: %s → %s", enc, enc2)
		}
	})
}
