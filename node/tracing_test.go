package node

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/edgeai/edge-node/inference/inferencetest"
	"github.com/edgeai/edge-node/internal/buildinfo"
	pb "github.com/edgeai/edge-node/node/kserve/tritongrpc/inferencepb"
)

// otlpReceiver is a loopback OTLP/HTTP trace receiver: it decodes each
// POST /v1/traces body (protobuf, gzip or not) into an
// ExportTraceServiceRequest as a collector does, answers 200 with an empty
// ExportTraceServiceResponse, and keeps what it got.
type otlpReceiver struct {
	*httptest.Server
	t testing.TB

	mu      sync.Mutex
	spans   []receivedSpan
	headers []http.Header
}

// receivedSpan is a span with the attributes of its resource.
type receivedSpan struct {
	*tracepb.Span
	resource map[string]string
}

func (s receivedSpan) traceID() string { return hex.EncodeToString(s.TraceId) }
func (s receivedSpan) spanID() string  { return hex.EncodeToString(s.SpanId) }
func (s receivedSpan) parentID() string {
	return hex.EncodeToString(s.ParentSpanId)
}
func (s receivedSpan) attrs() map[string]string { return otlpAttrs(s.Attributes) }

func otlpAttrs(kvs []*commonpb.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		switch v := kv.Value.GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.Key] = v.StringValue
		case *commonpb.AnyValue_IntValue:
			m[kv.Key] = strconv.FormatInt(v.IntValue, 10)
		default:
			m[kv.Key] = fmt.Sprint(kv.Value.GetValue())
		}
	}
	return m
}

func newOTLPReceiver(t testing.TB) *otlpReceiver {
	r := &otlpReceiver{t: t}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.Close)
	return r
}

// newOTLPReceiverTLS is newOTLPReceiver over https, with its CA
// certificate (PEM) in the returned file.
func newOTLPReceiverTLS(t testing.TB) (*otlpReceiver, string) {
	r := &otlpReceiver{t: t}
	r.Server = httptest.NewUnstartedServer(http.HandlerFunc(r.serve))
	r.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake below is expected
	r.StartTLS()
	t.Cleanup(r.Close)
	ca := filepath.Join(t.TempDir(), "otel-ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Certificate().Raw})
	if err := os.WriteFile(ca, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return r, ca
}

func (r *otlpReceiver) serve(w http.ResponseWriter, req *http.Request) {
	if req.Method != "POST" || req.URL.Path != "/v1/traces" || req.Header.Get("Content-Type") != "application/x-protobuf" {
		r.t.Errorf("receiver: %s %s (%s), want POST /v1/traces application/x-protobuf", req.Method, req.URL.Path, req.Header.Get("Content-Type"))
		http.Error(w, "not an OTLP/HTTP protobuf trace export", http.StatusNotFound)
		return
	}
	var body io.Reader = io.LimitReader(req.Body, 16<<20)
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = io.LimitReader(zr, 64<<20)
	}
	b, err := io.ReadAll(body)
	var msg coltracepb.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(b, &msg)
	}
	if err != nil {
		r.t.Errorf("receiver: decoding the export: %v", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.headers = append(r.headers, req.Header.Clone())
	for _, rs := range msg.ResourceSpans {
		res := otlpAttrs(rs.GetResource().GetAttributes())
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				r.spans = append(r.spans, receivedSpan{Span: s, resource: res})
			}
		}
	}
	r.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// trace returns the spans received of the trace with id traceID.
func (r *otlpReceiver) trace(traceID string) []receivedSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []receivedSpan
	for _, s := range r.spans {
		if s.traceID() == traceID {
			out = append(out, s)
		}
	}
	return out
}

func (r *otlpReceiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.spans)
}

// inferTraced posts one silero_vad inference with the given traceparent
// ("" for none) and fails t unless it is answered 200.
func inferTraced(t testing.TB, url, traceparent string) {
	t.Helper()
	body, hl := binaryRequest(t, "traced", sileroInputs(), true)
	h := http.Header{headerContentLength: {strconv.Itoa(hl)}}
	if traceparent != "" {
		h.Set("traceparent", traceparent)
	}
	if code, _, got := call(t, "POST", url+"/v2/models/silero_vad/infer", h, body); code != http.StatusOK {
		t.Fatalf("infer: %d %s", code, got)
	}
}

func tracingRepo(t testing.TB) string {
	repo := t.TempDir()
	addToRepo(t, repo, "silero_vad", "1", modelBytes(t, "silero_vad", ""))
	return repo
}

const (
	callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	callerSpan  = "00f067aa0ba902b7"
)

// TestTracingExportsToOTLPCollector: with tracing.endpoint set, a request
// carrying a caller's traceparent reaches a real OTLP/HTTP receiver as a
// server span in the caller's trace, child of the caller's span, with
// decode, queue, infer and encode children that carry the model and
// version; the resource names the service, its version and the host; the
// configured headers and gzip go with the export; what is exported is
// counted. Spans still queued at shutdown are flushed by the drain.
func TestTracingExportsToOTLPCollector(t *testing.T) {
	rcv := newOTLPReceiver(t)
	cfg := testConfig(t, t.TempDir(), tracingRepo(t))
	cfg.Tracing.Endpoint = rcv.URL // no path: /v1/traces
	cfg.Tracing.Headers = map[string]string{"Authorization": "Bearer t0k3n"}
	n := startNode(t, cfg)

	inferTraced(t, n.url, "00-"+callerTrace+"-"+callerSpan+"-01")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := n.tracing.tp.ForceFlush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	spans := rcv.trace(callerTrace)
	var server *receivedSpan
	children := map[string]receivedSpan{}
	for i, s := range spans {
		if s.Kind == tracepb.Span_SPAN_KIND_SERVER {
			server = &spans[i]
		} else {
			children[s.Name] = s
		}
	}
	if server == nil {
		t.Fatalf("no server span in the caller's trace among %d spans received (%d in all)", len(spans), rcv.count())
	}
	if server.parentID() != callerSpan {
		t.Errorf("server span's parent %s, want the caller's span %s", server.parentID(), callerSpan)
	}
	if a := server.attrs(); a["url.path"] != "/v2/models/silero_vad/infer" || a["http.response.status_code"] != "200" ||
		a["edge.model"] != "silero_vad" || a["edge.version"] != "1" {
		t.Errorf("server span %q attributes %v", server.Name, a)
	}
	for _, name := range []string{"decode", "queue", "infer", "encode"} {
		c, ok := children[name]
		if !ok {
			t.Errorf("no %s span (have %d spans in the trace)", name, len(spans))
			continue
		}
		if c.parentID() != server.spanID() {
			t.Errorf("%s span's parent %s, want the server span %s", name, c.parentID(), server.spanID())
		}
		if a := c.attrs(); a["edge.model"] != "silero_vad" || a["edge.version"] != "1" {
			t.Errorf("%s span attributes %v: want edge.model silero_vad, edge.version 1", name, a)
		}
	}
	res := server.resource
	if res["service.name"] != "edge-node" || res["service.version"] != buildinfo.Version() || res["host.name"] == "" {
		t.Errorf("resource %v: want service.name edge-node, service.version %s, host.name", res, buildinfo.Version())
	}
	rcv.mu.Lock()
	h := rcv.headers[0]
	rcv.mu.Unlock()
	if h.Get("Authorization") != "Bearer t0k3n" || h.Get("Content-Encoding") != "gzip" {
		t.Errorf("export headers: Authorization %q, Content-Encoding %q", h.Get("Authorization"), h.Get("Content-Encoding"))
	}
	if got, want := metricValue(t, n.url, `edge_trace_spans_total{result="exported"}`), float64(rcv.count()); got != want {
		t.Errorf("edge_trace_spans_total{result=\"exported\"} %v, the receiver has %v", got, want)
	}

	// Queued, not flushed: the drain at stop sends them. One over REST,
	// one over gRPC (the caller's traceparent in the metadata).
	const second, overGRPC = "5bf92f3577b34da6a3ce929d0e0e4737", "7bf92f3577b34da6a3ce929d0e0e4739"
	inferTraced(t, n.url, "00-"+second+"-"+callerSpan+"-01")
	conn, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := &pb.ModelInferRequest{ModelName: "silero_vad"}
	for _, in := range sileroInputs() {
		req.Inputs = append(req.Inputs, &pb.ModelInferRequest_InferInputTensor{Name: in.Name, Datatype: in.DataType.String(), Shape: in.Shape})
		req.RawInputContents = append(req.RawInputContents, in.Data)
	}
	gctx := metadata.AppendToOutgoingContext(ctx, "traceparent", "00-"+overGRPC+"-"+callerSpan+"-01")
	if _, err := pb.NewGRPCInferenceServiceClient(conn).ModelInfer(gctx, req); err != nil {
		t.Fatalf("gRPC infer: %v", err)
	}
	n.stop(t)
	if got := len(rcv.trace(second)); got != 5 {
		t.Errorf("after stop: %d spans of the second request's trace, want 5 (server, decode, queue, infer, encode)", got)
	}
	names := map[string]string{} // name -> parent span id
	for _, s := range rcv.trace(overGRPC) {
		names[s.Name] = s.parentID()
	}
	if names["inference.GRPCInferenceService/ModelInfer"] != callerSpan || len(names) != 5 || names["infer"] == "" {
		t.Errorf("gRPC call's trace: spans (name: parent) %v; want the ModelInfer server span under the caller's, and its 4 phases", names)
	}
}

// TestTracingSampleRatio: with sample_ratio 0, a request with no
// traceparent, and one whose caller did not sample, export nothing; a
// caller's sampled traceparent is still followed (parent-based), which is
// also what shows the exporter works.
func TestTracingSampleRatio(t *testing.T) {
	rcv := newOTLPReceiver(t)
	cfg := testConfig(t, t.TempDir(), tracingRepo(t))
	cfg.Tracing.Endpoint = rcv.URL + "/v1/traces"
	cfg.Tracing.SampleRatio = 0
	n := startNode(t, cfg)

	const unsampled = "6bf92f3577b34da6a3ce929d0e0e4738"
	inferTraced(t, n.url, "")
	inferTraced(t, n.url, "00-"+unsampled+"-"+callerSpan+"-00")
	inferTraced(t, n.url, "00-"+callerTrace+"-"+callerSpan+"-01")
	n.stop(t)
	if got, all := len(rcv.trace(callerTrace)), rcv.count(); got != 5 || all != 5 {
		t.Errorf("received %d spans, %d of the sampled caller's trace; want only its 5", all, got)
	}
}

// TestTracingHTTPSCollector: an https endpoint is checked against
// tracing.ca_file (the spans arrive), and against the system roots without
// it (a test CA is not among them: the exports fail, and are counted).
func TestTracingHTTPSCollector(t *testing.T) {
	rcv, ca := newOTLPReceiverTLS(t)
	repo := tracingRepo(t)
	cfg := testConfig(t, t.TempDir(), repo)
	cfg.Tracing.Endpoint, cfg.Tracing.CAFile = rcv.URL, ca
	n := startNode(t, cfg)
	inferTraced(t, n.url, "00-"+callerTrace+"-"+callerSpan+"-01")
	n.stop(t)
	if got := len(rcv.trace(callerTrace)); got != 5 {
		t.Errorf("over https with ca_file: %d spans of the trace, want 5", got)
	}

	cfg = testConfig(t, t.TempDir(), repo)
	cfg.Tracing.Endpoint = rcv.URL
	before := rcv.count()
	n, logs := startNodeCapturing(t, cfg)
	inferTraced(t, n.url, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := n.tracing.tp.ForceFlush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if got := metricValue(t, n.url, `edge_trace_spans_total{result="failed"}`); got < 5 || rcv.count() != before {
		t.Errorf("system roots only: %v spans failed, %d received; want the export refused", got, rcv.count()-before)
	}
	if len(logs.lines("span export failed", "certificate")) != 1 {
		t.Error("no log line naming the certificate problem")
	}
	n.stop(t)
}

// TestTracingUnreachableCollector: a collector that refuses connections, or
// one that takes an export and never answers, blocks no request; failed
// exports are counted and logged once; a stuck export does not hold
// shutdown past the drain timeout: it is cancelled.
func TestTracingUnreachableCollector(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := "http://" + ln.Addr().String()
		ln.Close()
		cfg := testConfig(t, t.TempDir(), tracingRepo(t))
		cfg.Tracing.Endpoint = dead
		n, logs := startNodeCapturing(t, cfg)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for range 3 {
			inferTraced(t, n.url, "")
			if err := n.tracing.tp.ForceFlush(ctx); err != nil {
				t.Fatalf("flush: %v", err)
			}
		}
		if got := metricValue(t, n.url, `edge_trace_spans_total{result="failed"}`); got < 15 {
			t.Errorf("edge_trace_spans_total{result=\"failed\"} %v after 3 failed exports of 5 spans or more", got)
		}
		if got := metricValue(t, n.url, `edge_trace_spans_total{result="exported"}`); got != 0 {
			t.Errorf("edge_trace_spans_total{result=\"exported\"} %v with no collector", got)
		}
		// Three failures within the minute: one line.
		if got := logs.lines(`"component":"tracing"`, "span export failed"); len(got) != 1 {
			t.Errorf("%d log lines for 3 failed exports, want 1 (rate-limited)", len(got))
		}
		n.stop(t)
	})
	t.Run("stalled", func(t *testing.T) {
		got := make(chan struct{}, 16)
		cancelled := make(chan struct{}, 16)
		release := make(chan struct{})
		stall := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			got <- struct{}{}
			select {
			case <-r.Context().Done(): // the exporter gave up on the request
				cancelled <- struct{}{}
			case <-release:
			}
		}))
		defer stall.Close()
		defer close(release)
		cfg := testConfig(t, t.TempDir(), tracingRepo(t))
		cfg.Tracing.Endpoint = stall.URL
		cfg.Tracing.Timeout = time.Hour // only the drain timeout can end the export
		cfg.DrainTimeout = 2 * time.Second
		n := startNode(t, cfg)
		inferTraced(t, n.url, "")
		flushed := make(chan error, 1)
		go func() { flushed <- n.tracing.tp.ForceFlush(context.Background()) }()
		select {
		case <-got:
		case <-time.After(time.Minute):
			t.Fatal("no export reached the collector within a minute")
		}
		// The export is stuck in the collector: requests are still served.
		for range 3 {
			inferTraced(t, n.url, "")
		}
		n.stop(t) // Run returns: the drain timeout ended the flush
		select {
		case <-cancelled:
		case <-time.After(time.Minute):
			t.Fatal("the stuck export was not cancelled at shutdown")
		}
		if err := <-flushed; err != nil {
			t.Logf("flush in flight at shutdown: %v", err)
		}
	})
}

// TestParseTracingHeaders: EDGE_NODE_TRACING_HEADERS's format, and errors
// that do not quote a value (it may be a token).
func TestParseTracingHeaders(t *testing.T) {
	h, err := ParseTracingHeaders(" Authorization=Bearer%20abc , x-tenant=edge%2C1,")
	if err != nil || len(h) != 2 || h["Authorization"] != "Bearer abc" || h["x-tenant"] != "edge,1" {
		t.Errorf("parsed %v, %v", h, err)
	}
	if h, err := ParseTracingHeaders(""); err != nil || len(h) != 0 {
		t.Errorf("empty: %v, %v", h, err)
	}
	for _, in := range []string{"s3cr3t", "=s3cr3t", "a=s3cr3t%zz"} {
		_, err := ParseTracingHeaders(in)
		if err == nil {
			t.Errorf("%q accepted", in)
		} else if strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("%q: error %q quotes the value", in, err)
		}
	}
}

// TestTracingExportURL: /v1/traces is added to an endpoint with no path;
// a path is kept.
func TestTracingExportURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:4318":          "http://127.0.0.1:4318/v1/traces",
		"https://otel.example/":          "https://otel.example/v1/traces",
		"https://gw.example/otlp/traces": "https://gw.example/otlp/traces",
		"http://[::1]:4318":              "http://[::1]:4318/v1/traces",
	} {
		got, err := TracingConfig{Endpoint: in}.exportURL()
		if err != nil || got != want {
			t.Errorf("%s: %q, %v; want %q", in, got, err, want)
		}
	}
}

// TestTracingBadCAFile: an unreadable or empty tracing.ca_file is a
// start-up error naming the key (a configuration mistake, unlike an
// unreachable collector).
func TestTracingBadCAFile(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "empty.pem")
	if err := os.WriteFile(empty, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, ca := range []string{filepath.Join(t.TempDir(), "absent.pem"), empty} {
		cfg := testConfig(t, t.TempDir(), "")
		cfg.Tracing.Endpoint, cfg.Tracing.CAFile = "https://127.0.0.1:4318", ca
		n, err := newNode(context.Background(), cfg, testLogger(t), inferencetest.Env(t))
		if err == nil {
			n.Close()
			t.Fatalf("%s: the node started", ca)
		}
		if !strings.Contains(err.Error(), "tracing.ca_file") {
			t.Errorf("%s: error %q does not name tracing.ca_file", ca, err)
		}
	}
}
