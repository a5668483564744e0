package kserve

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/internal/buildinfo"
	"github.com/edgeai/edge-node/node/kserve/sysshm"
)

// Backend is what the HTTP layer needs from the inference engine.
// inference.Router satisfies it.
type Backend interface {
	// Acquire returns the model version that serves (model, version) and a
	// release func the caller calls exactly once when done with it; version
	// "" is the model's default version. Errors wrap inference.ErrNotFound
	// (no such model or version) or inference.ErrUnavailable (loading,
	// closing).
	Acquire(model, version string) (inference.Model, func(), error)
	// Ready reports whether the node serves inference (store open, models
	// loaded).
	Ready() bool
}

// ModelIndexer is implemented by a Backend that can list its model
// versions; with it the handler serves POST /v2/repository/index and
// advertises the "model_repository" extension.
type ModelIndexer interface {
	// Index lists every model version the backend knows. ctx is the
	// request's: the listing stops when the client goes away.
	Index(ctx context.Context) []RepositoryEntry
}

// ModelParameterizer is implemented by a Backend that knows more about a
// model version than its tensors (where it came from: training run, data
// set, commit, metrics; an ensemble's members); GET /v2/models/{m} then
// carries them as `parameters`.
type ModelParameterizer interface {
	// ModelParameters returns the version's parameters (nil: none). ctx
	// is the request's.
	ModelParameters(ctx context.Context, model, version string) map[string]string
}

// RepositoryEntry is one model version in the repository index.
type RepositoryEntry struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
	State   string `json:"state"` // "READY", "LOADING", "UNAVAILABLE", ...
	Reason  string `json:"reason"`
}

// Options configure the handler. Start from DefaultOptions.
type Options struct {
	// ServerName and ServerVersion are reported by GET /v2.
	ServerName    string
	ServerVersion string
	// MaxBodyBytes bounds request bodies; larger ones get 413.
	MaxBodyBytes int64
	// NewAllocator returns the allocator for one request's tensors and a
	// func that releases everything it handed out, called once the
	// response is written. The default allocates on the Go heap.
	NewAllocator func() (alloc inference.Allocator, release func())
	// Registerer receives the handler's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// EnablePprof serves net/http/pprof under /debug/pprof/.
	EnablePprof bool
	// ErrorLogBurst is how many per-request errors are logged per
	// ErrorLogPeriod; the rest are dropped (they are still counted).
	ErrorLogBurst  uint32
	ErrorLogPeriod time.Duration
	// RepositoryControl enables Triton's POST /v2/repository/models/{m}/load
	// and /unload on a backend that is a RepositoryController (off: they
	// answer 501, like Triton's default model control mode refusing them).
	RepositoryControl bool
	// RepositoryToken, when set, is required on load and unload as
	// "Authorization: Bearer <token>" (the node passes its admin token).
	RepositoryToken string
	// TracerProvider makes the spans of each request (a server span
	// continuing the caller's W3C trace context, with decode, queue,
	// infer and encode children for an inference); nil: none.
	TracerProvider trace.TracerProvider
	// AccessLogEvery writes an access log line (info) for every Nth request:
	// 0 none (errors are logged anyway, as "request rejected"), 1 all.
	AccessLogEvery uint32
	// SharedMemory, when set, serves Triton's system shared-memory
	// extension: /v2/systemsharedmemory/... and tensors naming a region.
	SharedMemory *sysshm.Registry
}

// DefaultOptions returns a fresh Options with the defaults.
func DefaultOptions() Options {
	return Options{
		ServerName:     "edge-node",
		ServerVersion:  buildinfo.Version(),
		MaxBodyBytes:   64 << 20,
		NewAllocator:   func() (inference.Allocator, func()) { return inference.HeapAllocator{}, func() {} },
		ErrorLogBurst:  10,
		ErrorLogPeriod: time.Second,
	}
}

// Handler serves the KServe v2 REST API.
type Handler struct {
	backend Backend
	opts    Options
	log     zerolog.Logger // component=kserve
	errLog  zerolog.Logger // log, rate-limited, for errors that fire per request
	// accessLog is the sampled access log; nil when off.
	accessLog *zerolog.Logger
	tracer    trace.Tracer
	metrics   *metrics
	mux       *http.ServeMux
}

// NewHandler builds the handler. log should carry no "component" field: the
// handler adds component=kserve. It fails only when registering its metrics
// fails (for instance, twice on one registry).
func NewHandler(b Backend, log zerolog.Logger, opts Options) (*Handler, error) {
	def := DefaultOptions()
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = def.MaxBodyBytes
	}
	if opts.NewAllocator == nil {
		opts.NewAllocator = def.NewAllocator
	}
	if opts.ServerName == "" {
		opts.ServerName = def.ServerName
	}
	if opts.ErrorLogBurst == 0 {
		opts.ErrorLogBurst = def.ErrorLogBurst
	}
	if opts.ErrorLogPeriod <= 0 {
		opts.ErrorLogPeriod = def.ErrorLogPeriod
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	h := &Handler{backend: b, opts: opts, metrics: m, mux: http.NewServeMux()}
	h.log = log.With().Str("component", "kserve").Logger()
	h.errLog = h.log.Sample(&zerolog.BurstSampler{Burst: opts.ErrorLogBurst, Period: opts.ErrorLogPeriod})
	h.accessLog = newAccessLog(h.log, opts.AccessLogEvery)
	tp := opts.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	h.tracer = tp.Tracer(tracerName)

	h.route("GET", "/v2/health/live", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	h.route("GET", "/v2/health/ready", h.serveReady)
	h.route("GET", "/v2", h.serveServerMetadata)
	h.route("GET", "/v2/models/{model}", h.serveModelMetadata)
	h.route("GET", "/v2/models/{model}/versions/{version}", h.serveModelMetadata)
	h.route("GET", "/v2/models/{model}/ready", h.serveModelReady)
	h.route("GET", "/v2/models/{model}/versions/{version}/ready", h.serveModelReady)
	h.route("POST", "/v2/models/{model}/infer", h.serveInfer)
	h.route("POST", "/v2/models/{model}/versions/{version}/infer", h.serveInfer)
	h.route("GET", "/v2/models/{model}/config", h.serveModelConfig)
	h.route("GET", "/v2/models/{model}/versions/{version}/config", h.serveModelConfig)
	if _, ok := b.(StatsReader); ok {
		// GET only: a method-less /v2/models/stats would collide with
		// GET /v2/models/{model}; that route's 405 covers other methods.
		h.mux.HandleFunc("GET /v2/models/stats", h.serveModelStats)
		h.route("GET", "/v2/models/{model}/stats", h.serveModelStats)
		h.route("GET", "/v2/models/{model}/versions/{version}/stats", h.serveModelStats)
	}
	if _, ok := b.(ModelIndexer); ok {
		h.route("POST", "/v2/repository/index", h.serveIndex)
	}
	if opts.SharedMemory != nil {
		h.mux.HandleFunc("GET /v2/systemsharedmemory/status", h.serveShmStatus)
		h.route("GET", "/v2/systemsharedmemory/region/{region}/status", h.serveShmStatus)
		h.route("POST", "/v2/systemsharedmemory/region/{region}/register", h.serveShmRegister)
		h.route("POST", "/v2/systemsharedmemory/unregister", h.serveShmUnregister)
		h.route("POST", "/v2/systemsharedmemory/region/{region}/unregister", h.serveShmUnregister)
	}
	h.mux.HandleFunc("/v2/cudasharedmemory/", func(w http.ResponseWriter, r *http.Request) {
		h.writeError(w, r, &apiError{status: http.StatusNotImplemented, reason: reasonUnsupported,
			msg: "CUDA shared memory is not supported on this node (use system shared memory)"})
	})
	if _, ok := b.(RepositoryController); ok {
		h.route("POST", "/v2/repository/models/{model}/load", h.serveRepositoryLoad)
		h.route("POST", "/v2/repository/models/{model}/unload", h.serveRepositoryUnload)
	}
	if opts.EnablePprof {
		h.mux.HandleFunc("/debug/pprof/", pprof.Index)
		h.mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		h.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		h.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		h.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.writeError(w, r, &apiError{status: http.StatusNotFound, reason: reasonNotFound, msg: "no route for " + r.Method + " " + r.URL.Path})
	})
	return h, nil
}

// route registers handler for method and path, and a JSON 405 for the
// path's other methods (a method-less pattern is less specific, so it only
// sees those).
func (h *Handler) route(method, path string, handler http.HandlerFunc) {
	h.mux.HandleFunc(method+" "+path, handler)
	h.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", method)
		h.writeError(w, r, &apiError{status: http.StatusMethodNotAllowed, reason: reasonMethod,
			msg: r.Method + " is not allowed on " + r.URL.Path + " (use " + method + ")"})
	})
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r = withRequestID(w, r)
	if h.opts.TracerProvider == nil && h.accessLog == nil {
		h.mux.ServeHTTP(w, r)
		return
	}
	h.serveObserved(w, r)
}

func (h *Handler) serveReady(w http.ResponseWriter, _ *http.Request) {
	if h.backend.Ready() {
		w.WriteHeader(http.StatusOK)
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
}

// Extensions are the protocol extensions a frontend over b serves (GET
// /v2, gRPC ServerMetadata), shm telling whether system shared memory is on.
func Extensions(b Backend, shm bool) []string {
	ext := []string{"binary_tensor_data", "model_configuration"}
	if shm {
		ext = append(ext, "system_shared_memory")
	}
	if _, ok := b.(ModelIndexer); ok {
		ext = append(ext, "model_repository")
	}
	if _, ok := b.(StatsReader); ok {
		ext = append(ext, "statistics")
	}
	return ext
}

func (h *Handler) serveServerMetadata(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"name": h.opts.ServerName, "version": h.opts.ServerVersion, "extensions": Extensions(h.backend, h.opts.SharedMemory != nil),
	})
}

type tensorMetadata struct {
	Name     string  `json:"name"`
	DataType string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

type modelMetadata struct {
	Name     string           `json:"name"`
	Versions []string         `json:"versions,omitempty"`
	Platform string           `json:"platform"`
	Inputs   []tensorMetadata `json:"inputs"`
	Outputs  []tensorMetadata `json:"outputs"`
	// Parameters are the backend's ModelParameters (lineage).
	Parameters map[string]string `json:"parameters,omitempty"`
}

func tensorsMetadata(infos []inference.TensorInfo) []tensorMetadata {
	out := make([]tensorMetadata, len(infos))
	for i, info := range infos {
		shape := info.Shape
		if shape == nil {
			shape = []int64{}
		}
		out[i] = tensorMetadata{Name: info.Name, DataType: info.DataType.String(), Shape: shape}
	}
	return out
}

func (h *Handler) serveModelMetadata(w http.ResponseWriter, r *http.Request) {
	m, release, err := h.backend.Acquire(r.PathValue("model"), r.PathValue("version"))
	if err != nil {
		h.writeError(w, r, toAPIError(err))
		return
	}
	defer release()
	md := modelMetadata{
		Name: m.Name(), Platform: m.Platform(),
		Inputs: tensorsMetadata(m.Inputs()), Outputs: tensorsMetadata(m.Outputs()),
	}
	if ix, ok := h.backend.(ModelIndexer); ok {
		for _, st := range ix.Index(r.Context()) {
			if st.Name == m.Name() && st.Version != "" {
				md.Versions = append(md.Versions, st.Version)
			}
		}
	}
	if len(md.Versions) == 0 && m.Version() != "" {
		md.Versions = []string{m.Version()}
	}
	if mp, ok := h.backend.(ModelParameterizer); ok {
		md.Parameters = mp.ModelParameters(r.Context(), m.Name(), m.Version())
	}
	writeJSON(w, http.StatusOK, md)
}

func (h *Handler) serveModelReady(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("model")
	_, release, err := h.backend.Acquire(name, r.PathValue("version"))
	if err == nil {
		release()
		writeJSON(w, http.StatusOK, map[string]any{"name": name, "ready": true})
		return
	}
	if errors.Is(err, inference.ErrUnavailable) {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"name": name, "ready": false})
		return
	}
	h.writeError(w, r, toAPIError(err))
}

func (h *Handler) serveIndex(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Ready bool `json:"ready"`
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		h.writeError(w, r, toAPIError(err))
		return
	}
	if len(body) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			h.writeError(w, r, badRequest(reasonJSON, "invalid repository index request: %v", err))
			return
		}
	}
	list := []RepositoryEntry{}
	for _, st := range h.backend.(ModelIndexer).Index(r.Context()) {
		if !req.Ready || st.State == "READY" {
			list = append(list, st)
		}
	}
	writeJSON(w, http.StatusOK, list)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil { // only our own plain types are marshalled
		status, b = http.StatusInternalServerError, []byte(`{"error":"encoding the response failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// writeError answers {"error": msg} with the error's status, counts the
// rejection and logs it, rate-limited.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, e *apiError) {
	h.metrics.rejected.WithLabelValues(e.reason).Inc()
	ev := h.errLog.Warn()
	if e.status >= 500 {
		ev = h.errLog.Error()
	}
	ev.Str("request_id", RequestID(r.Context())).Str("method", r.Method).Str("path", r.URL.Path).Int("status", e.status).
		Str("reason", e.reason).Str("error", e.msg).Msg("request rejected")
	b := append(make([]byte, 0, len(e.msg)+16), `{"error":`...)
	b, _ = jsontext.AppendQuote(b, e.msg) // invalid UTF-8 is replaced, which is fine here
	b = append(b, '}')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	if e.status == http.StatusServiceUnavailable {
		// Buffers or a loading model free up quickly; tell clients to back off briefly.
		w.Header().Set("Retry-After", "1")
	}
	w.WriteHeader(e.status)
	_, _ = w.Write(b)
}

// discardBody reads and drops what is left of a request body before an
// early error is answered, so that a client that writes its whole request
// before reading (Triton's do) sees the error instead of a reset
// connection. body is bounded by MaxBodyBytes (http.MaxBytesReader: past
// it the server closes the connection after the answer). A body already
// known to be over the limit (Content-Length) is not read, and neither is
// one the client waits to send (Expect: 100-continue, nothing read yet).
func (h *Handler) discardBody(r *http.Request, body *countingReader) {
	if r.ContentLength > h.opts.MaxBodyBytes {
		return
	}
	if body.n == 0 && strings.EqualFold(r.Header.Get("Expect"), "100-continue") {
		return
	}
	n, err := io.Copy(io.Discard, body)
	if err != nil {
		h.errLog.Debug().Err(err).Str("request_id", RequestID(r.Context())).Int64("discarded", n).Str("path", r.URL.Path).Msg("discarding the body of a rejected request")
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// statsRunner is implemented by models that split a Run's time into queue
// and compute (*inference.Session does); others are timed around Run.
type statsRunner interface {
	RunWithStats(ctx context.Context, inputs []inference.Tensor, outputs []string, alloc inference.Allocator) ([]inference.Tensor, inference.RunStats, error)
}

const headerContentLength = "Inference-Header-Content-Length"

// serveInfer runs one inference request: acquire the model, decode the
// body into buffers from a request-scoped allocator, run, and write the
// outputs (binary ones straight from the output buffers).
func (h *Handler) serveInfer(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	body := &countingReader{r: http.MaxBytesReader(w, r.Body, h.opts.MaxBodyBytes)}
	modelName, version := r.PathValue("model"), r.PathValue("version")
	m, release, err := h.backend.Acquire(modelName, version)
	if err != nil {
		ae := toAPIError(err)
		h.metrics.requests.WithLabelValues("", "", strconv.Itoa(ae.status)).Inc()
		h.discardBody(r, body)
		h.writeError(w, r, ae)
		return
	}
	defer release()
	modelName, version = m.Name(), m.Version()
	vm := h.metrics.version(modelName, version)
	vm.pending.Inc()
	defer vm.pending.Dec()
	alloc, freeAlloc := h.opts.NewAllocator()
	defer freeAlloc()

	rt := inference.RequestTimes{At: start}
	status, respBytes, err := h.infer(w, r, m, vm, alloc, body, start, &rt)
	if err != nil {
		ae := toAPIError(err)
		status = ae.status
		h.metrics.failure.WithLabelValues(modelName, version, ae.reason).Inc()
		h.discardBody(r, body)
		h.writeError(w, r, ae)
		rt.Failed = true
	} else {
		vm.success.Inc()
		vm.duration.Observe(time.Since(start).Seconds())
		vm.inferences.Add(float64(rt.Inferences))
		if !rt.SharedRun {
			vm.executions.Inc()
		}
	}
	rt.Total = time.Since(start)
	h.inferSpans(r, modelName, version, rt)
	if ob, ok := m.(RequestObserver); ok {
		ob.ObserveRequest(rt)
	}
	if status == http.StatusOK {
		vm.ok.Inc()
	} else {
		h.metrics.requests.WithLabelValues(modelName, version, strconv.Itoa(status)).Inc()
	}
	vm.requestBytes.Add(float64(body.n))
	vm.responses.Add(float64(respBytes))
}

// infer does the work of serveInfer. An error means nothing has been
// written yet; once the response has started, write errors are only logged.
// rt receives the request's times and batch size.
func (h *Handler) infer(w http.ResponseWriter, r *http.Request, m inference.Model, vm *versionMetrics, alloc inference.Allocator, body io.Reader, start time.Time, rt *inference.RequestTimes) (int, int64, error) {
	limits := decodeLimits{bodyBytes: h.opts.MaxBodyBytes, headerLen: -1}
	if r.ContentLength > h.opts.MaxBodyBytes {
		return 0, 0, &http.MaxBytesError{Limit: h.opts.MaxBodyBytes}
	}
	enc, err := requestEncoding(r.Header)
	if err != nil {
		return 0, 0, err
	}
	if enc != "" {
		// The decompressed body is bounded by MaxBodyBytes as an
		// uncompressed one is; its length is not known up front.
		d, err := newDecompressor(enc, body, h.opts.MaxBodyBytes)
		if err != nil {
			return 0, 0, err
		}
		defer d.release()
		body = d
	} else if r.ContentLength >= 0 {
		limits.bodyBytes = r.ContentLength
	}
	if hv := r.Header.Get(headerContentLength); hv != "" {
		n, err := strconv.ParseInt(hv, 10, 64)
		if err != nil || n < 0 {
			return 0, 0, badRequest(reasonHeader, "%s %q is not a non-negative integer", headerContentLength, hv)
		}
		if n > limits.bodyBytes {
			return 0, 0, badRequest(reasonHeader, "%s %d is past the end of the body (%d bytes)", headerContentLength, n, limits.bodyBytes)
		}
		limits.headerLen = n
	}
	rd := requestDecoder{ctx: r.Context(), alloc: alloc, inputs: m.Inputs(), outputs: m.Outputs(), limits: limits, shm: h.opts.SharedMemory}
	defer func() {
		for _, release := range rd.releases {
			release()
		}
	}()
	req, err := rd.decodeRequest(body)
	if err != nil {
		return 0, 0, err
	}
	decoded := time.Now()
	rt.Input = decoded.Sub(start)
	vm.inputDur.Observe(rt.Input.Seconds())
	rt.Inferences = batchSize(m, req.inputs)

	inputs := make([]inference.Tensor, len(req.inputs))
	for i := range req.inputs {
		inputs[i] = req.inputs[i].tensor
	}
	var names []string
	if len(req.outputs) > 0 {
		names = make([]string, len(req.outputs))
		for i, o := range req.outputs {
			names[i] = o.name
		}
	}
	var outs []inference.Tensor
	if sr, ok := m.(statsRunner); ok {
		var st inference.RunStats
		outs, st, err = sr.RunWithStats(r.Context(), inputs, names, alloc)
		if err == nil {
			rt.Queue, rt.Infer, rt.SharedRun = st.Queue, st.Compute, st.SharedRun
			vm.queueDur.Observe(st.Queue.Seconds())
			vm.computeDur.Observe(st.Compute.Seconds())
		}
	} else {
		outs, err = m.Run(r.Context(), inputs, names, alloc)
		if err == nil {
			rt.Infer = time.Since(decoded)
			vm.computeDur.Observe(rt.Infer.Seconds())
		}
	}
	if err != nil {
		return 0, 0, err
	}
	ran := time.Now()

	binary := make([]bool, len(outs))
	anyBinary := false
	for i := range outs {
		binary[i] = req.binaryOutput
		for _, o := range req.outputs {
			if o.name == outs[i].Name && o.hasBinary {
				binary[i] = o.binary
			}
		}
		anyBinary = anyBinary || binary[i]
	}
	shm, err := h.writeShmOutputs(req, outs, binary, &rd.releases)
	if err != nil {
		return 0, 0, err
	}
	anyBinary = false
	for _, b := range binary {
		anyBinary = anyBinary || b
	}
	buf := getBuffer()
	defer putBuffer(buf)
	hdr, err := appendResponseHeader((*buf)[:0], m.Name(), m.Version(), req.id, outs, binary, shm)
	*buf = hdr
	if err != nil {
		return 0, 0, &apiError{status: http.StatusInternalServerError, reason: reasonInternal, msg: err.Error(), err: err}
	}
	// From here on the response is written: compress it when asked.
	if enc := responseEncoding(r.Header); enc != "" {
		c := newCompressor(w, enc)
		defer func() {
			if err := c.finish(); err != nil {
				h.errLog.Debug().Err(err).Str("request_id", RequestID(r.Context())).Str("model", m.Name()).Msg("finishing the compressed response failed")
			}
		}()
		w = c
	}
	total := int64(len(hdr))
	wh := w.Header()
	if anyBinary {
		for i := range outs {
			if binary[i] {
				total += RawSize(&outs[i])
			}
		}
		wh.Set("Content-Type", "application/octet-stream")
		wh.Set(headerContentLength, strconv.Itoa(len(hdr)))
	} else {
		wh.Set("Content-Type", "application/json")
	}
	wh.Set("Content-Length", strconv.FormatInt(total, 10))
	w.WriteHeader(http.StatusOK)
	_, err = w.Write(hdr)
	if err == nil && anyBinary {
		err = writeBinarySections(w, outs, binary)
	}
	if err != nil {
		h.errLog.Debug().Err(err).Str("request_id", RequestID(r.Context())).Str("model", m.Name()).Msg("writing the response failed")
	}
	rt.Output = time.Since(ran)
	vm.outputDur.Observe(rt.Output.Seconds())
	return http.StatusOK, total, nil
}

// batchSize is the number of inferences a request carries: the batch
// dimension of its first batched input when the model batches (max_batch or
// dynamic_batching), else 1.
func batchSize(m inference.Model, inputs []requestInput) uint64 {
	c, ok := m.(configured)
	if !ok || c.Config().BatchSize() <= 0 {
		return 1
	}
	for _, in := range inputs {
		if d := batchDimOf(c.Config(), in.tensor.Name, len(in.tensor.Shape)); d >= 0 {
			return uint64(max(in.tensor.Shape[d], 1))
		}
	}
	return 1
}
