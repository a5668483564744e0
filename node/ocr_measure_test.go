package node

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
	"github.com/edgeai/edge-node/inference/pipeline"
)

// sessionRunner runs the members in process on sessions loaded with the
// node's session options (intra_op_threads: 1): the floor under the
// ensemble, no HTTP.
type sessionRunner map[string]*inference.Session

func (s sessionRunner) RunMember(ctx context.Context, m pipeline.Member, in inference.Tensor, a inference.Allocator) (inference.Tensor, error) {
	out, err := s[m.Model].Run(ctx, []inference.Tensor{in}, nil, a)
	if err != nil {
		return inference.Tensor{}, err
	}
	return out[0], nil
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func medianF(f []float64) (med, lo, hi float64) {
	s := append([]float64(nil), f...)
	sort.Float64s(s)
	return s[len(s)/2], s[0], s[len(s)-1]
}

// stageSums reads the ensemble's stage time sums from /metrics.
func stageSums(t testing.TB, url string) map[string]float64 {
	_, _, b := call(t, http.MethodGet, url+"/metrics", nil, nil)
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, `edge_pipeline_step_duration_seconds_sum{model="ocr",step="`) {
			continue
		}
		rest := strings.TrimPrefix(l, `edge_pipeline_step_duration_seconds_sum{model="ocr",step="`)
		stage := rest[:strings.IndexByte(rest, '"')]
		v, _ := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
		out[stage] = v
	}
	return out
}

// TestMeasureOCR compares, side by side in interleaved rounds, the ocr
// ensemble (one REST call with the JPEG) against the client-side pipeline
// (the same steps on the client, the three models over REST: det, then
// cls and rec per line) and against the same steps in process on bare
// sessions (no HTTP). It logs per-round medians, the median of per-round
// ratios with their spread, bytes on the wire and the ensemble's time per
// stage. Figures only, no assertion on time: EDGE_OCR_MEASURE=1.
func TestMeasureOCR(t *testing.T) {
	if os.Getenv("EDGE_OCR_MEASURE") == "" {
		t.Skip("set EDGE_OCR_MEASURE=1 to measure (docs/performance.md)")
	}
	rounds, perRound := 7, 10
	rn := startNode(t, testConfig(t, t.TempDir(), ocrRepo(t, nil)))
	img := encodeImage(t, inferencetest.RenderText(t, 960, 400, 36,
		"Images in, answers out", "KServe v2 on the edge: 42 frames", "PP-OCR det cls rec", "camera 7 at 12:30"), "jpeg")
	client := clientPipeline(t)
	env := inferencetest.Env(t)
	local := sessionRunner{}
	for _, m := range []string{"ppocr_det", "ppocr_cls", "ppocr_rec"} {
		s, err := env.Load(context.Background(), inference.LoadSpec{Model: m, Version: "1", Path: inferencetest.ModelPath(t, m),
			Config: inference.SessionConfig{IntraOpThreads: 1}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		local[m] = s
	}
	var ensWire, cliWire int
	ensemble := func() {
		status, res, msg, wire := postOCR(t, rn.url, "ocr", img)
		if status != http.StatusOK || len(res.Text) != 4 {
			t.Fatalf("ensemble: HTTP %d %s %q", status, msg, res.Text)
		}
		ensWire = wire
	}
	clientSide := func() {
		r := &restRunner{t: t, url: rn.url}
		lines, err := client.Recognise(context.Background(), r, inference.HeapAllocator{}, img, nil)
		if err != nil || len(lines) != 4 {
			t.Fatalf("client side: %v, %d lines", err, len(lines))
		}
		cliWire = r.wire
	}
	inProcess := func() {
		if _, err := client.Recognise(context.Background(), local, inference.HeapAllocator{}, img, nil); err != nil {
			t.Fatal(err)
		}
	}
	floor := func() {
		if status, _, _ := call(t, http.MethodGet, rn.url+"/v2/health/live", nil, nil); status != http.StatusOK {
			t.Fatal(status)
		}
	}
	arms := []struct {
		name string
		run  func()
	}{{"ensemble", ensemble}, {"client", clientSide}, {"in-process", inProcess}, {"http-floor", floor}}
	for _, a := range arms { // warm-up
		a.run()
	}
	before := stageSums(t, rn.url)
	med := make([][]time.Duration, len(arms))
	for r := range rounds {
		for i, a := range arms {
			var d []time.Duration
			for range perRound {
				start := time.Now()
				a.run()
				d = append(d, time.Since(start))
			}
			med[i] = append(med[i], median(d))
		}
		t.Logf("round %d: ensemble %v, client %v, in-process %v, floor %v", r, med[0][r], med[1][r], med[2][r], med[3][r])
	}
	after := stageSums(t, rn.url)
	ratio := func(a, b int) string {
		var f []float64
		for r := range rounds {
			f = append(f, float64(med[a][r])/float64(med[b][r]))
		}
		m, lo, hi := medianF(f)
		return strconv.FormatFloat(m, 'f', 2, 64) + "× [" + strconv.FormatFloat(lo, 'f', 2, 64) + "–" + strconv.FormatFloat(hi, 'f', 2, 64) + "]"
	}
	t.Logf("p50 of round medians: ensemble %v, client %v, in-process %v, floor %v", median(med[0]), median(med[1]), median(med[2]), median(med[3]))
	t.Logf("client / ensemble: %s; ensemble / in-process: %s", ratio(1, 0), ratio(0, 2))
	t.Logf("bytes on the wire per image: ensemble %d, client side %d (%.1f×)", ensWire, cliWire, float64(cliWire)/float64(ensWire))
	n := float64(rounds * perRound)
	for _, s := range pipeline.Stages {
		t.Logf("ensemble stage %-8s %8.2f ms per image", s, 1000*(after[s]-before[s])/n)
	}
}
