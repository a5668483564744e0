package tritongrpc

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	_ "google.golang.org/grpc/encoding/gzip" // registers the gzip compressor
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/edgeai/edge-node/errdefs"
	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/node/kserve"
	"github.com/edgeai/edge-node/node/kserve/sysshm"
	pb "github.com/edgeai/edge-node/node/kserve/tritongrpc/inferencepb"
)

// Options configure the service. Zero values take the defaults.
type Options struct {
	// ServerName and ServerVersion are reported by ServerMetadata.
	ServerName, ServerVersion string
	// MaxMessageBytes bounds a received message after decompression
	// (default 64 MiB); larger ones get ResourceExhausted.
	MaxMessageBytes int
	// RepositoryControl enables RepositoryModelLoad and Unload on a
	// backend that is a kserve.RepositoryController (off: Unimplemented).
	RepositoryControl bool
	// RepositoryToken, when set, is required on them as the
	// "authorization: Bearer <token>" metadata.
	RepositoryToken string
	// Registerer receives the service's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// SharedMemory, when set, serves the system shared-memory RPCs and
	// tensors naming a region (the same registry as the REST frontend's).
	SharedMemory *sysshm.Registry
	// NewAllocator, when set, provides the output buffers of a request
	// whose every output goes to shared memory (the response then holds
	// none of them, so they can be released when the handler returns);
	// the node passes its pinned pool's leases. Other requests' outputs are
	// on the Go heap.
	NewAllocator func() (alloc inference.Allocator, release func())
	// TracerProvider makes a server span per call (continuing the
	// caller's W3C traceparent from the metadata) and, for an inference,
	// its decode, queue, infer and encode children, as on REST; a stream
	// is one span, with each request's phases under it. nil: no spans.
	TracerProvider trace.TracerProvider
}

// service implements pb.GRPCInferenceServiceServer over a kserve.Backend.
type service struct {
	pb.UnimplementedGRPCInferenceServiceServer
	backend kserve.Backend
	opts    Options
	log     zerolog.Logger
	// tracer makes the calls' spans (nil without Options.TracerProvider).
	tracer trace.Tracer
}

// NewServer returns a gRPC server with the inference service registered,
// gzip available, the message bound set and every call counted in
// edge_inference_grpc_requests_total{method,code}. The caller serves it
// (Serve(listener)) and stops it (GracefulStop, Stop). log should carry no
// "component": the service adds component=grpc.
func NewServer(b kserve.Backend, log zerolog.Logger, opts Options) (*grpc.Server, error) {
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = 64 << 20
	}
	if opts.ServerName == "" {
		opts.ServerName = "edge-node"
	}
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edge_inference_grpc_requests_total",
		Help: "gRPC inference service calls by method and status code.",
	}, []string{"method", "code"})
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(requests); err != nil {
			return nil, err
		}
	}
	count := func(method string, err error) {
		requests.WithLabelValues(method[strings.LastIndexByte(method, '/')+1:], status.Code(err).String()).Inc()
	}
	unary := []grpc.UnaryServerInterceptor{func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		resp, err := h(ctx, req)
		count(info.FullMethod, err)
		return resp, err
	}}
	stream := []grpc.StreamServerInterceptor{func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		err := h(srv, ss)
		count(info.FullMethod, err)
		return err
	}}
	svc := &service{backend: b, opts: opts, log: log.With().Str("component", "grpc").Logger()}
	if opts.TracerProvider != nil {
		svc.tracer = opts.TracerProvider.Tracer(tracerName)
		unary = append(unary, svc.traceUnary)
		stream = append(stream, svc.traceStream)
	}
	srv := grpc.NewServer(
		grpc.MaxRecvMsgSize(opts.MaxMessageBytes),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
	)
	pb.RegisterGRPCInferenceServiceServer(srv, svc)
	return srv, nil
}

// grpcError is err as a gRPC status, its code from the one mapper.
func grpcError(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(errdefs.GRPCCode(err), err.Error())
}

func (s *service) ServerLive(context.Context, *pb.ServerLiveRequest) (*pb.ServerLiveResponse, error) {
	return &pb.ServerLiveResponse{Live: true}, nil
}

func (s *service) ServerReady(context.Context, *pb.ServerReadyRequest) (*pb.ServerReadyResponse, error) {
	return &pb.ServerReadyResponse{Ready: s.backend.Ready()}, nil
}

func (s *service) ModelReady(_ context.Context, req *pb.ModelReadyRequest) (*pb.ModelReadyResponse, error) {
	_, release, err := s.backend.Acquire(req.Name, req.Version)
	if err == nil {
		release()
		return &pb.ModelReadyResponse{Ready: true}, nil
	}
	if errors.Is(err, inference.ErrUnavailable) {
		return &pb.ModelReadyResponse{Ready: false}, nil
	}
	return nil, grpcError(err)
}

func (s *service) ServerMetadata(context.Context, *pb.ServerMetadataRequest) (*pb.ServerMetadataResponse, error) {
	return &pb.ServerMetadataResponse{Name: s.opts.ServerName, Version: s.opts.ServerVersion, Extensions: kserve.Extensions(s.backend, s.opts.SharedMemory != nil)}, nil
}

func tensorsMetadata(infos []inference.TensorInfo) []*pb.ModelMetadataResponse_TensorMetadata {
	out := make([]*pb.ModelMetadataResponse_TensorMetadata, len(infos))
	for i, info := range infos {
		out[i] = &pb.ModelMetadataResponse_TensorMetadata{Name: info.Name, Datatype: info.DataType.String(), Shape: info.Shape}
	}
	return out
}

func (s *service) ModelMetadata(ctx context.Context, req *pb.ModelMetadataRequest) (*pb.ModelMetadataResponse, error) {
	m, release, err := s.backend.Acquire(req.Name, req.Version)
	if err != nil {
		return nil, grpcError(err)
	}
	defer release()
	resp := &pb.ModelMetadataResponse{Name: m.Name(), Platform: m.Platform(), Inputs: tensorsMetadata(m.Inputs()), Outputs: tensorsMetadata(m.Outputs())}
	if ix, ok := s.backend.(kserve.ModelIndexer); ok {
		for _, e := range ix.Index(ctx) {
			if e.Name == m.Name() && e.Version != "" {
				resp.Versions = append(resp.Versions, e.Version)
			}
		}
	}
	if len(resp.Versions) == 0 && m.Version() != "" {
		resp.Versions = []string{m.Version()}
	}
	return resp, nil
}

func (s *service) ModelConfig(_ context.Context, req *pb.ModelConfigRequest) (*pb.ModelConfigResponse, error) {
	m, release, err := s.backend.Acquire(req.Name, req.Version)
	if err != nil {
		return nil, grpcError(err)
	}
	defer release()
	return &pb.ModelConfigResponse{Config: configProto(kserve.ModelConfigOf(m))}, nil
}

// configProto is the protobuf form of the REST frontend's configuration.
func configProto(c kserve.ModelConfig) *pb.ModelConfig {
	out := &pb.ModelConfig{
		Name: c.Name, Platform: c.Platform, Backend: c.Backend, MaxBatchSize: int32(c.MaxBatchSize),
		DefaultModelFilename: c.DefaultModelFilename,
		VersionPolicy: &pb.ModelVersionPolicy{PolicyChoice: &pb.ModelVersionPolicy_Latest_{
			Latest: &pb.ModelVersionPolicy_Latest{NumVersions: 1}}},
	}
	for _, in := range c.Input {
		out.Input = append(out.Input, &pb.ModelInput{Name: in.Name, DataType: pb.DataType(pb.DataType_value[in.DataType]),
			Format: pb.ModelInput_Format(pb.ModelInput_Format_value[in.Format]), Dims: in.Dims})
	}
	for _, o := range c.Output {
		out.Output = append(out.Output, &pb.ModelOutput{Name: o.Name, DataType: pb.DataType(pb.DataType_value[o.DataType]), Dims: o.Dims})
	}
	for _, g := range c.InstanceGroup {
		ig := &pb.ModelInstanceGroup{Name: g.Name, Kind: pb.ModelInstanceGroup_Kind(pb.ModelInstanceGroup_Kind_value[g.Kind]), Count: int32(g.Count)}
		for _, id := range g.GPUs {
			ig.Gpus = append(ig.Gpus, int32(id))
		}
		out.InstanceGroup = append(out.InstanceGroup, ig)
	}
	if d := c.DynamicBatching; d != nil {
		db := &pb.ModelDynamicBatching{
			MaxQueueDelayMicroseconds: uint64(max(d.MaxQueueDelayMicroseconds, 0)),
			DefaultQueuePolicy: &pb.ModelQueuePolicy{
				TimeoutAction:              pb.ModelQueuePolicy_TimeoutAction(pb.ModelQueuePolicy_TimeoutAction_value[d.DefaultQueuePolicy.TimeoutAction]),
				DefaultTimeoutMicroseconds: uint64(max(d.DefaultQueuePolicy.DefaultTimeoutMicroseconds, 0)),
				AllowTimeoutOverride:       d.DefaultQueuePolicy.AllowTimeoutOverride,
				MaxQueueSize:               uint32(max(d.DefaultQueuePolicy.MaxQueueSize, 0)),
			},
		}
		for _, n := range d.PreferredBatchSize {
			db.PreferredBatchSize = append(db.PreferredBatchSize, int32(n))
		}
		out.SchedulingChoice = &pb.ModelConfig_DynamicBatching{DynamicBatching: db}
	}
	return out
}

func (s *service) ModelStatistics(ctx context.Context, req *pb.ModelStatisticsRequest) (*pb.ModelStatisticsResponse, error) {
	if _, ok := s.backend.(kserve.StatsReader); !ok {
		return nil, status.Error(codes.Unimplemented, "this node keeps no statistics")
	}
	stats, err := kserve.CollectStats(ctx, s.backend, req.Name, req.Version)
	if err != nil {
		return nil, grpcError(err)
	}
	d := func(x kserve.StatDuration) *pb.StatisticDuration {
		return &pb.StatisticDuration{Count: x.Count, Ns: x.NS}
	}
	resp := &pb.ModelStatisticsResponse{}
	for _, st := range stats {
		is := st.InferenceStats
		resp.ModelStats = append(resp.ModelStats, &pb.ModelStatistics{
			Name: st.Name, Version: st.Version, LastInference: uint64(max(st.LastInference, 0)),
			InferenceCount: st.InferenceCount, ExecutionCount: st.ExecutionCount,
			InferenceStats: &pb.InferStatistics{Success: d(is.Success), Fail: d(is.Fail), Queue: d(is.Queue),
				ComputeInput: d(is.ComputeInput), ComputeInfer: d(is.ComputeInfer), ComputeOutput: d(is.ComputeOutput),
				CacheHit: d(is.CacheHit), CacheMiss: d(is.CacheMiss)},
		})
	}
	return resp, nil
}

func (s *service) RepositoryIndex(ctx context.Context, req *pb.RepositoryIndexRequest) (*pb.RepositoryIndexResponse, error) {
	ix, ok := s.backend.(kserve.ModelIndexer)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "this node has no repository index")
	}
	resp := &pb.RepositoryIndexResponse{}
	for _, e := range ix.Index(ctx) {
		if !req.Ready || e.State == "READY" {
			resp.Models = append(resp.Models, &pb.RepositoryIndexResponse_ModelIndex{Name: e.Name, Version: e.Version, State: e.State, Reason: e.Reason})
		}
	}
	return resp, nil
}

func (s *service) RepositoryModelLoad(ctx context.Context, req *pb.RepositoryModelLoadRequest) (*pb.RepositoryModelLoadResponse, error) {
	if err := s.repositoryControl(ctx, req.ModelName, req.Parameters, false); err != nil {
		return nil, err
	}
	return &pb.RepositoryModelLoadResponse{}, nil
}

func (s *service) RepositoryModelUnload(ctx context.Context, req *pb.RepositoryModelUnloadRequest) (*pb.RepositoryModelUnloadResponse, error) {
	if err := s.repositoryControl(ctx, req.ModelName, req.Parameters, true); err != nil {
		return nil, err
	}
	return &pb.RepositoryModelUnloadResponse{}, nil
}

// repositoryControl is load and unload: the same switch, token and
// parameters as the REST frontend, the same controller.
func (s *service) repositoryControl(ctx context.Context, model string, params map[string]*pb.ModelRepositoryParameter, unload bool) error {
	rc, ok := s.backend.(kserve.RepositoryController)
	if !ok || !s.opts.RepositoryControl {
		return status.Error(codes.Unimplemented, "repository control is disabled on this node (repository_control: true in its config enables load and unload)")
	}
	if tok := s.opts.RepositoryToken; tok != "" {
		md, _ := metadata.FromIncomingContext(ctx)
		got := ""
		if v := md.Get("authorization"); len(v) == 1 {
			got = v[0]
		}
		if subtle.ConstantTimeCompare([]byte(got), []byte("Bearer "+tok)) != 1 {
			return status.Error(codes.Unauthenticated, "repository load and unload need the metadata authorization: Bearer <admin token>")
		}
	}
	for name, p := range params {
		switch {
		case name == "unload_dependents" && unload:
			if _, ok := p.GetParameterChoice().(*pb.ModelRepositoryParameter_BoolParam); !ok {
				return status.Error(codes.InvalidArgument, "parameter unload_dependents: want a bool_param")
			}
		case !unload && (name == "config" || strings.HasPrefix(name, "file:")):
			return status.Errorf(codes.Unimplemented, "load parameter %q is not supported: models reach the node through its store (admin API import or desired state)", name)
		default:
			return status.Errorf(codes.InvalidArgument, "unknown repository request parameter %q", name)
		}
	}
	what, err := "load", error(nil)
	if unload {
		what, err = "unload", rc.UnloadModel(ctx, model)
	} else {
		err = rc.LoadModel(ctx, model)
	}
	if err != nil {
		return status.Error(errdefs.GRPCCode(err), fmt.Sprintf("failed to %s '%s': %v", what, model, err))
	}
	s.log.Info().Str("model", model).Bool("unload", unload).Msg("repository control")
	return nil
}

// ModelInfer runs one request. Failures after a version was acquired are
// counted in that version's statistics, as on REST.
func (s *service) ModelInfer(ctx context.Context, req *pb.ModelInferRequest) (*pb.ModelInferResponse, error) {
	start := time.Now()
	m, release, err := s.backend.Acquire(req.ModelName, req.ModelVersion)
	if err != nil {
		return nil, grpcError(err)
	}
	defer release()
	rt := inference.RequestTimes{At: start}
	resp, err := s.infer(ctx, m, req, &rt)
	rt.Total, rt.Failed = time.Since(start), err != nil
	if s.tracer != nil {
		kserve.InferSpans(ctx, s.tracer, m.Name(), m.Version(), rt)
	}
	if ob, ok := m.(kserve.RequestObserver); ok {
		ob.ObserveRequest(rt)
	}
	if err != nil {
		return nil, grpcError(err)
	}
	return resp, nil
}

// allOutputsInShm reports whether the request names its outputs and puts
// every one in shared memory.
func allOutputsInShm(req *pb.ModelInferRequest) bool {
	if len(req.Outputs) == 0 {
		return false
	}
	for _, o := range req.Outputs {
		if _, ok := o.Parameters["shared_memory_region"]; !ok {
			return false
		}
	}
	return true
}

type statsRunner interface {
	RunWithStats(ctx context.Context, inputs []inference.Tensor, outputs []string, alloc inference.Allocator) ([]inference.Tensor, inference.RunStats, error)
}

func (s *service) infer(ctx context.Context, m inference.Model, req *pb.ModelInferRequest, rt *inference.RequestTimes) (*pb.ModelInferResponse, error) {
	t0 := time.Now()
	var releases []func()
	defer func() {
		for _, release := range releases {
			release()
		}
	}()
	inputs, outputs, err := decodeRequest(req, s.opts.SharedMemory, &releases)
	if err != nil {
		return nil, err
	}
	rt.Inferences = 1
	var alloc inference.Allocator = inference.HeapAllocator{}
	if s.opts.NewAllocator != nil && allOutputsInShm(req) {
		a, release := s.opts.NewAllocator()
		defer release() // after the outputs were copied into their regions
		alloc = a
	}
	t1 := time.Now()
	rt.Input = t1.Sub(t0)
	var outs []inference.Tensor
	if sr, ok := m.(statsRunner); ok {
		var st inference.RunStats
		outs, st, err = sr.RunWithStats(ctx, inputs, outputs, alloc)
		rt.Queue, rt.Infer, rt.SharedRun = st.Queue, st.Compute, st.SharedRun
	} else {
		outs, err = m.Run(ctx, inputs, outputs, alloc)
		rt.Infer = time.Since(t1)
	}
	if err != nil {
		return nil, err
	}
	t2 := time.Now()
	shm, err := writeShmOutputs(req, outs, s.opts.SharedMemory, &releases)
	if err != nil {
		return nil, err
	}
	resp := encodeResponse(m, req.Id, outs, shm)
	rt.Output = time.Since(t2) // marshalling happens after the handler: not included
	return resp, nil
}

// ModelStreamInfer answers each request on the stream in order. A failed
// request gets its error in error_message and the stream goes on, as in
// Triton; the stream ends when the client closes its side.
func (s *service) ModelStreamInfer(stream pb.GRPCInferenceService_ModelStreamInferServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil // the client closed its side
		}
		if err != nil {
			return err
		}
		resp, err := s.ModelInfer(stream.Context(), req)
		out := &pb.ModelStreamInferResponse{InferResponse: resp}
		if err != nil {
			out = &pb.ModelStreamInferResponse{ErrorMessage: status.Convert(err).Message()}
		}
		if err := stream.Send(out); err != nil {
			return err
		}
	}
}

func (s *service) shmRegistry() (*sysshm.Registry, error) {
	if s.opts.SharedMemory == nil {
		return nil, status.Error(codes.Unimplemented, "system shared memory is not enabled on this node")
	}
	return s.opts.SharedMemory, nil
}

func (s *service) SystemSharedMemoryStatus(_ context.Context, req *pb.SystemSharedMemoryStatusRequest) (*pb.SystemSharedMemoryStatusResponse, error) {
	reg, err := s.shmRegistry()
	if err != nil {
		return nil, err
	}
	st, err := reg.Status(req.Name)
	if err != nil {
		return nil, grpcError(err)
	}
	resp := &pb.SystemSharedMemoryStatusResponse{Regions: map[string]*pb.SystemSharedMemoryStatusResponse_RegionStatus{}}
	for _, r := range st {
		resp.Regions[r.Name] = &pb.SystemSharedMemoryStatusResponse_RegionStatus{Name: r.Name, Key: r.Key, Offset: r.Offset, ByteSize: r.ByteSize}
	}
	return resp, nil
}

func (s *service) SystemSharedMemoryRegister(_ context.Context, req *pb.SystemSharedMemoryRegisterRequest) (*pb.SystemSharedMemoryRegisterResponse, error) {
	reg, err := s.shmRegistry()
	if err != nil {
		return nil, err
	}
	if err := reg.Register(req.Name, req.Key, req.Offset, req.ByteSize); err != nil {
		return nil, grpcError(err)
	}
	return &pb.SystemSharedMemoryRegisterResponse{}, nil
}

func (s *service) SystemSharedMemoryUnregister(_ context.Context, req *pb.SystemSharedMemoryUnregisterRequest) (*pb.SystemSharedMemoryUnregisterResponse, error) {
	reg, err := s.shmRegistry()
	if err != nil {
		return nil, err
	}
	if err := reg.Unregister(req.Name); err != nil {
		return nil, grpcError(err)
	}
	return &pb.SystemSharedMemoryUnregisterResponse{}, nil
}
