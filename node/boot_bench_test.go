package node

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/edgeai/edge-node/inference/inferencetest"
)

// BenchmarkBootToReady measures an offline boot: a data dir whose store
// already holds three Active models (silero_vad, ppocr_cls, ppocr_det), no
// model repository, no broker. One iteration is New (store open, boot check
// with the default policy — re-hash of the Active versions — and three
// sessions loaded) → Run → the first 200 from /v2/health/ready → shutdown.
// Reported: boot-ms (New until ready) per boot.
func BenchmarkBootToReady(b *testing.B) {
	data, repo := b.TempDir(), b.TempDir()
	for _, m := range []string{"silero_vad", "ppocr_cls", "ppocr_det"} {
		addToRepo(b, repo, m, "1", modelBytes(b, m, ""))
	}
	// The first boot imports the repository into the store.
	rn := startNode(b, testConfig(b, data, repo))
	rn.stop(b)
	cfg := testConfig(b, data, "")
	env := inferencetest.Env(b)
	var total time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		n, err := newNode(context.Background(), cfg, testLogger(b), env)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- n.Run(ctx) }()
		for {
			resp, err := http.Get("http://" + n.Addr() + "/v2/health/ready")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			time.Sleep(time.Millisecond)
		}
		total += time.Since(t0)
		b.StopTimer()
		if got := len(n.router.Index()); got != 3 {
			b.Fatalf("%d versions routed after an offline boot, want 3", got)
		}
		cancel()
		<-done
		n.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "boot-ms")
}
