package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"golang.org/x/net/http/httpguts"

	"github.com/edgeai/edge-node/internal/buildinfo"
)

// TracingConfig configures the export of the inference frontends'
// OpenTelemetry spans (a server span per REST request or gRPC call,
// continuing the caller's W3C traceparent, with decode, queue, infer and
// encode children) to an OTLP/HTTP collector. Off by default: with no
// endpoint no span is made.
type TracingConfig struct {
	// Endpoint is the collector's OTLP/HTTP URL, http:// or https://
	// (e.g. http://127.0.0.1:4318, an OpenTelemetry Collector's or
	// Jaeger's OTLP/HTTP port); with no path, or "/", spans go to
	// /v1/traces, another path is used as it is. "" exports nothing (the
	// default). An unreachable collector never blocks or fails serving:
	// spans are dropped, counted and logged (rate-limited).
	Endpoint string `yaml:"endpoint"`
	// SampleRatio is the share of traces started here that are recorded
	// and exported, 0 to 1; a request whose traceparent comes from a
	// caller follows the caller's sampled flag instead (parent-based).
	SampleRatio float64 `yaml:"sample_ratio"`
	// Headers are sent with every export (e.g. an authorization header
	// the collector requires). Also EDGE_NODE_TRACING_HEADERS, as
	// comma-separated name=value pairs with URL-escaped values.
	Headers map[string]string `yaml:"headers"`
	// Timeout bounds one export of a batch of spans, retries included.
	Timeout time.Duration `yaml:"timeout"`
	// CAFile is a PEM bundle the https collector's certificate is checked
	// against ("": the system roots). Not allowed with http://.
	CAFile string `yaml:"ca_file"`
}

func defaultTracingConfig() TracingConfig {
	return TracingConfig{SampleRatio: 1, Timeout: 10 * time.Second}
}

// validate reports the first problem, naming the field. The values are
// checked with the exporter off too: a typo should not wait for the day
// tracing is turned on.
func (c TracingConfig) validate() error {
	if math.IsNaN(c.SampleRatio) || c.SampleRatio < 0 || c.SampleRatio > 1 {
		return fmt.Errorf("tracing.sample_ratio %v: want a number from 0 to 1", c.SampleRatio)
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("tracing.timeout must be positive, got %v", c.Timeout)
	}
	for k, v := range c.Headers {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("tracing.headers: %q is not an HTTP header name", k)
		}
		switch http.CanonicalHeaderKey(k) {
		case "Content-Type", "Content-Encoding", "Content-Length", "Host", "Transfer-Encoding", "Connection":
			return fmt.Errorf("tracing.headers: %s is set by the exporter", k)
		}
		if !httpguts.ValidHeaderFieldValue(v) {
			return fmt.Errorf("tracing.headers.%s: the value has control characters", k)
		}
	}
	if c.Endpoint == "" {
		return nil
	}
	if _, err := c.exportURL(); err != nil {
		return err
	}
	if c.CAFile != "" && strings.HasPrefix(c.Endpoint, "http://") {
		return fmt.Errorf("tracing: ca_file is for an https:// endpoint, not %q", c.Endpoint)
	}
	return nil
}

// exportURL is the URL spans are posted to: the endpoint, with /v1/traces
// when it has no path.
func (c TracingConfig) exportURL() (string, error) {
	u, err := url.Parse(c.Endpoint)
	if err != nil {
		return "", fmt.Errorf("tracing.endpoint %q: %w", c.Endpoint, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("tracing.endpoint %q: scheme %q, want http or https", c.Endpoint, u.Scheme)
	case u.Host == "" || u.Hostname() == "":
		return "", fmt.Errorf("tracing.endpoint %q: no host", c.Endpoint)
	case u.User != nil:
		return "", fmt.Errorf("tracing.endpoint: credentials in the URL; put them in tracing.headers")
	case u.RawQuery != "" || u.Fragment != "":
		return "", fmt.Errorf("tracing.endpoint %q: want scheme://host:port[/path], no query or fragment", c.Endpoint)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/traces"
	}
	return u.String(), nil
}

// ParseTracingHeaders reads headers written as OTEL_EXPORTER_OTLP_HEADERS
// is: comma-separated name=value pairs, values URL-escaped ("%2C" for a
// comma, "%20" for a space). Names and values are checked by Validate.
// Errors never quote a value: it may be a token.
func ParseTracingHeaders(s string) (map[string]string, error) {
	h := map[string]string{}
	for i, kv := range strings.Split(s, ",") {
		if strings.TrimSpace(kv) == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("entry %d is not name=value", i+1)
		}
		v, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("header %q: the value is not URL-escaped correctly", k)
		}
		h[k] = v
	}
	return h, nil
}

// Span export runs beside serving, never in its way: a frontend ends spans
// into the batch span processor's queue (a full queue drops them), and a
// background goroutine posts batches to the collector, each bounded by
// tracing.timeout. Start-up does not contact the collector; shutdown
// flushes what is queued within what is left of the drain timeout and then
// cancels any export still in flight.

// tracing is the node's span pipeline, shared by the REST and gRPC
// frontends (nil when tracing.endpoint is "").
type tracing struct {
	tp  *sdktrace.TracerProvider
	exp *observedExporter
	tr  *http.Transport // the exporter's: its idle connections close at shutdown

	once sync.Once
}

func newTracing(cfg TracingConfig, log zerolog.Logger, reg prometheus.Registerer) (*tracing, error) {
	if cfg.Endpoint == "" {
		return nil, nil
	}
	target, err := cfg.exportURL()
	if err != nil {
		return nil, err
	}
	// The exporter's own client, so that neither OTEL_EXPORTER_OTLP_*
	// variables nor its defaults decide TLS and timeouts: the config does.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if strings.HasPrefix(target, "https://") {
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("tracing.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("tracing.ca_file %s: no PEM certificate in it", cfg.CAFile)
			}
			tr.TLSClientConfig.RootCAs = pool
		}
	}
	headers := make(map[string]string, len(cfg.Headers))
	for k, v := range cfg.Headers {
		headers[k] = v
	}
	client, err := otlptracehttp.New(context.Background(),
		otlptracehttp.WithEndpointURL(target),
		otlptracehttp.WithHTTPClient(&http.Client{Transport: tr, Timeout: cfg.Timeout}),
		otlptracehttp.WithHeaders(headers),
		otlptracehttp.WithEncoding(otlptracehttp.EncodingProtobuf),
		otlptracehttp.WithCompression(otlptracehttp.GzipCompression),
		otlptracehttp.WithTimeout(cfg.Timeout),
		otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: true, InitialInterval: time.Second,
			MaxInterval: 5 * time.Second, MaxElapsedTime: cfg.Timeout}),
	)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	exp, err := newObservedExporter(client, log, reg)
	if err != nil {
		return nil, err
	}
	attrs := []attribute.KeyValue{semconv.ServiceName("edge-node"), semconv.ServiceVersion(buildinfo.Version())}
	if host, err := os.Hostname(); err == nil && host != "" {
		attrs = append(attrs, semconv.HostName(host))
	}
	res, err := resource.New(context.Background(), resource.WithTelemetrySDK(), resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithAttributes(attrs...))
	if err != nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SampleRatio))),
		// Explicit, so that no OTEL_BSP_* variable changes them.
		sdktrace.WithBatcher(exp, sdktrace.WithMaxQueueSize(sdktrace.DefaultMaxQueueSize),
			sdktrace.WithMaxExportBatchSize(sdktrace.DefaultMaxExportBatchSize),
			sdktrace.WithBatchTimeout(sdktrace.DefaultScheduleDelay*time.Millisecond),
			sdktrace.WithExportTimeout(cfg.Timeout)),
	)
	log.Info().Str("component", "tracing").Str("endpoint", target).Float64("sample_ratio", cfg.SampleRatio).Msg("exporting spans over OTLP/HTTP")
	return &tracing{tp: tp, exp: exp, tr: tr}, nil
}

// shutdown flushes the queued spans and stops the exporter, waiting no
// longer than ctx; an export still running then is cancelled. Only the
// first call does anything. A failure is logged, not returned: losing the
// last spans must not make the node's exit a failure.
func (t *tracing) shutdown(ctx context.Context) {
	t.once.Do(func() {
		err := t.tp.Shutdown(ctx)
		t.exp.abort()
		t.tr.CloseIdleConnections()
		if err != nil {
			t.exp.log.Warn().Err(err).Msg("span export: shutdown did not finish; the last spans may be lost")
		}
	})
}

// observedExporter wraps the OTLP exporter: it counts the spans exported
// and those lost to a failed export, logs failures (the first, then at most
// one a minute), and reports success to the batch processor, which would
// otherwise hand every failure to OpenTelemetry's global error handler
// (stderr). abort cancels exports in flight.
type observedExporter struct {
	next    sdktrace.SpanExporter
	log     zerolog.Logger // component=tracing
	failLog zerolog.Logger // log, rate-limited
	spans   *prometheus.CounterVec

	stop  context.Context
	abort context.CancelFunc
}

func newObservedExporter(next sdktrace.SpanExporter, log zerolog.Logger, reg prometheus.Registerer) (*observedExporter, error) {
	e := &observedExporter{next: next, log: log.With().Str("component", "tracing").Logger(),
		spans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_trace_spans_total",
			Help: "Spans handed to the OTLP exporter, by result: exported, or failed (the export failed and the spans were dropped).",
		}, []string{"result"})}
	e.failLog = e.log.Sample(&zerolog.BurstSampler{Burst: 1, Period: time.Minute})
	e.stop, e.abort = context.WithCancel(context.Background())
	for _, r := range []string{"exported", "failed"} {
		e.spans.WithLabelValues(r)
	}
	if reg != nil {
		if err := reg.Register(e.spans); err != nil {
			return nil, err
		}
	}
	return e, nil
}

func (e *observedExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(e.stop, cancel)()
	if err := e.next.ExportSpans(ctx, spans); err != nil {
		e.spans.WithLabelValues("failed").Add(float64(len(spans)))
		if errors.Is(err, context.Canceled) && e.stop.Err() != nil {
			err = errors.New("cancelled at shutdown")
		}
		e.failLog.Warn().Err(err).Int("spans", len(spans)).Msg("span export failed; spans dropped (logged at most once a minute, counted in edge_trace_spans_total)")
		return nil
	}
	e.spans.WithLabelValues("exported").Add(float64(len(spans)))
	return nil
}

func (e *observedExporter) Shutdown(ctx context.Context) error { return e.next.Shutdown(ctx) }
