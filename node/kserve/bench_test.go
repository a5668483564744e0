package kserve

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/cgo/pinned"
	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
	"github.com/edgeai/edge-node/node/kserve/kservetest"
)

// newTestPool returns a real pinned buffer pool (whatever mode this machine
// allows: mlock here, cudaHostAlloc where libcudart and a GPU are present)
// and its lease factory in the handler's Options shape.
func newTestPool(t testing.TB) (*pinned.Pool, func() (inference.Allocator, func())) {
	t.Helper()
	opts := pinned.DefaultOptions()
	opts.MaxWait = 5 * time.Second
	p, err := pinned.NewPool(opts, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, func() (inference.Allocator, func()) {
		l := p.Lease()
		return l, l.Release
	}
}

// discardWriter is a ResponseWriter that drops the body, for measuring the
// handler alone.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }

// heapBytesPerRequest serves body n times in process and returns the Go
// heap bytes allocated per request.
func heapBytesPerRequest(t testing.TB, h http.Handler, path string, header http.Header, body []byte, n int) float64 {
	rd := bytes.NewReader(body)
	w := &discardWriter{h: http.Header{}}
	serve := func() {
		rd.Reset(body)
		r := httptest.NewRequest("POST", path, rd)
		r.Header = header
		clear(w.h)
		w.code = 0
		h.ServeHTTP(w, r)
		if w.code != 200 {
			t.Fatalf("status %d", w.code)
		}
	}
	for i := 0; i < 3; i++ { // warm the pools
		serve()
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < n; i++ {
		serve()
	}
	runtime.ReadMemStats(&after)
	return float64(after.TotalAlloc-before.TotalAlloc) / float64(n)
}

// The zero-copy path: a 4.9 MB binary request allocates on the Go heap less
// than 1% of its payload (no payload-sized Go allocation at all), because the
// request's tensors live in the pinned pool; after warm-up the pool makes no
// C allocation per request. The plain path (heap allocator) is measured
// beside it for the ratio. This includes the inference package's garbage.
func TestBinaryRequestHeapBytes(t *testing.T) {
	b := newTestBackend(t)
	pool, lease := newTestPool(t)
	pinnedH, _ := newTestHandler(t, b, func(o *Options) { o.NewAllocator = lease })
	plainH, _ := newTestHandler(t, b, nil)
	in := kservetest.DetInput(640)
	body, n := kservetest.BinaryRequest(t, "", in, true)
	header := http.Header{headerContentLength: {strconv.Itoa(n)}}
	payload := float64(len(in[0].Data))

	plain := heapBytesPerRequest(t, plainH, "/v2/models/ppocr_det/infer", header, body, 3)
	cBefore := pool.Stats().CAllocs
	perReq := heapBytesPerRequest(t, pinnedH, "/v2/models/ppocr_det/infer", header, body, 3)
	// heapBytesPerRequest warms up with 3 requests before measuring; the
	// pool may allocate during those, never after.
	warm := pool.Stats().CAllocs
	perReq2 := heapBytesPerRequest(t, pinnedH, "/v2/models/ppocr_det/infer", header, body, 3)
	t.Logf("heap bytes per %d-byte binary request: pinned %.0f (%.3f%% of the payload), plain %.0f (%.1f%%); pool C allocations: %d during the first warm-up, %d after",
		len(in[0].Data), perReq, 100*perReq/payload, plain, 100*plain/payload, warm-cBefore, pool.Stats().CAllocs-warm)
	if perReq > payload/100 || perReq2 > payload/100 {
		t.Errorf("heap bytes per request %.0f / %.0f is over 1%% of the %.0f-byte payload", perReq, perReq2, payload)
	}
	if plain < payload {
		t.Errorf("plain path allocated %.0f heap bytes per request, less than the payload: is it really the heap path?", plain)
	}
	if c := pool.Stats().CAllocs - warm; c != 0 {
		t.Errorf("%d C allocations in 3 warm requests, want 0", c)
	}
}

// benchCase is one model and input for the benchmarks.
type benchCase struct {
	model  string
	inputs []inference.Tensor
}

func benchCases() []benchCase {
	return []benchCase{{"silero_vad", kservetest.SileroInputs()}, {"ppocr_det", kservetest.DetInput(640)}}
}

// reportLatency reports p50 and p99 of the per-request durations.
func reportLatency(b *testing.B, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	q := func(p float64) float64 { return float64(d[int(p*float64(len(d)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
}

// BenchmarkInfer compares, in one run, a raw onnxruntime_go Run
// (inferencetest's RawSession) with the same request through the node's
// handler over a real loopback HTTP server, JSON and binary, on the plain
// path (tensors on the Go heap: the serving issue's baseline) and on the
// zero-copy path (tensors in the pinned pool), plus the binary handler alone
// in process. Reported: p50/p99 per request, Go heap B/op and allocs/op, and
// for the pinned path C allocations per request after warm-up.
func BenchmarkInfer(b *testing.B) {
	backend := newTestBackend(b)
	pool, lease := newTestPool(b)
	handlers := map[string]http.Handler{}
	for _, path := range []string{"plain", "pinned"} {
		h, _ := newTestHandler(b, backend, func(o *Options) {
			if path == "pinned" {
				o.NewAllocator = lease
			}
			o.MaxBodyBytes = 256 << 20
		})
		handlers[path] = h
	}
	servers := map[string]*httptest.Server{}
	for path, h := range handlers {
		servers[path] = httptest.NewServer(h)
		defer servers[path].Close()
	}

	// The transport floor: a GET /v2/health/live round trip over the same
	// loopback client and server, no model involved. The node's overhead over
	// a raw run is the floor plus what the handler adds.
	b.Run("http-floor", func(b *testing.B) {
		srv := servers["pinned"]
		client := srv.Client()
		d := make([]time.Duration, 0, b.N)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			t0 := time.Now()
			resp, err := client.Get(srv.URL + "/v2/health/live")
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
			d = append(d, time.Since(t0))
		}
		b.StopTimer()
		reportLatency(b, d)
	})
	for _, bc := range benchCases() {
		path := "/v2/models/" + bc.model + "/infer"
		b.Run(bc.model+"/raw", func(b *testing.B) {
			raw := inferencetest.OpenRaw(b, inferencetest.ModelPath(b, bc.model), 1)
			d := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				if _, err := raw.Run(bc.inputs); err != nil {
					b.Fatal(err)
				}
				d = append(d, time.Since(t0))
			}
			b.StopTimer()
			reportLatency(b, d)
		})
		jsonBody := kservetest.JSONRequest(b, "", bc.inputs, nil, false)
		binBody, hl := kservetest.BinaryRequest(b, "", bc.inputs, true)
		for _, mode := range []struct {
			name   string
			body   []byte
			header http.Header
		}{
			// Accept-Encoding identity: Go's transport would ask for gzip.
			{"json", jsonBody, http.Header{"Content-Type": {"application/json"}, "Accept-Encoding": {"identity"}}},
			{"binary", binBody, http.Header{headerContentLength: {strconv.Itoa(hl)}, "Content-Type": {"application/octet-stream"}, "Accept-Encoding": {"identity"}}},
		} {
			for _, alloc := range []string{"plain", "pinned"} {
				srv := servers[alloc]
				b.Run(bc.model+"/http-"+mode.name+"-"+alloc, func(b *testing.B) {
					client := srv.Client()
					d := make([]time.Duration, 0, b.N)
					rd := bytes.NewReader(mode.body)
					send := func() {
						rd.Reset(mode.body)
						req, err := http.NewRequest("POST", srv.URL+path, rd)
						if err != nil {
							b.Fatal(err)
						}
						req.Header = mode.header
						resp, err := client.Do(req)
						if err != nil {
							b.Fatal(err)
						}
						_, err = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if err != nil || resp.StatusCode != 200 {
							b.Fatalf("status %d, %v", resp.StatusCode, err)
						}
					}
					send() // warm the connection, the pool and the shape cache
					c0 := pool.Stats().CAllocs
					b.SetBytes(int64(len(mode.body)))
					b.ReportAllocs()
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						t0 := time.Now()
						send()
						d = append(d, time.Since(t0))
					}
					b.StopTimer()
					reportLatency(b, d)
					if alloc == "pinned" {
						b.ReportMetric(float64(pool.Stats().CAllocs-c0)/float64(b.N), "C-allocs/op")
					}
				})
			}
		}
		for _, alloc := range []string{"plain", "pinned"} {
			h := handlers[alloc]
			b.Run(bc.model+"/handler-binary-"+alloc, func(b *testing.B) {
				header := http.Header{headerContentLength: {strconv.Itoa(hl)}}
				rd := bytes.NewReader(binBody)
				w := &discardWriter{h: http.Header{}}
				serve := func() {
					rd.Reset(binBody)
					r := httptest.NewRequest("POST", path, rd)
					r.Header = header
					clear(w.h)
					h.ServeHTTP(w, r)
					if w.code != 200 {
						b.Fatalf("status %d", w.code)
					}
				}
				serve()
				d := make([]time.Duration, 0, b.N)
				b.SetBytes(int64(len(binBody)))
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					t0 := time.Now()
					serve()
					d = append(d, time.Since(t0))
				}
				b.StopTimer()
				reportLatency(b, d)
			})
		}
	}
}
