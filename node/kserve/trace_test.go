package kserve

import (
	"context"
	"net/http"
	"strconv"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/edgeai/edge-node/node/kserve/kservetest"
)

// TestTraceContext: an inference continues the caller's W3C trace
// (traceparent) in a server span whose children are decode, queue, infer
// and encode, in that order and inside it; a missing or malformed
// traceparent starts a trace of its own.
func TestTraceContext(t *testing.T) {
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	for _, tc := range []struct {
		name, traceparent string
		continues         bool
	}{
		{"continued", "00-" + traceID + "-" + parentID + "-01", true},
		{"absent", "", false},
		{"all-zero trace id", "00-00000000000000000000000000000000-" + parentID + "-01", false},
		{"short", "00-" + traceID[:20] + "-" + parentID + "-01", false},
		{"not hex", "00-" + "zz" + traceID[2:] + "-" + parentID + "-01", false},
		{"version ff", "ff-" + traceID + "-" + parentID + "-01", false},
		{"garbage", "hello", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
			h, _ := newTestHandler(t, newTestBackend(t), func(o *Options) { o.TracerProvider = tp })
			body, hl := kservetest.BinaryRequest(t, "", kservetest.SileroInputs(), true)
			header := http.Header{headerContentLength: {strconv.Itoa(hl)}, "Content-Type": {"application/octet-stream"}}
			if tc.traceparent != "" {
				header.Set("traceparent", tc.traceparent)
			}
			if w := do(h, "POST", "/v2/models/silero_vad/infer", header, body); w.Code != http.StatusOK {
				t.Fatalf("infer: %d %s", w.Code, w.Body)
			}
			spans := rec.Ended()
			var server sdktrace.ReadOnlySpan
			children := map[string]sdktrace.ReadOnlySpan{}
			for _, s := range spans {
				if s.SpanKind() == trace.SpanKindServer {
					server = s
				} else {
					children[s.Name()] = s
				}
			}
			if server == nil {
				t.Fatalf("no server span among %d", len(spans))
			}
			sc := server.SpanContext()
			if got := sc.TraceID().String() == traceID && server.Parent().SpanID().String() == parentID; got != tc.continues {
				t.Errorf("server span trace %s parent %s: continues the caller's trace %v, want %v",
					sc.TraceID(), server.Parent().SpanID(), got, tc.continues)
			}
			if !tc.continues && server.Parent().IsValid() {
				t.Errorf("server span has parent %s, want a root", server.Parent().SpanID())
			}
			prev := server.StartTime()
			for _, name := range []string{"decode", "queue", "infer", "encode"} {
				c, ok := children[name]
				if !ok {
					t.Fatalf("no %s span (have %d spans)", name, len(spans))
				}
				if c.Parent().SpanID() != sc.SpanID() || c.SpanContext().TraceID() != sc.TraceID() {
					t.Errorf("%s span is not a child of the server span", name)
				}
				attrs := map[attribute.Key]string{}
				for _, kv := range c.Attributes() {
					attrs[kv.Key] = kv.Value.Emit()
				}
				if attrs["edge.model"] != "silero_vad" || attrs["edge.version"] == "" {
					t.Errorf("%s span attributes %v: want edge.model and edge.version", name, attrs)
				}
				if c.StartTime().Before(prev) || c.EndTime().Before(c.StartTime()) || c.EndTime().After(server.EndTime()) {
					t.Errorf("%s span [%v, %v] out of order (previous ended %v, server ended %v)", name, c.StartTime(), c.EndTime(), prev, server.EndTime())
				}
				prev = c.EndTime()
			}
		})
	}
}

// discardExporter takes batches and keeps nothing: the cost measured is
// the spans', not an exporter's.
type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }

// BenchmarkTraceOverhead: one binary silero_vad inference through the
// handler in process, with no TracerProvider (the daemon's default) and
// with the SDK's provider as the node builds it (parent-based sampler,
// here with ratio 0: the caller's flag decides), sampled and not, spans
// batched to an exporter that discards them (what tracing.endpoint costs
// per request before the network).
func BenchmarkTraceOverhead(b *testing.B) {
	backend := newTestBackend(b)
	body, hl := kservetest.BinaryRequest(b, "", kservetest.SileroInputs(), true)
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discardExporter{}),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0))))
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	for _, bc := range []struct {
		name, flags string
		tp          *sdktrace.TracerProvider
	}{{"off", "01", nil}, {"on", "01", tp}, {"on-unsampled", "00", tp}} {
		header := http.Header{headerContentLength: {strconv.Itoa(hl)}, "Content-Type": {"application/octet-stream"},
			"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-" + bc.flags}}
		h, _ := newTestHandler(b, backend, func(o *Options) {
			if bc.tp != nil {
				o.TracerProvider = bc.tp
			}
		})
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if w := do(h, "POST", "/v2/models/silero_vad/infer", header, body); w.Code != http.StatusOK {
					b.Fatalf("infer: %d %s", w.Code, w.Body)
				}
			}
		})
	}
}
