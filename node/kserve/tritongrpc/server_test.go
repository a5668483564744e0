package tritongrpc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/edgeai/edge-node/errdefs"
	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
	"github.com/edgeai/edge-node/node/kserve"
	"github.com/edgeai/edge-node/node/kserve/kservetest"
	"github.com/edgeai/edge-node/node/kserve/sysshm"
	pb "github.com/edgeai/edge-node/node/kserve/tritongrpc/inferencepb"
)

// testBackend serves real sessions through a real inference.Router (so
// versions keep statistics) and records repository load/unload calls (what
// they mean is serving.Owner's, tested there and against the real node).
type testBackend struct {
	*inference.Router
	mu    sync.Mutex
	calls []string
}

func (*testBackend) Ready() bool { return true }

func (b *testBackend) Index(context.Context) []kserve.RepositoryEntry {
	var out []kserve.RepositoryEntry
	for _, e := range b.Router.Index() {
		if e.State == inference.StateServing {
			out = append(out, kserve.RepositoryEntry{Name: e.Model, Version: e.Version, State: "READY"})
		}
	}
	return out
}

func (b *testBackend) LoadModel(_ context.Context, model string) error {
	return b.control("load", model)
}
func (b *testBackend) UnloadModel(_ context.Context, model string) error {
	return b.control("unload", model)
}

func (b *testBackend) control(what, model string) error {
	if model == "nope" {
		return errdefs.Sentinel(errdefs.ErrNotFound, `model "nope" is not in the store`)
	}
	b.mu.Lock()
	b.calls = append(b.calls, what+" "+model)
	b.mu.Unlock()
	return nil
}

var (
	sessionsOnce sync.Once
	sessions     []*inference.Session
)

func newTestBackend(t *testing.T) *testBackend {
	t.Helper()
	sessionsOnce.Do(func() {
		for _, name := range []string{"silero_vad", "ppocr_det"} {
			s, err := inferencetest.Env(t).Load(context.Background(), inference.LoadSpec{
				Model: name, Version: "1", Path: inferencetest.ModelPath(t, name), Config: inference.SessionConfig{IntraOpThreads: 1}})
			if err != nil {
				t.Fatalf("load %s: %v", name, err)
			}
			sessions = append(sessions, s)
		}
	})
	if len(sessions) != 2 {
		t.Fatal("sessions failed to load in an earlier test")
	}
	r := inference.NewRouter() // not closed: the sessions are shared by the package's tests
	for _, s := range sessions {
		if err := r.Add(s, true); err != nil {
			t.Fatal(err)
		}
	}
	return &testBackend{Router: r}
}

// startServer serves b on a loopback port and returns a client of the
// same generated service.
func startServer(t *testing.T, b kserve.Backend, mod func(*Options)) pb.GRPCInferenceServiceClient {
	t.Helper()
	opts := Options{ServerVersion: "test", Registerer: prometheus.NewRegistry()}
	if mod != nil {
		mod(&opts)
	}
	srv, err := NewServer(b, zerolog.Nop(), opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20), grpc.MaxCallSendMsgSize(256<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewGRPCInferenceServiceClient(conn)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// rawRequest puts every input in raw_input_contents.
func rawRequest(model string, ins []inference.Tensor) *pb.ModelInferRequest {
	req := &pb.ModelInferRequest{ModelName: model, Id: "r1"}
	for _, in := range ins {
		req.Inputs = append(req.Inputs, &pb.ModelInferRequest_InferInputTensor{Name: in.Name, Datatype: in.DataType.String(), Shape: in.Shape})
		req.RawInputContents = append(req.RawInputContents, in.Data)
	}
	return req
}

// typedRequest puts every input in its typed contents field (FP32 and
// INT64 only: what the sample models take).
func typedRequest(t *testing.T, model string, ins []inference.Tensor) *pb.ModelInferRequest {
	req := &pb.ModelInferRequest{ModelName: model}
	for _, in := range ins {
		c := &pb.InferTensorContents{}
		switch in.DataType {
		case inference.FP32:
			for i := 0; i < len(in.Data); i += 4 {
				c.Fp32Contents = append(c.Fp32Contents, math.Float32frombits(binary.LittleEndian.Uint32(in.Data[i:])))
			}
		case inference.Int64:
			for i := 0; i < len(in.Data); i += 8 {
				c.Int64Contents = append(c.Int64Contents, int64(binary.LittleEndian.Uint64(in.Data[i:])))
			}
		default:
			t.Fatalf("no typed contents for %s", in.DataType)
		}
		req.Inputs = append(req.Inputs, &pb.ModelInferRequest_InferInputTensor{Name: in.Name, Datatype: in.DataType.String(), Shape: in.Shape, Contents: c})
	}
	return req
}

// checkOutputs compares a response with a raw onnxruntime_go run.
func checkOutputs(t *testing.T, resp *pb.ModelInferResponse, want []inference.Tensor) {
	t.Helper()
	if len(resp.Outputs) != len(want) || len(resp.RawOutputContents) != len(want) {
		t.Fatalf("%d outputs, %d raw contents, want %d", len(resp.Outputs), len(resp.RawOutputContents), len(want))
	}
	for i, o := range resp.Outputs {
		if o.Name != want[i].Name || o.Datatype != want[i].DataType.String() || fmt.Sprint(o.Shape) != fmt.Sprint(want[i].Shape) {
			t.Errorf("output %d: %s %s %v, want %s %s %v", i, o.Name, o.Datatype, o.Shape, want[i].Name, want[i].DataType, want[i].Shape)
		}
		if !bytes.Equal(resp.RawOutputContents[i], want[i].Data) {
			t.Errorf("output %s differs from the raw onnxruntime_go run", o.Name)
		}
	}
}

// ModelInfer with raw and typed contents, plain and gzip-compressed, gives
// the bytes of a raw onnxruntime_go run.
func TestModelInferMatchesRawOnnxRuntime(t *testing.T) {
	c := startServer(t, newTestBackend(t), nil)
	for _, model := range []struct {
		name   string
		inputs []inference.Tensor
	}{{"silero_vad", kservetest.SileroInputs()}, {"ppocr_det", kservetest.DetInput(96)}} {
		want := inferencetest.RawRun(t, inferencetest.ModelPath(t, model.name), model.inputs)
		for _, mode := range []struct {
			name string
			req  *pb.ModelInferRequest
			opts []grpc.CallOption
		}{
			{"raw", rawRequest(model.name, model.inputs), nil},
			{"typed", typedRequest(t, model.name, model.inputs), nil},
			{"raw gzip", rawRequest(model.name, model.inputs), []grpc.CallOption{grpc.UseCompressor(gzip.Name)}},
		} {
			t.Run(model.name+"/"+mode.name, func(t *testing.T) {
				resp, err := c.ModelInfer(ctxT(t), mode.req, mode.opts...)
				if err != nil {
					t.Fatal(err)
				}
				if resp.ModelName != model.name || resp.ModelVersion != "1" || resp.Id != mode.req.Id {
					t.Errorf("model %q version %q id %q", resp.ModelName, resp.ModelVersion, resp.Id)
				}
				checkOutputs(t, resp, want)
			})
		}
	}
	// Requested outputs, in the order asked.
	req := rawRequest("silero_vad", kservetest.SileroInputs())
	req.Outputs = []*pb.ModelInferRequest_InferRequestedOutputTensor{{Name: "cn"}, {Name: "output"}}
	resp, err := c.ModelInfer(ctxT(t), req)
	if err != nil || len(resp.Outputs) != 2 || resp.Outputs[0].Name != "cn" || resp.Outputs[1].Name != "output" {
		t.Fatalf("requested outputs: %v %v", resp, err)
	}
}

// The bidirectional stream answers each request in order; a bad one gets
// its error in error_message and the stream goes on.
func TestModelStreamInfer(t *testing.T) {
	c := startServer(t, newTestBackend(t), nil)
	want := inferencetest.RawRun(t, inferencetest.ModelPath(t, "silero_vad"), kservetest.SileroInputs())
	stream, err := c.ModelStreamInfer(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	bad := rawRequest("silero_vad", kservetest.SileroInputs())
	bad.Inputs[0].Shape = []int64{1, 511}
	reqs := []*pb.ModelInferRequest{rawRequest("silero_vad", kservetest.SileroInputs()), bad, {ModelName: "nope"}, rawRequest("silero_vad", kservetest.SileroInputs())}
	for i, r := range reqs {
		r.Id = fmt.Sprint(i)
		if err := stream.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	for i, wantErr := range []string{"", "raw_input_contents has 2048 bytes but FP32 shape [1 511] needs 2044", "Request for unknown model: 'nope' is not found", ""} {
		r, err := stream.Recv()
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		if wantErr != "" {
			if !strings.Contains(r.ErrorMessage, wantErr) || r.InferResponse != nil {
				t.Errorf("response %d: %+v, want error %q", i, r, wantErr)
			}
			continue
		}
		if r.ErrorMessage != "" || r.InferResponse.Id != fmt.Sprint(i) {
			t.Fatalf("response %d: %+v", i, r)
		}
		checkOutputs(t, r.InferResponse, want)
	}
	if _, err := stream.Recv(); err == nil {
		t.Error("stream did not end after the client closed its side")
	}
}

func TestMetadataConfigStatisticsIndex(t *testing.T) {
	c := startServer(t, newTestBackend(t), nil)
	ctx := ctxT(t)
	if r, err := c.ServerLive(ctx, &pb.ServerLiveRequest{}); err != nil || !r.Live {
		t.Errorf("live: %v %v", r, err)
	}
	if r, err := c.ServerReady(ctx, &pb.ServerReadyRequest{}); err != nil || !r.Ready {
		t.Errorf("ready: %v %v", r, err)
	}
	sm, err := c.ServerMetadata(ctx, &pb.ServerMetadataRequest{})
	if err != nil || sm.Name != "edge-node" || sm.Version != "test" || !strings.Contains(strings.Join(sm.Extensions, ","), "statistics") {
		t.Errorf("server metadata: %v %v", sm, err)
	}
	if r, err := c.ModelReady(ctx, &pb.ModelReadyRequest{Name: "silero_vad", Version: "1"}); err != nil || !r.Ready {
		t.Errorf("model ready: %v %v", r, err)
	}
	md, err := c.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: "silero_vad"})
	if err != nil || md.Platform != "onnxruntime_onnx" || fmt.Sprint(md.Versions) != "[1]" || md.Inputs[1].Name != "sr" || md.Inputs[1].Datatype != "INT64" || len(md.Inputs[1].Shape) != 0 {
		t.Errorf("model metadata: %v %v", md, err)
	}
	cfg, err := c.ModelConfig(ctx, &pb.ModelConfigRequest{Name: "ppocr_det"})
	if err != nil {
		t.Fatal(err)
	}
	mc := cfg.Config
	if mc.Name != "ppocr_det" || mc.Backend != "onnxruntime" || mc.Input[0].DataType != pb.DataType_TYPE_FP32 || fmt.Sprint(mc.Input[0].Dims) != "[-1 3 -1 -1]" ||
		mc.InstanceGroup[0].Kind != pb.ModelInstanceGroup_KIND_CPU || mc.InstanceGroup[0].Count != 1 || mc.VersionPolicy.GetLatest().GetNumVersions() != 1 || mc.GetDynamicBatching() != nil {
		t.Errorf("model config: %v", mc)
	}
	for i := 0; i < 2; i++ {
		if _, err := c.ModelInfer(ctx, rawRequest("silero_vad", kservetest.SileroInputs())); err != nil {
			t.Fatal(err)
		}
	}
	st, err := c.ModelStatistics(ctx, &pb.ModelStatisticsRequest{Name: "silero_vad"})
	if err != nil || len(st.ModelStats) != 1 {
		t.Fatalf("statistics: %v %v", st, err)
	}
	ms := st.ModelStats[0]
	if ms.Version != "1" || ms.InferenceCount != 2 || ms.ExecutionCount != 2 || ms.InferenceStats.Success.Count != 2 || ms.InferenceStats.ComputeInfer.Ns == 0 || ms.LastInference == 0 {
		t.Errorf("silero_vad statistics: %v", ms)
	}
	if st, err := c.ModelStatistics(ctx, &pb.ModelStatisticsRequest{}); err != nil || len(st.ModelStats) != 2 {
		t.Errorf("all statistics: %v %v", st, err)
	}
	ix, err := c.RepositoryIndex(ctx, &pb.RepositoryIndexRequest{Ready: true})
	if err != nil || len(ix.Models) != 2 || ix.Models[0].State != "READY" {
		t.Errorf("index: %v %v", ix, err)
	}
	for _, call := range []func() error{
		func() error { _, err := c.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: "nope"}); return err },
		func() error { _, err := c.ModelConfig(ctx, &pb.ModelConfigRequest{Name: "nope"}); return err },
		func() error { _, err := c.ModelReady(ctx, &pb.ModelReadyRequest{Name: "nope"}); return err },
		func() error { _, err := c.ModelStatistics(ctx, &pb.ModelStatisticsRequest{Name: "nope"}); return err },
		func() error { _, err := c.ModelInfer(ctx, &pb.ModelInferRequest{ModelName: "nope"}); return err },
	} {
		if err := call(); status.Code(err) != codes.NotFound || status.Convert(err).Message() != "Request for unknown model: 'nope' is not found" {
			t.Errorf("unknown model: %v", err)
		}
	}
}

func TestRepositoryControl(t *testing.T) {
	b := newTestBackend(t)
	off := startServer(t, b, nil)
	on := startServer(t, b, func(o *Options) { o.RepositoryControl, o.RepositoryToken = true, "s3cret" })
	ctx := ctxT(t)
	auth := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer s3cret")
	if _, err := off.RepositoryModelUnload(ctx, &pb.RepositoryModelUnloadRequest{ModelName: "silero_vad"}); status.Code(err) != codes.Unimplemented {
		t.Errorf("disabled: %v", err)
	}
	if _, err := on.RepositoryModelUnload(ctx, &pb.RepositoryModelUnloadRequest{ModelName: "silero_vad"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("no token: %v", err)
	}
	bw := func(v bool) *pb.ModelRepositoryParameter {
		return &pb.ModelRepositoryParameter{ParameterChoice: &pb.ModelRepositoryParameter_BoolParam{BoolParam: v}}
	}
	if _, err := on.RepositoryModelUnload(auth, &pb.RepositoryModelUnloadRequest{ModelName: "silero_vad", Parameters: map[string]*pb.ModelRepositoryParameter{"unload_dependents": bw(true)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := on.RepositoryModelLoad(auth, &pb.RepositoryModelLoadRequest{ModelName: "silero_vad"}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(b.calls, ","); got != "unload silero_vad,load silero_vad" {
		t.Errorf("calls %q", got)
	}
	str := &pb.ModelRepositoryParameter{ParameterChoice: &pb.ModelRepositoryParameter_StringParam{StringParam: "{}"}}
	for _, tc := range []struct {
		name string
		call func() error
		code codes.Code
		msg  string
	}{
		{"unknown model", func() error {
			_, err := on.RepositoryModelLoad(auth, &pb.RepositoryModelLoadRequest{ModelName: "nope"})
			return err
		}, codes.NotFound, "failed to load 'nope'"},
		{"config parameter", func() error {
			_, err := on.RepositoryModelLoad(auth, &pb.RepositoryModelLoadRequest{ModelName: "m", Parameters: map[string]*pb.ModelRepositoryParameter{"config": str}})
			return err
		}, codes.Unimplemented, `load parameter "config" is not supported`},
		{"unload_dependents not a bool", func() error {
			_, err := on.RepositoryModelUnload(auth, &pb.RepositoryModelUnloadRequest{ModelName: "m", Parameters: map[string]*pb.ModelRepositoryParameter{"unload_dependents": str}})
			return err
		}, codes.InvalidArgument, "want a bool_param"},
		{"unknown parameter", func() error {
			_, err := on.RepositoryModelUnload(auth, &pb.RepositoryModelUnloadRequest{ModelName: "m", Parameters: map[string]*pb.ModelRepositoryParameter{"x": bw(true)}})
			return err
		}, codes.InvalidArgument, `unknown repository request parameter "x"`},
	} {
		if err := tc.call(); status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.msg) {
			t.Errorf("%s: %v, want %s with %q", tc.name, err, tc.code, tc.msg)
		}
	}
}

// Bad requests, each with its code and a message naming the problem: the
// decoder's own checks (sizes against shape and datatype, contents
// fields, ranges) and the model's (names, datatypes, shapes) through the
// server.
func TestModelInferRejectsBadRequests(t *testing.T) {
	c := startServer(t, newTestBackend(t), func(o *Options) { o.MaxMessageBytes = 1 << 20 })
	ctx := ctxT(t)
	good := func() *pb.ModelInferRequest { return rawRequest("silero_vad", kservetest.SileroInputs()) }
	typed := func() *pb.ModelInferRequest { return typedRequest(t, "silero_vad", kservetest.SileroInputs()) }
	edit := func(r *pb.ModelInferRequest, f func(*pb.ModelInferRequest)) *pb.ModelInferRequest { f(r); return r }
	i32 := func(vs ...int32) *pb.InferTensorContents { return &pb.InferTensorContents{IntContents: vs} }
	for _, tc := range []struct {
		name string
		req  *pb.ModelInferRequest
		code codes.Code
		msg  string
	}{
		{"raw count", edit(good(), func(r *pb.ModelInferRequest) { r.RawInputContents = r.RawInputContents[:2] }), codes.InvalidArgument, "raw_input_contents has 2 entries for 4 inputs"},
		{"unknown datatype", edit(good(), func(r *pb.ModelInferRequest) { r.Inputs[0].Datatype = "FP128" }), codes.InvalidArgument, `input "input": unknown datatype "FP128"`},
		{"negative dim", edit(good(), func(r *pb.ModelInferRequest) { r.Inputs[0].Shape = []int64{-1, 512} }), codes.InvalidArgument, "dimension 0 is -1"},
		{"huge dims", edit(good(), func(r *pb.ModelInferRequest) { r.Inputs[0].Shape = []int64{1 << 40, 1 << 40} }), codes.InvalidArgument, "has more than 2147483648 elements"},
		{"raw short", edit(good(), func(r *pb.ModelInferRequest) { r.RawInputContents[0] = r.RawInputContents[0][:100] }), codes.InvalidArgument, "raw_input_contents has 100 bytes but FP32 shape [1 512] needs 2048"},
		{"both contents and raw", edit(good(), func(r *pb.ModelInferRequest) { r.Inputs[1].Contents = &pb.InferTensorContents{} }), codes.InvalidArgument, `input "sr" has both contents and raw_input_contents`},
		{"typed count", edit(typed(), func(r *pb.ModelInferRequest) {
			r.Inputs[0].Contents.Fp32Contents = r.Inputs[0].Contents.Fp32Contents[:3]
		}), codes.InvalidArgument, "fp32_contents has 3 elements but shape [1 512] needs 512"},
		{"typed wrong field", edit(typed(), func(r *pb.ModelInferRequest) { r.Inputs[1].Contents = i32(16000) }), codes.InvalidArgument, "INT64 data belongs in int64_contents, not int_contents"},
		{"no data", edit(typed(), func(r *pb.ModelInferRequest) { r.Inputs[1].Contents = nil }), codes.InvalidArgument, "int64_contents has 0 elements but shape [] needs 1"},
		{"FP16 typed", edit(typed(), func(r *pb.ModelInferRequest) { r.Inputs[1].Datatype = "FP16" }), codes.InvalidArgument, "FP16 has no typed contents field"},
		{"wrong datatype for the model", edit(good(), func(r *pb.ModelInferRequest) {
			r.Inputs[1].Datatype = "INT32"
			r.RawInputContents[1] = r.RawInputContents[1][:4]
		}), codes.InvalidArgument, `input "sr" is INT32, the model wants INT64`},
		{"wrong shape for the model", edit(good(), func(r *pb.ModelInferRequest) {
			r.Inputs[2].Shape = []int64{3, 1, 64}
			r.RawInputContents[2] = make([]byte, 3*64*4)
		}), codes.InvalidArgument, `input "h" has shape [3 1 64]: dimension 0 is 3, the model wants 2`},
		{"unknown input", edit(good(), func(r *pb.ModelInferRequest) { r.Inputs[1].Name = "rate" }), codes.InvalidArgument, `model has no input "rate"`},
		{"unknown output", edit(good(), func(r *pb.ModelInferRequest) {
			r.Outputs = []*pb.ModelInferRequest_InferRequestedOutputTensor{{Name: "prob"}}
		}), codes.InvalidArgument, `model has no output "prob"`},
		{"classification", edit(good(), func(r *pb.ModelInferRequest) {
			r.Outputs = []*pb.ModelInferRequest_InferRequestedOutputTensor{{Name: "output", Parameters: map[string]*pb.InferParameter{"classification": {}}}}
		}), codes.Unimplemented, "classification"},
		{"shared memory input", edit(good(), func(r *pb.ModelInferRequest) {
			r.Inputs[0].Parameters = map[string]*pb.InferParameter{"shared_memory_region": {ParameterChoice: &pb.InferParameter_StringParam{StringParam: "r"}}}
		}), codes.Unimplemented, "system shared memory is not enabled on this node"},
		{"unknown version", edit(good(), func(r *pb.ModelInferRequest) { r.ModelVersion = "9" }), codes.NotFound, "Request for unknown model: 'silero_vad' version 9 is not found"},
		{"message over the limit", edit(good(), func(r *pb.ModelInferRequest) { r.RawInputContents[0] = make([]byte, 2<<20) }), codes.ResourceExhausted, "larger than max"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.ModelInfer(ctx, tc.req)
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.msg) {
				t.Fatalf("%v, want %s with %q", err, tc.code, tc.msg)
			}
		})
	}
	// A gzip bomb: 8 MiB of zeros, ~8 KB compressed, against a 1 MiB
	// limit on the decompressed message.
	bomb := good()
	bomb.RawInputContents[0] = make([]byte, 8<<20)
	if _, err := c.ModelInfer(ctx, bomb, grpc.UseCompressor(gzip.Name)); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("gzip bomb: %v, want ResourceExhausted", err)
	}
	if _, err := c.ModelInfer(ctx, good()); err != nil {
		t.Fatalf("a good request after the bad ones: %v", err)
	}
}

// Decoder table, datatypes the sample models do not take: ranges of the
// narrow integer types, BYTES raw sections, bool.
func TestDecodeRequestDatatypes(t *testing.T) {
	in := func(dt string, shape []int64, c *pb.InferTensorContents) *pb.ModelInferRequest {
		return &pb.ModelInferRequest{Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: dt, Shape: shape, Contents: c}}}
	}
	raw := func(dt string, shape []int64, b []byte) *pb.ModelInferRequest {
		r := in(dt, shape, nil)
		r.RawInputContents = [][]byte{b}
		return r
	}
	for _, tc := range []struct {
		name string
		req  *pb.ModelInferRequest
		want string // hex of the packed bytes, or the error
	}{
		{"int8", in("INT8", []int64{2}, &pb.InferTensorContents{IntContents: []int32{-128, 127}}), "807f"},
		{"int8 out of range", in("INT8", []int64{1}, &pb.InferTensorContents{IntContents: []int32{128}}), "element 0: 128 is out of range for INT8"},
		{"int16", in("INT16", []int64{1}, &pb.InferTensorContents{IntContents: []int32{-2}}), "feff"},
		{"int16 out of range", in("INT16", []int64{1}, &pb.InferTensorContents{IntContents: []int32{-40000}}), "out of range for INT16"},
		{"uint8", in("UINT8", []int64{2}, &pb.InferTensorContents{UintContents: []uint32{0, 255}}), "00ff"},
		{"uint8 out of range", in("UINT8", []int64{1}, &pb.InferTensorContents{UintContents: []uint32{256}}), "256 is out of range for UINT8"},
		{"uint16 out of range", in("UINT16", []int64{1}, &pb.InferTensorContents{UintContents: []uint32{70000}}), "out of range for UINT16"},
		{"uint64", in("UINT64", []int64{1}, &pb.InferTensorContents{Uint64Contents: []uint64{1}}), "0100000000000000"},
		{"bool", in("BOOL", []int64{2}, &pb.InferTensorContents{BoolContents: []bool{true, false}}), "0100"},
		{"fp64", in("FP64", []int64{1}, &pb.InferTensorContents{Fp64Contents: []float64{1}}), "000000000000f03f"},
		{"bytes typed", in("BYTES", []int64{2}, &pb.InferTensorContents{BytesContents: [][]byte{[]byte("a"), []byte("bc")}}), "strings [a bc]"},
		{"bytes raw", raw("BYTES", []int64{2}, []byte{1, 0, 0, 0, 'a', 2, 0, 0, 0, 'b', 'c'}), "strings [a bc]"},
		{"bytes raw length past the end", raw("BYTES", []int64{1}, []byte{9, 0, 0, 0, 'a'}), "length 9 is past the end of the section"},
		{"bytes raw too few", raw("BYTES", []int64{3}, []byte{0, 0, 0, 0}), "cannot hold 3 BYTES elements"},
		{"bytes raw left over", raw("BYTES", []int64{1}, []byte{0, 0, 0, 0, 'x'}), "1 bytes left after 1 BYTES elements"},
		{"fp16 raw", raw("FP16", []int64{2}, []byte{0, 0x3c, 0, 0xc0}), "003c00c0"},
		{"bf16 raw short", raw("BF16", []int64{2}, []byte{0, 0}), "has 2 bytes but BF16 shape [2] needs 4"},
		{"scalar", in("INT64", []int64{}, &pb.InferTensorContents{Int64Contents: []int64{5}}), "0500000000000000"},
		{"zero elements", in("FP32", []int64{0, 3}, nil), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ins, _, err := decodeRequest(tc.req, nil, nil)
			got := ""
			switch {
			case err != nil:
				got = err.Error()
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Errorf("%v does not wrap ErrInvalidArgument", err)
				}
			case ins[0].Strings != nil:
				got = fmt.Sprintf("strings %s", ins[0].Strings)
			default:
				got = fmt.Sprintf("%x", ins[0].Data)
			}
			if !strings.Contains(got, tc.want) || (tc.want == "" && got != "") {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// FuzzDecodeRequest: any bytes that unmarshal as a ModelInferRequest decode
// to tensors whose sizes agree with their datatype and shape, or to an
// InvalidArgument/Unimplemented error; never a panic, and never more bytes
// than the message held (typed contents pack at most 8 bytes per element
// sent).
func FuzzDecodeRequest(f *testing.F) {
	seeds := []*pb.ModelInferRequest{
		rawRequest("silero_vad", kservetest.SileroInputs()),
		{Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "INT8", Shape: []int64{2}, Contents: &pb.InferTensorContents{IntContents: []int32{1, 300}}}}},
		{Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "BYTES", Shape: []int64{1}}}, RawInputContents: [][]byte{{1, 0, 0, 0, 'a'}}},
		{Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "FP32", Shape: []int64{1 << 62, 4}}}},
		{Outputs: []*pb.ModelInferRequest_InferRequestedOutputTensor{{Name: "y", Parameters: map[string]*pb.InferParameter{"classification": {}}}}},
		{Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "FP32", Shape: []int64{1}, Parameters: map[string]*pb.InferParameter{
			"shared_memory_region":    {ParameterChoice: &pb.InferParameter_StringParam{StringParam: "r"}},
			"shared_memory_byte_size": {ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: -4}}}}}},
	}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var req pb.ModelInferRequest
		if proto.Unmarshal(b, &req) != nil {
			return
		}
		ins, _, err := decodeRequest(&req, nil, nil)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalidArgument) && !errors.Is(err, errdefs.ErrUnsupported) {
				t.Fatalf("error of no class: %v", err)
			}
			return
		}
		total := 0
		for _, in := range ins {
			n, err := inference.ElementCount(in.Shape)
			if err != nil {
				t.Fatalf("accepted shape %v: %v", in.Shape, err)
			}
			if in.DataType == inference.Bytes {
				if int64(len(in.Strings)) != n {
					t.Fatalf("%d strings for shape %v", len(in.Strings), in.Shape)
				}
				continue
			}
			if int64(len(in.Data)) != n*int64(in.DataType.Size()) {
				t.Fatalf("%d bytes for %s %v", len(in.Data), in.DataType, in.Shape)
			}
			total += len(in.Data)
		}
		if total > 8*len(b) {
			t.Fatalf("%d tensor bytes from a %d-byte message", total, len(b))
		}
	})
}

// System shared memory over gRPC: register a /dev/shm region holding
// silero_vad's inputs and one for its outputs, infer from and into them
// (outputs = the raw onnxruntime_go bytes), status, bad references, and
// Unimplemented when the extension is off.
func TestSystemSharedMemory(t *testing.T) {
	reg := sysshm.New(sysshm.Options{BudgetBytes: 1 << 20}, zerolog.Nop())
	defer reg.Close()
	var leases, released atomic.Int32
	c := startServer(t, newTestBackend(t), func(o *Options) {
		o.SharedMemory = reg
		o.NewAllocator = func() (inference.Allocator, func()) {
			leases.Add(1)
			return inference.HeapAllocator{}, func() { released.Add(1) }
		}
	})
	off := startServer(t, newTestBackend(t), nil)
	ctx := ctxT(t)
	ins := kservetest.SileroInputs()
	want := inferencetest.RawRun(t, inferencetest.ModelPath(t, "silero_vad"), ins)
	key := fmt.Sprintf("/edge-grpc-test-%d", os.Getpid())
	path := filepath.Join("/dev/shm", key[1:])
	defer os.Remove(path)
	var data []byte
	for _, in := range ins {
		data = append(data, in.Data...)
	}
	inSize := len(data)
	data = append(data, make([]byte, 4096)...) // the outputs go after the inputs
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SystemSharedMemoryRegister(ctx, &pb.SystemSharedMemoryRegisterRequest{Name: "io", Key: key, ByteSize: uint64(len(data))}); err != nil {
		t.Fatal(err)
	}
	st, err := c.SystemSharedMemoryStatus(ctx, &pb.SystemSharedMemoryStatusRequest{})
	if err != nil || st.Regions["io"].GetByteSize() != uint64(len(data)) || st.Regions["io"].GetKey() != key {
		t.Fatalf("status: %v %v", st, err)
	}
	str := func(s string) *pb.InferParameter {
		return &pb.InferParameter{ParameterChoice: &pb.InferParameter_StringParam{StringParam: s}}
	}
	i64 := func(v int) *pb.InferParameter {
		return &pb.InferParameter{ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: int64(v)}}
	}
	req := &pb.ModelInferRequest{ModelName: "silero_vad"}
	o := 0
	for _, in := range ins {
		req.Inputs = append(req.Inputs, &pb.ModelInferRequest_InferInputTensor{Name: in.Name, Datatype: in.DataType.String(), Shape: in.Shape,
			Parameters: map[string]*pb.InferParameter{"shared_memory_region": str("io"), "shared_memory_offset": i64(o), "shared_memory_byte_size": i64(len(in.Data))}})
		o += len(in.Data)
	}
	for _, w := range want {
		req.Outputs = append(req.Outputs, &pb.ModelInferRequest_InferRequestedOutputTensor{Name: w.Name,
			Parameters: map[string]*pb.InferParameter{"shared_memory_region": str("io"), "shared_memory_offset": i64(o), "shared_memory_byte_size": i64(len(w.Data))}})
		o += len(w.Data)
	}
	resp, err := c.ModelInfer(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	// Every output in shared memory: the outputs came from the request's
	// allocator, released before the response was sent.
	if leases.Load() != 1 || released.Load() != 1 {
		t.Errorf("allocator leases %d, released %d; want 1 and 1", leases.Load(), released.Load())
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	o = inSize
	for i, w := range want {
		if !bytes.Equal(got[o:o+len(w.Data)], w.Data) {
			t.Errorf("output %s in shared memory differs from the raw onnxruntime_go run", w.Name)
		}
		if p := resp.Outputs[i].Parameters; p["shared_memory_region"].GetStringParam() != "io" || p["shared_memory_byte_size"].GetInt64Param() != int64(len(w.Data)) || len(resp.RawOutputContents[i]) != 0 {
			t.Errorf("output %s in the response: %v", w.Name, resp.Outputs[i])
		}
		o += len(w.Data)
	}
	edit := func(f func(*pb.ModelInferRequest)) *pb.ModelInferRequest {
		r := proto.Clone(req).(*pb.ModelInferRequest)
		f(r)
		return r
	}
	for _, tc := range []struct {
		name string
		call func() error
		code codes.Code
		msg  string
	}{
		{"extension off", func() error { _, err := off.ModelInfer(ctx, req); return err }, codes.Unimplemented, "system shared memory is not enabled"},
		{"register with the extension off", func() error {
			_, err := off.SystemSharedMemoryRegister(ctx, &pb.SystemSharedMemoryRegisterRequest{Name: "x", Key: key, ByteSize: 1})
			return err
		}, codes.Unimplemented, "system shared memory is not enabled"},
		{"register a bad key", func() error {
			_, err := c.SystemSharedMemoryRegister(ctx, &pb.SystemSharedMemoryRegisterRequest{Name: "x", Key: "/../etc/passwd", ByteSize: 1})
			return err
		}, codes.InvalidArgument, "no path separators"},
		{"register past the end", func() error {
			_, err := c.SystemSharedMemoryRegister(ctx, &pb.SystemSharedMemoryRegisterRequest{Name: "x", Key: key, Offset: uint64(len(data)), ByteSize: 1})
			return err
		}, codes.InvalidArgument, "past the end"},
		{"register twice", func() error {
			_, err := c.SystemSharedMemoryRegister(ctx, &pb.SystemSharedMemoryRegisterRequest{Name: "io", Key: key, ByteSize: 1})
			return err
		}, codes.AlreadyExists, "already registered"},
		{"unknown region", func() error {
			_, err := c.ModelInfer(ctx, edit(func(r *pb.ModelInferRequest) { r.Inputs[0].Parameters["shared_memory_region"] = str("nope") }))
			return err
		}, codes.NotFound, `"nope" is not registered`},
		{"window past the region", func() error {
			_, err := c.ModelInfer(ctx, edit(func(r *pb.ModelInferRequest) { r.Inputs[0].Parameters["shared_memory_offset"] = i64(len(data) - 10) }))
			return err
		}, codes.InvalidArgument, "is past its"},
		{"size not the tensor's", func() error {
			_, err := c.ModelInfer(ctx, edit(func(r *pb.ModelInferRequest) { r.Inputs[0].Parameters["shared_memory_byte_size"] = i64(2044) }))
			return err
		}, codes.InvalidArgument, "shared_memory_byte_size is 2044 but FP32 shape [1 512] needs 2048"},
		{"negative offset", func() error {
			_, err := c.ModelInfer(ctx, edit(func(r *pb.ModelInferRequest) { r.Inputs[0].Parameters["shared_memory_offset"] = i64(-1) }))
			return err
		}, codes.InvalidArgument, "shared_memory_offset is negative"},
		{"no byte size", func() error {
			_, err := c.ModelInfer(ctx, edit(func(r *pb.ModelInferRequest) { delete(r.Inputs[0].Parameters, "shared_memory_byte_size") }))
			return err
		}, codes.InvalidArgument, "without shared_memory_byte_size"},
		{"output window too small", func() error {
			_, err := c.ModelInfer(ctx, edit(func(r *pb.ModelInferRequest) { r.Outputs[1].Parameters["shared_memory_byte_size"] = i64(100) }))
			return err
		}, codes.InvalidArgument, `output "hn" needs 512 bytes but its shared_memory_byte_size is 100`},
		{"unregister unknown", func() error {
			_, err := c.SystemSharedMemoryUnregister(ctx, &pb.SystemSharedMemoryUnregisterRequest{Name: "nope"})
			return err
		}, codes.NotFound, "not registered"},
	} {
		if err := tc.call(); status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.msg) {
			t.Errorf("%s: %v, want %s with %q", tc.name, err, tc.code, tc.msg)
		}
	}
	if _, err := c.SystemSharedMemoryUnregister(ctx, &pb.SystemSharedMemoryUnregisterRequest{}); err != nil {
		t.Fatal(err)
	}
	if st, err := c.SystemSharedMemoryStatus(ctx, &pb.SystemSharedMemoryStatusRequest{}); err != nil || len(st.Regions) != 0 {
		t.Errorf("status after unregister all: %v %v", st, err)
	}
}
