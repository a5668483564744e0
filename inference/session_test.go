package inference_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
)

// load loads a model version from the shared environment and closes it at
// the end of the test.
func load(t testing.TB, path string, cfg inference.SessionConfig) *inference.Session {
	t.Helper()
	s, err := inferencetest.Env(t).Load(context.Background(), inference.LoadSpec{
		Model: strings.TrimSuffix(filepath.Base(path), ".onnx"), Version: "1", Path: path, Config: cfg,
	})
	if err != nil {
		t.Fatalf("load %s: %v", path, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

func testModel(name string) string { return filepath.Join("testdata", name+".onnx") }

func f32(vs ...float32) []byte {
	b, _ := binary.Append(nil, binary.LittleEndian, vs)
	return b
}

func i64(vs ...int64) []byte {
	b, _ := binary.Append(nil, binary.LittleEndian, vs)
	return b
}

// detBytes is n deterministic float32 values in [-1, 1) as bytes.
func detFloats(n int, seed uint32) []byte {
	b := make([]byte, 4*n)
	x := seed
	for i := 0; i < n; i++ {
		x = x*1664525 + 1013904223
		v := float32(x>>8)/float32(1<<24)*2 - 1
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

func sileroInputs() []inference.Tensor {
	frame := make([]float32, 512)
	for i := range frame {
		frame[i] = float32(0.5 * math.Sin(2*math.Pi*440*float64(i)/16000))
	}
	return []inference.Tensor{
		{Name: "input", DataType: inference.FP32, Shape: []int64{1, 512}, Data: f32(frame...)},
		{Name: "sr", DataType: inference.Int64, Shape: []int64{}, Data: i64(16000)},
		{Name: "h", DataType: inference.FP32, Shape: []int64{2, 1, 64}, Data: make([]byte, 2*64*4)},
		{Name: "c", DataType: inference.FP32, Shape: []int64{2, 1, 64}, Data: make([]byte, 2*64*4)},
	}
}

func ppocrDetInputs() []inference.Tensor {
	return []inference.Tensor{{Name: "x", DataType: inference.FP32, Shape: []int64{1, 3, 640, 640}, Data: detFloats(3*640*640, 7)}}
}

func requireSameTensors(t *testing.T, got, want []inference.Tensor) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d outputs, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Name != w.Name || g.DataType != w.DataType || fmt.Sprint(g.Shape) != fmt.Sprint(w.Shape) {
			t.Fatalf("output %d: got %s %v %v, want %s %v %v", i, g.Name, g.DataType, g.Shape, w.Name, w.DataType, w.Shape)
		}
		if !bytes.Equal(g.Data, w.Data) {
			t.Fatalf("output %q: bytes differ from the reference (%d vs %d bytes)", g.Name, len(g.Data), len(w.Data))
		}
		if len(g.Strings) != len(w.Strings) {
			t.Fatalf("output %q: %d strings, want %d", g.Name, len(g.Strings), len(w.Strings))
		}
		for j := range w.Strings {
			if !bytes.Equal(g.Strings[j], w.Strings[j]) {
				t.Fatalf("output %q string %d: %q, want %q", g.Name, j, g.Strings[j], w.Strings[j])
			}
		}
	}
}

// TestRealModelsMatchRaw runs the sample models through Session and through
// plain onnxruntime_go and wants the same bytes: on the first run (output
// shape unknown: ORT allocates, one copy) and the second (shape learned:
// written in place).
func TestRealModelsMatchRaw(t *testing.T) {
	for _, tc := range []struct {
		model  string
		inputs []inference.Tensor
	}{
		{"silero_vad", sileroInputs()},
		{"ppocr_det", ppocrDetInputs()},
	} {
		t.Run(tc.model, func(t *testing.T) {
			path := inferencetest.ModelPath(t, tc.model)
			want := inferencetest.RawRun(t, path, tc.inputs)
			s := load(t, path, inference.SessionConfig{})
			if s.Provider() != inference.ProviderCPU {
				t.Errorf("provider %q, want cpu", s.Provider())
			}
			for run := 0; run < 2; run++ {
				got, st, err := s.RunWithStats(context.Background(), tc.inputs, nil, inference.HeapAllocator{})
				if err != nil {
					t.Fatalf("run %d: %v", run, err)
				}
				requireSameTensors(t, got, want)
				if run == 1 && !st.Preallocated {
					t.Errorf("second run with the same input shapes was not preallocated: %+v", st)
				}
			}
			// A non-heap allocator: outputs must live in its buffers.
			alloc := &countingAlloc{}
			got, err := s.Run(context.Background(), tc.inputs, nil, alloc)
			if err != nil {
				t.Fatal(err)
			}
			requireSameTensors(t, got, want)
			for _, o := range got {
				if !alloc.owns(o.Data) {
					t.Errorf("output %q is not in the allocator's memory", o.Name)
				}
			}
		})
	}
}

// countingAlloc hands out heap buffers and remembers them.
type countingAlloc struct {
	// mu guards bufs.
	mu   sync.Mutex
	bufs [][]byte
}

func (a *countingAlloc) Alloc(_ context.Context, n int) ([]byte, error) {
	b := make([]byte, n, n+1) // never empty-backed, so owns() can compare pointers
	a.mu.Lock()
	a.bufs = append(a.bufs, b)
	a.mu.Unlock()
	return b, nil
}

func (a *countingAlloc) owns(b []byte) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, x := range a.bufs {
		if len(b) == len(x) && (len(b) == 0 || &b[0] == &x[0]) {
			return true
		}
	}
	return false
}

func TestModelMetadata(t *testing.T) {
	s := load(t, inferencetest.ModelPath(t, "silero_vad"), inference.SessionConfig{})
	got := fmt.Sprint(s.Inputs())
	want := "[{input FP32 [-1 -1]} {sr INT64 []} {h FP32 [2 -1 64]} {c FP32 [2 -1 64]}]"
	if got != want {
		t.Errorf("inputs %s, want %s", got, want)
	}
	if n := len(s.Outputs()); n != 3 {
		t.Errorf("%d outputs, want 3", n)
	}
	if s.Platform() != "onnxruntime_onnx" || s.Name() != "model" || s.Version() != "1" {
		t.Errorf("identity: %s %s %s", s.Platform(), s.Name(), s.Version())
	}
}

// TestDataTypesRoundTrip sends every dtype through an Identity model, with
// the heap allocator and with a non-heap one, twice each (ORT-allocated,
// then preallocated from the learned shape).
func TestDataTypesRoundTrip(t *testing.T) {
	for d := inference.Bool; d <= inference.Bytes; d++ {
		name := strings.ToLower(d.String())
		switch d {
		case inference.Bytes:
			name = "string"
		}
		t.Run(d.String(), func(t *testing.T) {
			s := load(t, testModel("identity_"+name), inference.SessionConfig{})
			in := inference.Tensor{Name: "x", DataType: d, Shape: []int64{3, 2}}
			if d == inference.Bytes {
				in.Strings = [][]byte{[]byte("a"), {}, []byte("héllo"), []byte("\xff\x01"), []byte("x y"), []byte("last")}
			} else {
				in.Data = make([]byte, 6*d.Size())
				for i := range in.Data {
					in.Data[i] = byte(i*37 + 11)
				}
				if d == inference.Bool {
					for i := range in.Data {
						in.Data[i] &= 1
					}
				}
			}
			want := in
			want.Name = "y"
			for _, alloc := range []inference.Allocator{inference.HeapAllocator{}, &countingAlloc{}} {
				for run := 0; run < 2; run++ {
					got, st, err := s.RunWithStats(context.Background(), []inference.Tensor{in}, []string{"y"}, alloc)
					if err != nil {
						t.Fatalf("%T run %d: %v", alloc, run, err)
					}
					requireSameTensors(t, got, []inference.Tensor{want})
					if d != inference.Bytes && run == 1 && !st.Preallocated {
						t.Errorf("%T run %d not preallocated: %+v", alloc, run, st)
					}
				}
			}
		})
	}
}

// TestOnnxruntimeGoLowFloatOutputBug pins the onnxruntime_go v1.27.0 bug
// that Session works around: it copies an ORT-allocated FP16/BF16 output
// into a buffer of FlattenedSize() bytes (half the data) and ONNX Runtime
// rejects that buffer, so the plain Run fails. When this test fails,
// onnxruntime_go copies such outputs properly and Session's shape probing
// for them (Session.run) can go.
func TestOnnxruntimeGoLowFloatOutputBug(t *testing.T) {
	for _, name := range []string{"fp16", "bf16"} {
		dt, _ := inference.ParseDataType(strings.ToUpper(name))
		in := inference.Tensor{Name: "x", DataType: dt, Shape: []int64{3, 2}, Data: []byte("abcdefghijkl")}
		out, err := inferencetest.OpenRaw(t, testModel("identity_"+name), 0).Run([]inference.Tensor{in})
		if err == nil {
			t.Errorf("%s: plain onnxruntime_go run returned %d of 12 bytes without error: the bug is gone or changed, revisit Session.run", name, len(out[0].Data))
			continue
		}
		t.Logf("%s: onnxruntime_go: %v", name, err)
	}
}

func TestScalarInputAndOutput(t *testing.T) {
	s := load(t, testModel("scalar_add"), inference.SessionConfig{})
	got, st, err := s.RunWithStats(context.Background(), []inference.Tensor{
		{Name: "a", DataType: inference.FP32, Shape: []int64{}, Data: f32(2.5)},
		{Name: "b", DataType: inference.FP32, Shape: []int64{3}, Data: f32(1, 2, 3)},
	}, nil, inference.HeapAllocator{})
	if err != nil {
		t.Fatal(err)
	}
	requireSameTensors(t, got, []inference.Tensor{
		{Name: "sum", DataType: inference.FP32, Shape: []int64{3}, Data: f32(3.5, 4.5, 5.5)},
		{Name: "twice", DataType: inference.FP32, Shape: []int64{}, Data: f32(5)},
	})
	if !st.Preallocated || st.Runs != 1 {
		t.Errorf("static outputs: want one preallocated run, got %+v", st)
	}
}

func TestDynamicOutputShapes(t *testing.T) {
	s := load(t, testModel("dynamic_concat"), inference.SessionConfig{})
	for i, tc := range []struct {
		shape    []int64
		prealloc bool
	}{
		{[]int64{2, 3}, false},
		{[]int64{2, 3}, true},
		{[]int64{1, 2}, false},
		{[]int64{2, 3}, true},
		{[]int64{0, 3}, false},
		{[]int64{0, 3}, true},
	} {
		n := int(tc.shape[0] * tc.shape[1])
		data := detFloats(n, uint32(i))
		got, st, err := s.RunWithStats(context.Background(), []inference.Tensor{{Name: "x", DataType: inference.FP32, Shape: tc.shape, Data: data}}, nil, inference.HeapAllocator{})
		if err != nil {
			t.Fatalf("%v: %v", tc.shape, err)
		}
		want := inference.Tensor{Name: "y", DataType: inference.FP32, Shape: []int64{2 * tc.shape[0], tc.shape[1]}, Data: append(append([]byte{}, data...), data...)}
		if n == 0 {
			want.Data = nil
		}
		got[0].Data = append([]byte(nil), got[0].Data...)
		if len(got[0].Data) == 0 {
			got[0].Data = nil
		}
		requireSameTensors(t, got, []inference.Tensor{want})
		if st.Preallocated != tc.prealloc {
			t.Errorf("run %d %v: preallocated %v, want %v", i, tc.shape, st.Preallocated, tc.prealloc)
		}
	}
}

// TestStaleShapeFallsBack: NonZero's output shape depends on the data, so
// the shape learned for an input shape is wrong for other data; the
// preallocated run fails and Session retries with ORT allocation.
func TestStaleShapeFallsBack(t *testing.T) {
	s := load(t, testModel("nonzero"), inference.SessionConfig{})
	for i, tc := range []struct {
		x    []float32
		want []int64
		runs int
	}{
		{[]float32{0, 1, 0, 2}, []int64{1, 3}, 1},
		{[]float32{0, 5, 0, 6}, []int64{1, 3}, 1}, // same shape: preallocated
		{[]float32{1, 1, 1, 0}, []int64{0, 1, 2}, 2},
		{[]float32{0, 0, 0, 3}, []int64{3}, 2},
	} {
		got, st, err := s.RunWithStats(context.Background(), []inference.Tensor{{Name: "x", DataType: inference.FP32, Shape: []int64{4}, Data: f32(tc.x...)}}, nil, inference.HeapAllocator{})
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		requireSameTensors(t, got, []inference.Tensor{{Name: "y", DataType: inference.Int64, Shape: []int64{1, int64(len(tc.want))}, Data: i64(tc.want...)}})
		if st.Runs != tc.runs {
			t.Errorf("run %d: %d ORT runs, want %d (%+v)", i, st.Runs, tc.runs, st)
		}
	}
}

func TestBadInputs(t *testing.T) {
	scalar := load(t, testModel("scalar_add"), inference.SessionConfig{})
	strs := load(t, testModel("identity_string"), inference.SessionConfig{})
	ident := load(t, testModel("identity_fp32"), inference.SessionConfig{})
	a := inference.Tensor{Name: "a", DataType: inference.FP32, Shape: []int64{}, Data: f32(1)}
	b := inference.Tensor{Name: "b", DataType: inference.FP32, Shape: []int64{3}, Data: f32(1, 2, 3)}
	with := func(t inference.Tensor, f func(*inference.Tensor)) inference.Tensor { f(&t); return t }
	for _, tc := range []struct {
		name     string
		model    *inference.Session
		inputs   []inference.Tensor
		outputs  []string
		want     string
		sentinel error
	}{
		{"unknown input", scalar, []inference.Tensor{a, b, {Name: "zz", DataType: inference.FP32, Shape: []int64{1}, Data: f32(1)}}, nil, `no input "zz" (inputs: a, b)`, inference.ErrInvalidArgument},
		{"missing input", scalar, []inference.Tensor{a}, nil, `input "b" missing`, inference.ErrInvalidArgument},
		{"duplicate input", scalar, []inference.Tensor{a, b, a}, nil, `input "a" given twice`, inference.ErrInvalidArgument},
		{"dtype", scalar, []inference.Tensor{a, with(b, func(t *inference.Tensor) { t.DataType = inference.FP64; t.Data = make([]byte, 24) })}, nil, `input "b" is FP64, the model wants FP32`, inference.ErrInvalidArgument},
		{"rank", scalar, []inference.Tensor{a, with(b, func(t *inference.Tensor) { t.Shape = []int64{1, 3} })}, nil, `has shape [1 3] (rank 2), the model wants rank 1 [3]`, inference.ErrInvalidArgument},
		{"fixed dim", scalar, []inference.Tensor{a, with(b, func(t *inference.Tensor) { t.Shape = []int64{4}; t.Data = f32(1, 2, 3, 4) })}, nil, `dimension 0 is 4, the model wants 3`, inference.ErrInvalidArgument},
		{"fixed dim of a variable shape", ident, []inference.Tensor{{Name: "x", DataType: inference.FP32, Shape: []int64{2, 3}, Data: make([]byte, 24)}}, nil, `dimension 1 is 3, the model wants 2 ([-1 2])`, inference.ErrInvalidArgument},
		{"negative dim", ident, []inference.Tensor{{Name: "x", DataType: inference.FP32, Shape: []int64{-2, 2}, Data: make([]byte, 16)}}, nil, `dimension 0 is -2`, inference.ErrInvalidArgument},
		{"short data", scalar, []inference.Tensor{a, with(b, func(t *inference.Tensor) { t.Data = t.Data[:11] })}, nil, `needs 12 bytes, got 11`, inference.ErrInvalidArgument},
		{"long data", scalar, []inference.Tensor{a, with(b, func(t *inference.Tensor) { t.Data = append(t.Data, 0) })}, nil, `needs 12 bytes, got 13`, inference.ErrInvalidArgument},
		{"scalar without data", scalar, []inference.Tensor{with(a, func(t *inference.Tensor) { t.Data = nil }), b}, nil, `needs 4 bytes, got 0`, inference.ErrInvalidArgument},
		{"strings on FP32", scalar, []inference.Tensor{a, with(b, func(t *inference.Tensor) { t.Strings = [][]byte{{1}} })}, nil, `is FP32 but carries strings`, inference.ErrInvalidArgument},
		{"string count", strs, []inference.Tensor{{Name: "x", DataType: inference.Bytes, Shape: []int64{2, 2}, Strings: [][]byte{{'a'}}}}, nil, `needs 4 strings, got 1`, inference.ErrInvalidArgument},
		{"NUL in string", strs, []inference.Tensor{{Name: "x", DataType: inference.Bytes, Shape: []int64{1, 2}, Strings: [][]byte{{'a'}, {'b', 0}}}}, nil, `element 1 contains a NUL byte`, inference.ErrUnsupported},
		{"unknown output", scalar, []inference.Tensor{a, b}, []string{"sum", "nope"}, `no output "nope" (outputs: sum, twice)`, inference.ErrInvalidArgument},
		{"duplicate output", scalar, []inference.Tensor{a, b}, []string{"sum", "sum"}, `output "sum" requested twice`, inference.ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.model.Run(context.Background(), tc.inputs, tc.outputs, inference.HeapAllocator{})
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, tc.sentinel) {
				t.Errorf("error %q does not wrap %v", err, tc.sentinel)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
	// The sessions still work after all that.
	if _, err := scalar.Run(context.Background(), []inference.Tensor{a, b}, []string{"twice"}, inference.HeapAllocator{}); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentRuns(t *testing.T) {
	path := inferencetest.ModelPath(t, "silero_vad")
	in := sileroInputs()
	want := inferencetest.RawRun(t, path, in)
	for _, cfg := range []inference.SessionConfig{
		{IntraOpThreads: 1},                                  // shared, unbounded
		{IntraOpThreads: 1, MaxConcurrency: 2},               // shared, 2 slots
		{IntraOpThreads: 1, Instances: 3, MaxConcurrency: 2}, // pool of 3, 2 slots
	} {
		t.Run(fmt.Sprintf("instances=%d,max=%d", cfg.Instances, cfg.MaxConcurrency), func(t *testing.T) {
			s := load(t, path, cfg)
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for g := 0; g < 8; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 10; i++ {
						got, err := s.Run(context.Background(), in, nil, inference.HeapAllocator{})
						if err != nil {
							errs <- err
							return
						}
						for k := range want {
							if !bytes.Equal(got[k].Data, want[k].Data) {
								errs <- fmt.Errorf("output %q differs under concurrency", got[k].Name)
								return
							}
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

// gateAlloc blocks every Alloc until open is closed, after announcing it on
// entered.
type gateAlloc struct {
	entered chan struct{}
	open    chan struct{}
}

func (g *gateAlloc) Alloc(ctx context.Context, n int) ([]byte, error) {
	g.entered <- struct{}{}
	<-g.open
	return make([]byte, n), nil
}

// TestCloseWaitsForInFlightRuns: a Run blocked inside (in its allocator)
// keeps Close from destroying the session; a Run queued for a slot and Runs
// after Close fail with ErrUnavailable; the in-flight Run completes.
func TestCloseWaitsForInFlightRuns(t *testing.T) {
	s, err := inferencetest.Env(t).Load(context.Background(), inference.LoadSpec{
		Model: "scalar_add", Version: "1", Path: testModel("scalar_add"),
		Config: inference.SessionConfig{MaxConcurrency: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	in := []inference.Tensor{
		{Name: "a", DataType: inference.FP32, Shape: []int64{}, Data: f32(1)},
		{Name: "b", DataType: inference.FP32, Shape: []int64{3}, Data: f32(1, 2, 3)},
	}
	gate := &gateAlloc{entered: make(chan struct{}, 4), open: make(chan struct{})}
	var (
		mu     sync.Mutex // guards events
		events []string
	)
	record := func(e string) { mu.Lock(); events = append(events, e); mu.Unlock() }

	runErr := make(chan error, 1)
	go func() {
		_, err := s.Run(context.Background(), in, nil, gate)
		record("run returned")
		runErr <- err
	}()
	<-gate.entered // the first Run holds the only slot, inside Run

	queuedErr := make(chan error, 1)
	go func() {
		_, err := s.Run(context.Background(), in, nil, inference.HeapAllocator{})
		queuedErr <- err
	}()

	closed := make(chan error, 1)
	go func() {
		err := s.Close()
		record("close returned")
		closed <- err
	}()
	// Wait until Close has started: new Runs are refused.
	for {
		_, err := s.Run(context.Background(), in, nil, inference.HeapAllocator{})
		if errors.Is(err, inference.ErrUnavailable) {
			break
		}
		if err != nil {
			t.Fatalf("unexpected error before close: %v", err)
		}
	}
	if err := <-queuedErr; !errors.Is(err, inference.ErrUnavailable) {
		t.Errorf("queued run: %v, want ErrUnavailable", err)
	}
	close(gate.open)
	if err := <-runErr; err != nil {
		t.Errorf("in-flight run failed: %v", err)
	}
	if err := <-closed; err != nil {
		t.Errorf("close: %v", err)
	}
	if fmt.Sprint(events) != "[run returned close returned]" {
		t.Errorf("order %v: Close returned before the in-flight Run", events)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	if _, err := s.Run(context.Background(), in, nil, inference.HeapAllocator{}); !errors.Is(err, inference.ErrUnavailable) || !strings.Contains(err.Error(), "closed") {
		t.Errorf("run after close: %v", err)
	}
}

// cancelAlloc cancels the run's context from inside the run.
type cancelAlloc struct{ cancel context.CancelFunc }

func (c cancelAlloc) Alloc(_ context.Context, n int) ([]byte, error) {
	c.cancel()
	return make([]byte, n), nil
}

func TestContextCancellation(t *testing.T) {
	s := load(t, testModel("scalar_add"), inference.SessionConfig{})
	in := []inference.Tensor{
		{Name: "a", DataType: inference.FP32, Shape: []int64{}, Data: f32(1)},
		{Name: "b", DataType: inference.FP32, Shape: []int64{3}, Data: f32(1, 2, 3)},
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Run(ctx, in, nil, inference.HeapAllocator{}); !errors.Is(err, context.Canceled) || !errors.Is(err, inference.ErrUnavailable) {
		t.Errorf("cancelled before: %v", err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	if _, err := s.Run(ctx, in, nil, cancelAlloc{cancel}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled during: %v", err)
	}
	// The session is fine afterwards, with a cancellable context too.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	if _, err := s.Run(ctx, in, nil, inference.HeapAllocator{}); err != nil {
		t.Errorf("after cancellations: %v", err)
	}
}

// TestCancelTerminatesRun cancels a ppocr_det run from inside its
// allocator, just before ONNX Runtime starts (the second run preallocates),
// in a way only RunOptions.Terminate can stop: the context is cancelled
// after Session's own check. Either ORT stops with the terminate flag, or
// (if the flag came too late) the run completes; an error must be the
// context's.
func TestCancelTerminatesRun(t *testing.T) {
	s := load(t, inferencetest.ModelPath(t, "ppocr_det"), inference.SessionConfig{})
	in := ppocrDetInputs()
	if _, err := s.Run(context.Background(), in, nil, inference.HeapAllocator{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := s.Run(ctx, in, nil, inference.HeapAllocator{})
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled run: %v", err)
		}
		t.Logf("run with cancel mid-way: %v", err)
	}()
	cancel()
	<-done
	if _, err := s.Run(context.Background(), in, nil, inference.HeapAllocator{}); err != nil {
		t.Errorf("after a terminated run: %v", err)
	}
}

// logBuffer collects log lines.
type logBuffer struct {
	// mu guards b.
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) lines(substr string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.b.String(), "\n") {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return out
}

func TestProviderFallbackOnCPUBuild(t *testing.T) {
	var logs logBuffer
	logger := zerolog.New(&logs)
	cfg, err := inference.ParseSessionConfig([]byte(`
providers:
  - name: tensorrt
    options: {fp16: true, workspace_bytes: 1073741824}
  - name: cuda
    options: {device_id: 0}
  - name: cpu
intra_op_threads: 1
`))
	if err != nil {
		t.Fatal(err)
	}
	s, err := inferencetest.Env(t).Load(context.Background(), inference.LoadSpec{
		Model: "silero_vad", Version: "1", Path: inferencetest.ModelPath(t, "silero_vad"), Config: cfg, Logger: &logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Provider() != inference.ProviderCPU {
		t.Errorf("provider %q, want cpu", s.Provider())
	}
	for _, p := range []string{"tensorrt", "cuda"} {
		if n := len(logs.lines(`"provider":"` + p + `"`)); n != 1 {
			t.Errorf("%d log lines about %s, want 1:\n%s", n, p, logs.b.String())
		}
	}
	for _, l := range logs.lines("not available") {
		if !strings.Contains(l, `"component":"inference"`) {
			t.Errorf("log line without component: %s", l)
		}
	}
	if _, err := s.Run(context.Background(), sileroInputs(), nil, inference.HeapAllocator{}); err != nil {
		t.Fatal(err)
	}

	// Without cpu in the list nothing is left.
	cfg.Providers = cfg.Providers[:2]
	_, err = inferencetest.Env(t).Load(context.Background(), inference.LoadSpec{
		Model: "silero_vad", Version: "1", Path: inferencetest.ModelPath(t, "silero_vad"), Config: cfg, Logger: &logger,
	})
	if !errors.Is(err, inference.ErrUnsupported) || !strings.Contains(err.Error(), "cpu is not allowed") {
		t.Errorf("no usable provider: %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	env := inferencetest.Env(t)
	_, err := env.Load(context.Background(), inference.LoadSpec{Model: "m", Version: "1", Path: "testdata/nope.onnx"})
	if !errors.Is(err, inference.ErrNotFound) {
		t.Errorf("missing file: %v", err)
	}
	_, err = env.Load(context.Background(), inference.LoadSpec{Model: "m", Version: "1", Path: "session_test.go"})
	if !errors.Is(err, inference.ErrInvalidArgument) {
		t.Errorf("not a model: %v", err)
	}
	_, err = env.Load(context.Background(), inference.LoadSpec{Model: "m", Version: "1", Path: testModel("scalar_add"), Config: inference.SessionConfig{IntraOpThreads: -1}})
	if !errors.Is(err, inference.ErrInvalidArgument) || !strings.Contains(err.Error(), "intra_op_threads") {
		t.Errorf("bad config: %v", err)
	}
}
