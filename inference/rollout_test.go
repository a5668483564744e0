package inference_test

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeai/edge-node/inference"
)

// The canary gets its share of default-routed requests. The choice is a
// hash of the request's number, so the count is binomial: |n·p − count| ≤
// 4·sqrt(n·p·(1−p)) = 160 for n=10000, p=0.2.
func TestRouterCanaryShare(t *testing.T) {
	r := inference.NewRouter()
	if err := r.Add(loadVersion(t, "1"), true); err != nil {
		t.Fatal(err)
	}
	if err := r.Add(loadVersion(t, "2"), false); err != nil {
		t.Fatal(err)
	}
	if err := r.SetCanary("adder", "1", 0.5); !errors.Is(err, inference.ErrInvalidArgument) {
		t.Errorf("default as canary: %v", err)
	}
	if err := r.SetCanary("adder", "2", 1.5); !errors.Is(err, inference.ErrInvalidArgument) {
		t.Errorf("share 1.5: %v", err)
	}
	if err := r.SetCanary("adder", "9", 0.5); !errors.Is(err, inference.ErrNotFound) {
		t.Errorf("unknown canary: %v", err)
	}
	if err := r.SetCanary("adder", "2", 0.2); err != nil {
		t.Fatal(err)
	}
	const n, p = 10000, 0.2
	count := func(version string) (got map[string]int) {
		got = map[string]int{}
		for i := 0; i < n; i++ {
			m, release, err := r.Acquire("adder", version)
			if err != nil {
				t.Fatal(err)
			}
			got[m.Version()]++
			release()
		}
		return got
	}
	got := count("")
	tol := 4 * math.Sqrt(n*p*(1-p))
	if d := math.Abs(float64(got["2"]) - n*p); d > tol {
		t.Errorf("canary got %d of %d requests, want %v ± %.0f", got["2"], n, n*p, tol)
	}
	t.Logf("canary share: %d of %d (expected %.0f, deviation %.0f; binomial 4σ tolerance %.0f)", got["2"], n, n*p, math.Abs(float64(got["2"])-n*p), tol)
	if got := count("1"); got["1"] != n {
		t.Errorf("requests naming version 1 went elsewhere: %v", got)
	}
	if tr, _ := r.Traffic("adder"); tr.Canary != "2" || math.Abs(tr.CanaryShare-p) > 1e-9 {
		t.Errorf("traffic %+v", tr)
	}
	// Promotion: the canary becomes the default and stops being a canary.
	if err := r.SetDefault("adder", "2"); err != nil {
		t.Fatal(err)
	}
	if tr, _ := r.Traffic("adder"); tr.Canary != "" || tr.Default != "2" {
		t.Errorf("traffic after promotion %+v", tr)
	}
	if got := count(""); got["2"] != n {
		t.Errorf("after promotion: %v", got)
	}
	// A removed canary stops at once.
	if err := r.SetCanary("adder", "1", 1); err != nil {
		t.Fatal(err)
	}
	if err := r.Remove("adder", "1"); err != nil {
		t.Fatal(err)
	}
	if got := count(""); got["2"] != n {
		t.Errorf("after removing the canary: %v", got)
	}
}

// Which requests the canary gets must not depend on the clients' timing. A
// canary that fails fast on a fifth of the inputs changes when its clients
// send their next request; a sampler whose choice for request n follows from
// its choices before n (a Weyl sequence does) then locks onto that rhythm and
// the canary sees a biased sample of the inputs. This replays, in virtual
// time, two closed-loop clients (each sends its next request when its last
// one returns) whose period-5 inputs fail on the canary: on the Weyl sequence
// the canary saw 9.6 % of failing inputs, not 20 %, and a window of 58 canary
// requests held as few as 2 (what a CI run saw when a failing canary was
// promoted).
func TestRouterCanaryIgnoresClientTiming(t *testing.T) {
	r := inference.NewRouter()
	if err := r.Add(loadVersion(t, "1"), true); err != nil {
		t.Fatal(err)
	}
	if err := r.Add(loadVersion(t, "2"), false); err != nil {
		t.Fatal(err)
	}
	if err := r.SetCanary("adder", "2", 0.5); err != nil {
		t.Fatal(err)
	}
	// Service times: the default 1, the canary 1.3, and 0.3 when it fails.
	const requests, badShare = 100000, 0.2
	next := [2]float64{0, 0.05} // when each client sends its next request
	sent := [2]int{}
	canary, canaryBad := 0, 0
	for range requests {
		c := 0
		if next[1] < next[0] {
			c = 1
		}
		bad := (c+2*sent[c])%5 == 4 // client c's inputs are c, c+2, c+4, ...; every fifth fails
		sent[c]++
		m, release, err := r.Acquire("adder", "")
		if err != nil {
			t.Fatal(err)
		}
		service := 1.0
		if m.Version() == "2" {
			canary++
			service = 1.3
			if bad {
				canaryBad++
				service = 0.3
			}
		}
		release()
		next[c] += service + 0.1
	}
	got := float64(canaryBad) / float64(canary)
	// Binomial 4σ over the canary's ~50,000 requests is ±0.7 points.
	if tol := 4 * math.Sqrt(badShare*(1-badShare)/float64(canary)); math.Abs(got-badShare) > tol {
		t.Errorf("the canary saw %.4f failing inputs (%d of %d), want %.2f ± %.4f", got, canaryBad, canary, badShare, tol)
	}
	t.Logf("canary: %d of %d requests, %.4f of them failing inputs", canary, requests, got)
}

func runAdder(t *testing.T, r *inference.Router, a float32) string {
	t.Helper()
	m, release, err := r.Acquire("adder", "")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	ins := adderInputs()
	ins[0].Data = f32(a)
	if _, err := m.Run(context.Background(), ins, nil, inference.HeapAllocator{}); err != nil {
		t.Fatal(err)
	}
	return m.Version()
}

// A shadow gets copies of default-routed requests after they ran, never
// answers, has its outputs compared, and its runs are bounded and drained
// by Remove; per-version stats and metrics follow.
func TestRouterShadow(t *testing.T) {
	r := inference.NewRouterWith(inference.RouterOptions{ShadowConcurrency: 2})
	reg := prometheus.NewRegistry()
	reg.MustRegister(r.Collector())
	if err := r.Add(loadVersion(t, "1"), true); err != nil {
		t.Fatal(err)
	}
	if err := r.Add(loadVersion(t, "2"), false); err != nil {
		t.Fatal(err)
	}
	if err := r.SetShadow("adder", "2", 1); err != nil {
		t.Fatal(err)
	}
	const n = 200
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n/4; i++ {
				if v := runAdder(t, r, float32(i)); v != "1" {
					t.Errorf("answered by %s", v)
				}
			}
		}()
	}
	wg.Wait()
	// Wait for the shadow runs in progress: each of the n requests was
	// either mirrored (counted when its shadow run ends) or skipped.
	deadline := time.Now().Add(30 * time.Second)
	var st inference.StatsSnapshot
	for time.Now().Before(deadline) {
		st, _ = r.Stats("adder", "2")
		tr, _ := r.Traffic("adder")
		if st.Requests+tr.ShadowSkipped >= n {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	tr, _ := r.Traffic("adder")
	if st.Requests+tr.ShadowSkipped != n || st.Drift.Compared != st.Requests || st.Requests == 0 {
		t.Fatalf("shadow ran %d, skipped %d, compared %d of %d", st.Requests, tr.ShadowSkipped, st.Drift.Compared, n)
	}
	if st.Drift.MaxAbsDiff != 0 || st.Drift.MeanCosineDistance() > 1e-12 || st.Errors != 0 {
		t.Errorf("same model as shadow drifted: %+v", st.Drift)
	}
	primary, _ := r.Stats("adder", "1")
	if primary.Requests != n || primary.Successes() != n {
		t.Errorf("primary stats %d requests, %d successes", primary.Requests, primary.Successes())
	}
	t.Logf("shadow: %d mirrored, %d skipped (2 slots, 4 workers)", st.Requests, tr.ShadowSkipped)
	// Requests acquired for mirroring but never run give their slots back:
	// afterwards a request is still mirrored.
	for i := 0; i < 10; i++ {
		_, release, err := r.Acquire("adder", "")
		if err != nil {
			t.Fatal(err)
		}
		release()
	}
	runAdder(t, r, 1)
	for st2, _ := r.Stats("adder", "2"); st2.Requests == st.Requests; st2, _ = r.Stats("adder", "2") {
		if time.Now().After(deadline) {
			t.Fatal("no shadow run after acquires that never ran: slots leaked")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := r.SetShadow("adder", "", 0); err != nil {
		t.Fatal(err)
	}
	if c, err := testutil.GatherAndCount(reg, "edge_inference_version_requests_total", "edge_inference_shadow_compared_total", "edge_inference_version_run_duration_seconds"); err != nil || c != 5 {
		t.Errorf("metrics: %d series, %v", c, err)
	}
}

func TestStatsQuantile(t *testing.T) {
	r := inference.NewRouter()
	if err := r.Add(loadVersion(t, "1"), true); err != nil {
		t.Fatal(err)
	}
	st, err := r.Stats("adder", "1")
	if err != nil || st.Quantile(0.99) != 0 || st.ErrorRate() != 0 {
		t.Fatalf("empty stats: %v %v", st.Quantile(0.99), err)
	}
	for i := 0; i < 50; i++ {
		runAdder(t, r, 1)
	}
	st, _ = r.Stats("adder", "1")
	later := st
	later.Requests += 10
	if w := later.Sub(st); w.Requests != 10 || w.Successes() != 0 {
		t.Errorf("window: %+v", w)
	}
	p50, p99 := st.Quantile(0.5), st.Quantile(0.99)
	if p50 <= 0 || p99 < p50 || st.LatencySum <= 0 {
		t.Errorf("p50 %v p99 %v sum %v", p50, p99, st.LatencySum)
	}
	for i, d := range []time.Duration{time.Microsecond, 2 * time.Microsecond, 1024 * time.Microsecond, 1 << 20 * time.Microsecond} {
		b := inference.LatencyBound(4 * int(math.Log2(float64(d/time.Microsecond))))
		if math.Abs(float64(b-d)) > float64(d)/1e6 {
			t.Errorf("%d: bound %v for %v", i, b, d)
		}
	}
}

func fp32(shape []int64, vs ...float32) inference.Tensor {
	return inference.Tensor{Name: "y", DataType: inference.FP32, Shape: shape, Data: f32(vs...)}
}

func TestCompareOutputs(t *testing.T) {
	nan := float32(math.NaN())
	for _, tc := range []struct {
		name      string
		p, c      inference.Tensor
		maxAbs    float64
		cos       float64
		rows, agr uint64
		mismatch  bool
	}{
		{"same", fp32([]int64{2, 2}, 1, 2, 3, 4), fp32([]int64{2, 2}, 1, 2, 3, 4), 0, 0, 2, 2, false},
		{"close", fp32([]int64{1, 3}, 1, 2, 3), fp32([]int64{1, 3}, 1, 2, 3.5), 0.5, -1, 1, 1, false},
		{"argmax flips", fp32([]int64{2, 2}, 1, 2, 4, 3), fp32([]int64{2, 2}, 2, 1, 4, 3), 1, -1, 2, 1, false},
		{"opposite", fp32([]int64{2}, 1, 1), fp32([]int64{2}, -1, -1), 2, 2, 1, 1, false},
		{"zero vs not", fp32([]int64{1}, 0), fp32([]int64{1}, 1), 1, 1, 0, 0, false},
		{"nan both", fp32([]int64{1}, nan), fp32([]int64{1}, nan), 0, 0, 0, 0, false},
		{"nan one", fp32([]int64{1}, nan), fp32([]int64{1}, 1), math.Inf(1), -1, 0, 0, false},
		{"shape", fp32([]int64{2}, 1, 2), fp32([]int64{1, 2}, 1, 2), math.Inf(1), 0, 0, 0, true},
		{"type", fp32([]int64{1}, 1), inference.Tensor{Name: "y", DataType: inference.Int32, Shape: []int64{1}, Data: make([]byte, 4)}, math.Inf(1), 0, 0, 0, true},
		{"name", fp32([]int64{1}, 1), inference.Tensor{Name: "z", DataType: inference.FP32, Shape: []int64{1}, Data: f32(1)}, math.Inf(1), 0, 0, 0, true},
	} {
		d := inference.CompareOutputs([]inference.Tensor{tc.p}, []inference.Tensor{tc.c})
		if (d.Mismatch != "") != tc.mismatch || d.MaxAbsDiff != tc.maxAbs || d.ArgmaxRows != tc.rows || d.ArgmaxAgree != tc.agr {
			t.Errorf("%s: %+v", tc.name, d)
		}
		if tc.cos >= 0 && !tc.mismatch && math.Abs(d.CosineSum-tc.cos) > 1e-9 {
			t.Errorf("%s: cosine distance %v, want %v", tc.name, d.CosineSum, tc.cos)
		}
	}
	// A small perturbation gives a small, positive cosine distance.
	d := inference.CompareOutputs([]inference.Tensor{fp32([]int64{3}, 1, 2, 3)}, []inference.Tensor{fp32([]int64{3}, 1, 2, 3.5)})
	if d.CosineSum <= 0 || d.CosineSum > 0.01 || d.CosineN != 1 {
		t.Errorf("perturbed: %+v", d)
	}
}
