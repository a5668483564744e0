package node

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
)

// reuseAllocator hands out buffers from free lists by size and takes them
// back when its lease is released: the shape of the pinned pool (whose
// memory is outside the Go heap), so that what the benchmarks and the
// allocation test measure is the HTTP layer's own garbage, not the tensors'.
type reuseAllocator struct {
	mu   sync.Mutex       // guards free
	free map[int][][]byte // by exact size
}

type reuseLease struct {
	a    *reuseAllocator
	mu   sync.Mutex // guards held
	held [][]byte
}

func (a *reuseAllocator) newLease() (inference.Allocator, func()) {
	l := &reuseLease{a: a}
	return l, l.release
}

func (l *reuseLease) Alloc(_ context.Context, n int) ([]byte, error) {
	l.a.mu.Lock()
	var b []byte
	if list := l.a.free[n]; len(list) > 0 {
		b, l.a.free[n] = list[len(list)-1], list[:len(list)-1]
	}
	l.a.mu.Unlock()
	if b == nil {
		b = make([]byte, n)
	}
	l.mu.Lock()
	l.held = append(l.held, b)
	l.mu.Unlock()
	return b, nil
}

func (l *reuseLease) release() {
	l.a.mu.Lock()
	for _, b := range l.held {
		l.a.free[len(b)] = append(l.a.free[len(b)], b)
	}
	l.a.mu.Unlock()
	l.held = nil
}

func newReuseAllocator() *reuseAllocator { return &reuseAllocator{free: map[int][][]byte{}} }

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

// The binary path allocates on the Go heap less than 1% of a 4.9 MB
// payload per request when tensors come from a reusing allocator (as the
// pinned pool's do). This includes the inference package's own garbage.
func TestBinaryRequestHeapBytes(t *testing.T) {
	b := newTestBackend(t)
	a := newReuseAllocator()
	h, _ := newTestHandler(t, b, func(o *Options) { o.NewAllocator = a.newLease })
	in := detInput(640)
	body, n := binaryRequest(t, "", in, true)
	header := http.Header{headerContentLength: {strconv.Itoa(n)}}
	perReq := heapBytesPerRequest(t, h, "/v2/models/ppocr_det/infer", header, body, 3)
	payload := float64(len(in[0].Data))
	t.Logf("heap bytes per %d-byte binary request: %.0f (%.3f%% of the payload)", len(in[0].Data), perReq, 100*perReq/payload)
	if perReq > payload/100 {
		t.Errorf("heap bytes per request %.0f is over 1%% of the %.0f-byte payload", perReq, payload)
	}
}

// benchCase is one model and input for the benchmarks.
type benchCase struct {
	model  string
	inputs []inference.Tensor
}

func benchCases() []benchCase {
	return []benchCase{{"silero_vad", sileroInputs()}, {"ppocr_det", detInput(640)}}
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

// BenchmarkInfer compares a raw onnxruntime_go Run (inferencetest's
// RawSession) with the same request through the handler over a real
// loopback HTTP server, JSON and binary, and with the handler alone in
// process ("handler-binary": what the node itself allocates). Tensor
// buffers come from a reusing allocator, as the pinned pool's would.
func BenchmarkInfer(b *testing.B) {
	backend := newTestBackend(b)
	a := newReuseAllocator()
	h, _ := newTestHandler(b, backend, func(o *Options) {
		o.NewAllocator = a.newLease
		o.MaxBodyBytes = 256 << 20
	})
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := srv.Client()

	for _, bc := range benchCases() {
		path := "/v2/models/" + bc.model + "/infer"
		b.Run(bc.model+"/raw", func(b *testing.B) {
			raw := inferencetest.OpenRaw(b, inferencetest.ModelPath(b, bc.model), 2)
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
		jsonBody := jsonRequest(b, "", bc.inputs, nil, false)
		binBody, hl := binaryRequest(b, "", bc.inputs, true)
		for _, mode := range []struct {
			name   string
			body   []byte
			header http.Header
		}{
			{"http-json", jsonBody, http.Header{"Content-Type": {"application/json"}}},
			{"http-binary", binBody, http.Header{headerContentLength: {strconv.Itoa(hl)}, "Content-Type": {"application/octet-stream"}}},
		} {
			b.Run(bc.model+"/"+mode.name, func(b *testing.B) {
				d := make([]time.Duration, 0, b.N)
				rd := bytes.NewReader(mode.body)
				b.SetBytes(int64(len(mode.body)))
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					t0 := time.Now()
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
					d = append(d, time.Since(t0))
				}
				b.StopTimer()
				reportLatency(b, d)
			})
		}
		b.Run(bc.model+"/handler-binary", func(b *testing.B) {
			header := http.Header{headerContentLength: {strconv.Itoa(hl)}}
			rd := bytes.NewReader(binBody)
			w := &discardWriter{h: http.Header{}}
			d := make([]time.Duration, 0, b.N)
			b.SetBytes(int64(len(binBody)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				rd.Reset(binBody)
				r := httptest.NewRequest("POST", path, rd)
				r.Header = header
				clear(w.h)
				h.ServeHTTP(w, r)
				if w.code != 200 {
					b.Fatalf("status %d", w.code)
				}
				d = append(d, time.Since(t0))
			}
			b.StopTimer()
			reportLatency(b, d)
		})
	}
}
