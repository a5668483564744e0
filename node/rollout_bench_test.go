package node

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/edgeai/edge-node/node/serving"
)

// BenchmarkShadowPrimaryPath measures what a shadow costs the requests it
// mirrors: one client posts to /infer over loopback (rollout_base, a tiny
// model, so the mirror's own overhead — copying inputs and outputs, a
// goroutine, the shadow run competing for the cores — is what shows) with
// no shadow, then with a same-model shadow mirroring 100 %. Reports the
// client-side p50 and p99 latency.
//
//	go test ./node -run '^$' -bench BenchmarkShadowPrimaryPath -benchtime 2000x
func BenchmarkShadowPrimaryPath(b *testing.B) {
	n := newRolloutNode(b, nil)
	startWith(b, n)
	importAs(b, n, "m", "2", rolloutModel("rollout_base"), nil)
	c := &http.Client{}
	run := func(b *testing.B) {
		for i := 0; i < 200; i++ { // warm-up
			infer(b, c, n, "", input(i))
		}
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			r := infer(b, c, n, "", input(i))
			if r.status != http.StatusOK || r.version != "1" {
				b.Fatalf("status %d version %q", r.status, r.version)
			}
			lat = append(lat, r.took)
		}
		b.StopTimer()
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
	b.Run("no-shadow", run)
	if err := n.serving.StartRollout(context.Background(), "m", "2", strategy(b, `{"kind":"shadow","shadow_percent":100,"min_requests":1000000000}`), serving.Admin{}); err != nil {
		b.Fatal(err)
	}
	for {
		if tr, _ := n.router.Traffic("m"); tr.Shadow == "2" {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.Run("shadow-100pct", run)
	st, _ := n.router.Stats("m", "2")
	tr, _ := n.router.Traffic("m")
	b.Logf("shadow runs %d, skipped (no free slot) %d", st.Requests, tr.ShadowSkipped)
}
