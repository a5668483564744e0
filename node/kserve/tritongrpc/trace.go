package tritongrpc

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const tracerName = "github.com/edgeai/edge-node/node/kserve/tritongrpc"

// mdCarrier reads W3C trace context (traceparent, tracestate) from a call's
// incoming metadata (keys are lower case there, as the propagator asks).
type mdCarrier metadata.MD

func (c mdCarrier) Get(key string) string {
	if v := metadata.MD(c).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}
func (c mdCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }
func (c mdCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// startSpan starts the call's server span, named as OpenTelemetry names
// RPC spans ("inference.GRPCInferenceService/ModelInfer"), in the caller's
// trace when the metadata carries one.
func (s *service) startSpan(ctx context.Context, fullMethod string) (context.Context, trace.Span) {
	md, _ := metadata.FromIncomingContext(ctx)
	ctx = propagation.TraceContext{}.Extract(ctx, mdCarrier(md))
	name := strings.TrimPrefix(fullMethod, "/")
	svc, method, _ := strings.Cut(name, "/")
	return s.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
		attribute.String("rpc.system", "grpc"), attribute.String("rpc.service", svc), attribute.String("rpc.method", method)))
}

// endSpan records the call's status code on span and ends it; the codes
// that are the server's fault (as OpenTelemetry's conventions list them)
// mark it an error.
func endSpan(span trace.Span, err error) {
	code := status.Code(err)
	span.SetAttributes(attribute.Int("rpc.grpc.status_code", int(code)))
	switch code {
	case codes.Unknown, codes.DeadlineExceeded, codes.Unimplemented, codes.Internal, codes.Unavailable, codes.DataLoss:
		span.SetStatus(otelcodes.Error, code.String())
	}
	span.End()
}

func (s *service) traceUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, span := s.startSpan(ctx, info.FullMethod)
	resp, err := h(ctx, req)
	endSpan(span, err)
	return resp, err
}

func (s *service) traceStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, span := s.startSpan(ss.Context(), info.FullMethod)
	err := h(srv, tracedStream{ServerStream: ss, ctx: ctx})
	endSpan(span, err)
	return err
}

// tracedStream is a stream whose context carries its span.
type tracedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (t tracedStream) Context() context.Context { return t.ctx }
