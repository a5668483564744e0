package tritongrpc

import (
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"

	"github.com/edgeai/edge-node/node/kserve/kservetest"
	pb "github.com/edgeai/edge-node/node/kserve/tritongrpc/inferencepb"
)

// TestTraceContext: with a TracerProvider, ModelInfer continues the
// caller's traceparent (metadata) in a server span named for the RPC whose
// children are decode, queue, infer and encode with the model and version;
// a call without one starts a trace of its own; a stream is one span with
// each request's phases under it. Without a provider nothing is recorded
// (the REST tests cover the no-op path's cost).
func TestTraceContext(t *testing.T) {
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	c := startServer(t, newTestBackend(t), func(o *Options) { o.TracerProvider = tp })

	ctx := metadata.AppendToOutgoingContext(ctxT(t), "traceparent", "00-"+traceID+"-"+parentID+"-01")
	if _, err := c.ModelInfer(ctx, rawRequest("silero_vad", kservetest.SileroInputs())); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ServerLive(ctxT(t), &pb.ServerLiveRequest{}); err != nil {
		t.Fatal(err)
	}
	st, err := c.ModelStreamInfer(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := st.Send(rawRequest("silero_vad", kservetest.SileroInputs())); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err == nil {
		t.Fatal("stream: a response after CloseSend")
	}

	servers := map[string]sdktrace.ReadOnlySpan{}
	children := map[trace.SpanID][]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		if s.SpanKind() == trace.SpanKindServer {
			servers[s.Name()] = s
		} else {
			children[s.Parent().SpanID()] = append(children[s.Parent().SpanID()], s)
		}
	}
	infer, ok := servers["inference.GRPCInferenceService/ModelInfer"]
	if !ok {
		t.Fatalf("no ModelInfer server span among %v", servers)
	}
	if infer.SpanContext().TraceID().String() != traceID || infer.Parent().SpanID().String() != parentID {
		t.Errorf("ModelInfer span trace %s parent %s: not the caller's", infer.SpanContext().TraceID(), infer.Parent().SpanID())
	}
	attrs := func(s sdktrace.ReadOnlySpan) map[attribute.Key]string {
		m := map[attribute.Key]string{}
		for _, kv := range s.Attributes() {
			m[kv.Key] = kv.Value.Emit()
		}
		return m
	}
	if a := attrs(infer); a["rpc.system"] != "grpc" || a["rpc.method"] != "ModelInfer" || a["rpc.grpc.status_code"] != "0" || a["edge.model"] != "silero_vad" {
		t.Errorf("ModelInfer span attributes %v", a)
	}
	kids := children[infer.SpanContext().SpanID()]
	if len(kids) != 4 {
		t.Fatalf("ModelInfer span has %d children, want decode, queue, infer, encode", len(kids))
	}
	for i, name := range []string{"decode", "queue", "infer", "encode"} {
		if kids[i].Name() != name || attrs(kids[i])["edge.model"] != "silero_vad" || attrs(kids[i])["edge.version"] == "" {
			t.Errorf("child %d: %s %v, want %s with edge.model and edge.version", i, kids[i].Name(), attrs(kids[i]), name)
		}
	}
	if live, ok := servers["inference.GRPCInferenceService/ServerLive"]; !ok || live.Parent().IsValid() {
		t.Errorf("ServerLive: a root span (no traceparent) expected, got %v", live)
	}
	stream, ok := servers["inference.GRPCInferenceService/ModelStreamInfer"]
	if !ok {
		t.Fatal("no ModelStreamInfer span")
	}
	if n := len(children[stream.SpanContext().SpanID()]); n != 8 {
		t.Errorf("stream span has %d children, want 4 per request, 8", n)
	}
}
