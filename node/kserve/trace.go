package kserve

import (
	"context"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/edgeai/edge-node/inference"
)

// traceContext reads W3C trace context (traceparent, tracestate): a
// caller's span becomes the parent of the request's server span.
var traceContext = propagation.TraceContext{}

const tracerName = "github.com/edgeai/edge-node/node/kserve"

// startServerSpan extracts the caller's trace context from r and starts the
// request's server span ("HTTP GET", "HTTP POST", ...) on the returned
// request's context.
func (h *Handler) startServerSpan(r *http.Request) (*http.Request, trace.Span) {
	ctx := traceContext.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := h.tracer.Start(ctx, "HTTP "+r.Method, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path),
			attribute.String("edge.request_id", RequestID(r.Context()))))
	return r.WithContext(ctx), span
}

// endServerSpan records the response status on span and ends it.
func endServerSpan(span trace.Span, status int) {
	span.SetAttributes(attribute.Int("http.response.status_code", status))
	if status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(status))
	}
	span.End()
}

// inferSpans records an inference request's phases under the request's
// server span (see InferSpans).
func (h *Handler) inferSpans(r *http.Request, model, version string, rt inference.RequestTimes) {
	InferSpans(r.Context(), h.tracer, model, version, rt)
}

// InferSpans records an inference request's phases as children of the
// span on ctx (the request's server span, REST or gRPC), from the times the
// frontend measured anyway (no clock read or span on the hot path while the
// request runs): decode, queue, infer, encode, one after the other from
// rt.At, each with the model and version. The parent gets the model,
// version and inference count. Nothing is done when the parent is not
// recording (no provider, or not sampled).
func InferSpans(ctx context.Context, tracer trace.Tracer, model, version string, rt inference.RequestTimes) {
	parent := trace.SpanFromContext(ctx)
	if !parent.IsRecording() {
		return
	}
	mv := trace.WithAttributes(attribute.String("edge.model", model), attribute.String("edge.version", version))
	parent.SetAttributes(attribute.String("edge.model", model), attribute.String("edge.version", version),
		attribute.Int64("edge.inferences", int64(rt.Inferences)))
	if rt.Failed {
		return
	}
	at := rt.At
	for _, p := range []struct {
		name string
		d    time.Duration
	}{{"decode", rt.Input}, {"queue", rt.Queue}, {"infer", rt.Infer}, {"encode", rt.Output}} {
		// The model and version on each phase too, so that a backend's
		// search for "infer" spans of one model finds them.
		_, s := tracer.Start(ctx, p.name, trace.WithTimestamp(at), mv)
		at = at.Add(p.d)
		s.End(trace.WithTimestamp(at))
	}
}
