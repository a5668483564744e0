package tritongrpc

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/edgeai/edge-node/cgo/pinned"
	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
	"github.com/edgeai/edge-node/node/kserve"
	"github.com/edgeai/edge-node/node/kserve/kservetest"
	"github.com/edgeai/edge-node/node/kserve/sysshm"
	pb "github.com/edgeai/edge-node/node/kserve/tritongrpc/inferencepb"
)

// TestMeasureFrontends measures (it asserts nothing about time) raw
// onnxruntime_go against REST binary, gRPC raw contents and gRPC with
// system shared memory, in interleaved rounds (raw, REST, gRPC, shm, raw,
// ...), for silero_vad and ppocr_det at concurrency 1 and 4, and logs
// p50/p99, throughput and Go heap bytes per request, with the median of the
// per-round ratios to raw and their spread. Run it with
//
//	EDGE_MEASURE_FRONTENDS=1 go test ./node/kserve/tritongrpc -run TestMeasureFrontends -v -timeout 30m
//
// (EDGE_MEASURE_ROUNDS, default 5). Client and server are in one process,
// so heap bytes count both sides of a request.
func TestMeasureFrontends(t *testing.T) {
	if os.Getenv("EDGE_MEASURE_FRONTENDS") == "" {
		t.Skip("a measurement: EDGE_MEASURE_FRONTENDS=1 runs it")
	}
	rounds := 5
	if v, err := strconv.Atoi(os.Getenv("EDGE_MEASURE_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	b := newTestBackend(t)
	popts := pinned.DefaultOptions()
	popts.MaxWait = 10 * time.Second
	pool, err := pinned.NewPool(popts, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	reg := sysshm.New(sysshm.Options{BudgetBytes: 256 << 20}, zerolog.Nop())
	defer reg.Close()

	kopts := kserve.DefaultOptions()
	kopts.Registerer = prometheus.NewRegistry()
	kopts.MaxBodyBytes = 256 << 20
	kopts.NewAllocator = func() (inference.Allocator, func()) { l := pool.Lease(); return l, l.Release }
	h, err := kserve.NewHandler(b, zerolog.Nop(), kopts)
	if err != nil {
		t.Fatal(err)
	}
	rest := httptest.NewServer(h)
	defer rest.Close()
	gsrv, err := NewServer(b, zerolog.Nop(), Options{MaxMessageBytes: 256 << 20, SharedMemory: reg, Registerer: prometheus.NewRegistry(),
		NewAllocator: kopts.NewAllocator})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gsrv.Serve(ln)
	defer gsrv.Stop()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20), grpc.MaxCallSendMsgSize(256<<20)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := pb.NewGRPCInferenceServiceClient(conn)
	ctx := context.Background()

	for _, mc := range []struct {
		name   string
		inputs []inference.Tensor
		n      int // requests per worker per arm per round
	}{{"silero_vad", kservetest.SileroInputs(), 200}, {"ppocr_det", kservetest.DetInput(640), 10}} {
		raw := inferencetest.OpenRaw(t, inferencetest.ModelPath(t, mc.name), 1)
		want, err := raw.Run(mc.inputs)
		if err != nil {
			t.Fatal(err)
		}
		for _, conc := range []int{1, 4} {
			// Per worker: a REST body, a gRPC request, and a shared-memory
			// region holding the inputs with room for the outputs.
			body, hl := kservetest.BinaryRequest(t, "", mc.inputs, true)
			greq := rawRequest(mc.name, mc.inputs)
			shmReqs := make([]*pb.ModelInferRequest, conc)
			for w := 0; w < conc; w++ {
				shmReqs[w] = shmRequest(t, reg, mc.name, fmt.Sprintf("%s-%d-%d", mc.name, conc, w), mc.inputs, want)
			}
			arms := []struct {
				name string
				run  func(w int) error
			}{
				{"raw onnxruntime_go", func(int) error { _, err := raw.Run(mc.inputs); return err }},
				{"REST binary", func(int) error {
					req, _ := http.NewRequest("POST", rest.URL+"/v2/models/"+mc.name+"/infer", bytes.NewReader(body))
					req.Header.Set(kservetest.HeaderContentLength, strconv.Itoa(hl))
					req.Header.Set("Accept-Encoding", "identity")
					resp, err := rest.Client().Do(req)
					if err != nil {
						return err
					}
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						return fmt.Errorf("status %d", resp.StatusCode)
					}
					return err
				}},
				{"gRPC raw", func(int) error { _, err := client.ModelInfer(ctx, greq); return err }},
				{"gRPC shm", func(w int) error { _, err := client.ModelInfer(ctx, shmReqs[w]); return err }},
			}
			for _, a := range arms { // warm-up: connections, pools, shape caches
				if err := a.run(0); err != nil {
					t.Fatalf("%s: %v", a.name, err)
				}
			}
			res := make([][]armResult, len(arms))
			for r := 0; r < rounds; r++ {
				for i, a := range arms {
					res[i] = append(res[i], runArm(t, a.run, conc, mc.n))
				}
			}
			t.Logf("FIGURE %s c=%d, %d rounds × %d requests per arm (interleaved):", mc.name, conc, rounds, conc*mc.n)
			t.Logf("FIGURE | arm | p50 | p99 | throughput (req/s) | heap B/req | p50 ÷ raw | throughput ÷ raw |")
			for i, a := range arms {
				p50, p99, thr, heap := medianOf(res[i], func(x armResult) float64 { return float64(x.p50) }),
					medianOf(res[i], func(x armResult) float64 { return float64(x.p99) }),
					medianOf(res[i], func(x armResult) float64 { return x.throughput }),
					medianOf(res[i], func(x armResult) float64 { return x.heap })
				rp := ratios(res[i], res[0], func(x armResult) float64 { return float64(x.p50) })
				rt := ratios(res[i], res[0], func(x armResult) float64 { return x.throughput })
				t.Logf("FIGURE | %s | %v | %v | %.1f | %.0f | %.2f× [%.2f–%.2f] | %.2f× [%.2f–%.2f] |", a.name,
					time.Duration(p50).Round(time.Microsecond), time.Duration(p99).Round(time.Microsecond), thr, heap,
					median(rp), slices.Min(rp), slices.Max(rp), median(rt), slices.Min(rt), slices.Max(rt))
			}
		}
	}
}

type armResult struct {
	p50, p99   time.Duration
	throughput float64
	heap       float64 // Go heap bytes allocated per request, the whole process
}

func runArm(t *testing.T, run func(w int) error, conc, n int) armResult {
	lat := make([][]time.Duration, conc)
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < n; i++ {
				t0 := time.Now()
				if err := run(w); err != nil {
					t.Error(err)
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		}(w)
	}
	wg.Wait()
	wall := time.Since(start)
	runtime.ReadMemStats(&ms1)
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) == 0 {
		t.Fatal("no samples")
	}
	q := func(p float64) time.Duration { return all[min(len(all)-1, int(p*float64(len(all))))] }
	return armResult{p50: q(0.5), p99: q(0.99), throughput: float64(len(all)) / wall.Seconds(),
		heap: float64(ms1.TotalAlloc-ms0.TotalAlloc) / float64(len(all))}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func medianOf(rs []armResult, f func(armResult) float64) float64 {
	xs := make([]float64, len(rs))
	for i, r := range rs {
		xs[i] = f(r)
	}
	return median(xs)
}

// ratios are the per-round ratios of arm a to the baseline.
func ratios(a, base []armResult, f func(armResult) float64) []float64 {
	out := make([]float64, len(a))
	for i := range a {
		out[i] = f(a[i]) / f(base[i])
	}
	return out
}

// shmRequest registers a /dev/shm region holding inputs (and room for the
// outputs) and returns a request that reads and writes it.
func shmRequest(t *testing.T, reg *sysshm.Registry, model, name string, ins, outs []inference.Tensor) *pb.ModelInferRequest {
	t.Helper()
	key := fmt.Sprintf("/edge-measure-%d-%s", os.Getpid(), name)
	path := filepath.Join("/dev/shm", key[1:])
	t.Cleanup(func() { os.Remove(path) })
	var data []byte
	for _, in := range ins {
		data = append(data, in.Data...)
	}
	outSize := 0
	for _, o := range outs {
		outSize += len(o.Data)
	}
	data = append(data, make([]byte, outSize)...)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := reg.Register(name, key, 0, uint64(len(data))); err != nil {
		t.Fatal(err)
	}
	str := func(s string) *pb.InferParameter {
		return &pb.InferParameter{ParameterChoice: &pb.InferParameter_StringParam{StringParam: s}}
	}
	i64 := func(v int) *pb.InferParameter {
		return &pb.InferParameter{ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: int64(v)}}
	}
	req := &pb.ModelInferRequest{ModelName: model}
	off := 0
	for _, in := range ins {
		req.Inputs = append(req.Inputs, &pb.ModelInferRequest_InferInputTensor{Name: in.Name, Datatype: in.DataType.String(), Shape: in.Shape,
			Parameters: map[string]*pb.InferParameter{"shared_memory_region": str(name), "shared_memory_offset": i64(off), "shared_memory_byte_size": i64(len(in.Data))}})
		off += len(in.Data)
	}
	for _, o := range outs {
		req.Outputs = append(req.Outputs, &pb.ModelInferRequest_InferRequestedOutputTensor{Name: o.Name,
			Parameters: map[string]*pb.InferParameter{"shared_memory_region": str(name), "shared_memory_offset": i64(off), "shared_memory_byte_size": i64(len(o.Data))}})
		off += len(o.Data)
	}
	return req
}

// TestMeasureGRPCServerHeap measures the Go heap the server side of one
// 4.9 MB ppocr_det request costs, without a client or a socket: the
// protobuf unmarshal of the request, ModelInfer, and the marshal of the
// response — raw contents, and inputs and outputs in shared memory.
//
//	EDGE_MEASURE_FRONTENDS=1 go test ./node/kserve/tritongrpc -run TestMeasureGRPCServerHeap -v
func TestMeasureGRPCServerHeap(t *testing.T) {
	if os.Getenv("EDGE_MEASURE_FRONTENDS") == "" {
		t.Skip("a measurement: EDGE_MEASURE_FRONTENDS=1 runs it")
	}
	reg := sysshm.New(sysshm.Options{BudgetBytes: 64 << 20}, zerolog.Nop())
	defer reg.Close()
	pool, err := pinned.NewPool(pinned.DefaultOptions(), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s := &service{backend: newTestBackend(t), log: zerolog.Nop(), opts: Options{SharedMemory: reg,
		NewAllocator: func() (inference.Allocator, func()) { l := pool.Lease(); return l, l.Release }}}
	ins := kservetest.DetInput(640)
	want := inferencetest.RawRun(t, inferencetest.ModelPath(t, "ppocr_det"), ins)
	for _, arm := range []struct {
		name string
		req  *pb.ModelInferRequest
	}{
		{"raw contents", rawRequest("ppocr_det", ins)},
		{"shared memory", shmRequest(t, reg, "ppocr_det", "heap", ins, want)},
	} {
		wire, err := proto.Marshal(arm.req)
		if err != nil {
			t.Fatal(err)
		}
		one := func() {
			var req pb.ModelInferRequest
			if err := proto.Unmarshal(wire, &req); err != nil {
				t.Fatal(err)
			}
			resp, err := s.ModelInfer(context.Background(), &req)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := proto.Marshal(resp); err != nil {
				t.Fatal(err)
			}
		}
		one()
		const n = 5
		var ms0, ms1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms0)
		for i := 0; i < n; i++ {
			one()
		}
		runtime.ReadMemStats(&ms1)
		per := float64(ms1.TotalAlloc-ms0.TotalAlloc) / n
		t.Logf("FIGURE gRPC server side, ppocr_det 4.9 MB request, %s: %.0f heap B/request (%.0f%% of the %d input bytes)", arm.name, per, 100*per/float64(len(ins[0].Data)), len(ins[0].Data))
	}
}
