package serving

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/models"
)

// evaluate is pure: its verdicts on hand-made windows.
func TestEvaluateGates(t *testing.T) {
	win := func(requests, errs uint64, lat time.Duration) inference.StatsSnapshot {
		var s inference.StatsSnapshot
		s.Requests, s.Errors = requests, errs
		// put every success in the bucket of lat
		for i := 0; i < 101; i++ {
			if inference.LatencyBound(i) >= lat {
				s.Latency[i] = requests - errs
				break
			}
		}
		return s
	}
	strategy := func(t *testing.T, js string) models.Strategy {
		t.Helper()
		s, err := models.DecodeStrategy([]byte(js))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	canary := strategy(t, `{"kind":"canary","min_requests":100,"min_duration":"1m","max_duration":"10m","on_low_traffic":"fail","gates":{"max_error_rate":0.1,"max_p99_ratio":2}}`)
	for _, tc := range []struct {
		name       string
		elapsed    time.Duration
		base, cand inference.StatsSnapshot
		want       verdict
		reason     string
	}{
		{"too few", time.Hour / 60, win(500, 0, time.Millisecond), win(99, 50, time.Millisecond), verdictWait, ""},
		{"too few too long", 11 * time.Minute, win(500, 0, time.Millisecond), win(99, 0, time.Millisecond), verdictFail, "not enough traffic"},
		{"errors", time.Second, win(500, 0, time.Millisecond), win(100, 11, time.Millisecond), verdictFail, "error rate"},
		{"slow", time.Second, win(500, 0, time.Millisecond), win(100, 0, 3*time.Millisecond), verdictFail, "p99 latency"},
		{"good but young", time.Second, win(500, 0, time.Millisecond), win(100, 10, time.Millisecond), verdictWait, ""},
		{"good", 2 * time.Minute, win(500, 0, time.Millisecond), win(100, 10, time.Millisecond), verdictPass, "gates passed"},
		{"no baseline", 2 * time.Minute, win(0, 0, 0), win(100, 0, time.Millisecond), verdictPass, "not evaluated"},
	} {
		e := evaluate(canary, tc.elapsed, tc.base, tc.cand)
		if e.verdict != tc.want || !strings.Contains(e.reason, tc.reason) {
			t.Errorf("%s: verdict %d %q, want %d %q", tc.name, e.verdict, e.reason, tc.want, tc.reason)
		}
	}
	// The defaults: max_duration 10m, on_low_traffic promote (gates checked
	// on what was observed).
	low := strategy(t, `{"kind":"canary","min_requests":100,"gates":{"max_error_rate":0.1}}`)
	for _, tc := range []struct {
		name    string
		elapsed time.Duration
		cand    inference.StatsSnapshot
		want    verdict
		reason  string
	}{
		{"low traffic, waiting", 9 * time.Minute, win(5, 0, time.Millisecond), verdictWait, ""},
		{"low traffic promoted", 10 * time.Minute, win(5, 0, time.Millisecond), verdictPass, "on_low_traffic promote"},
		{"no traffic promoted", 10 * time.Minute, win(0, 0, 0), verdictPass, "0 of 100"},
		{"low traffic, a gate failed", 10 * time.Minute, win(5, 3, time.Millisecond), verdictFail, "error rate"},
	} {
		e := evaluate(low, tc.elapsed, win(500, 0, time.Millisecond), tc.cand)
		if e.verdict != tc.want || !strings.Contains(e.reason, tc.reason) {
			t.Errorf("%s: verdict %d %q, want %d %q", tc.name, e.verdict, e.reason, tc.want, tc.reason)
		}
	}
	shadow := strategy(t, `{"kind":"shadow","min_requests":10,"min_duration":"0s","gates":{"max_cosine_distance":0.01}}`)
	c := win(10, 0, time.Millisecond)
	c.Drift = inference.DriftTotals{Compared: 10, CosineSum: 0.5, CosineN: 10}
	if e := evaluate(shadow, time.Second, win(10, 0, time.Millisecond), c); e.verdict != verdictFail || !strings.Contains(e.reason, "cosine") {
		t.Errorf("cosine drift: %+v", e)
	}
	c.Drift = inference.DriftTotals{Compared: 10, Mismatched: 1, MaxAbsDiff: math.Inf(1)}
	if e := evaluate(shadow, time.Second, win(10, 0, time.Millisecond), c); e.verdict != verdictFail || !strings.Contains(e.reason, "shape") {
		t.Errorf("mismatch: %+v", e)
	}
	if f := cleanFigures(map[string]float64{"a": math.Inf(1), "b": math.NaN(), "c": 1}); len(f) != 2 || f["a"] != math.MaxFloat64 {
		t.Errorf("cleanFigures: %v", f)
	}
}
