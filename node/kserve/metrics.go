package kserve

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the HTTP layer's Prometheus collectors. Names follow Triton's
// nv_inference_* family with our own prefix and Prometheus conventions
// (seconds, _total, _bytes).
type metrics struct {
	requests      *prometheus.CounterVec   // model, version, code
	success       *prometheus.CounterVec   // model, version
	failure       *prometheus.CounterVec   // model, version, reason
	rejected      *prometheus.CounterVec   // reason
	duration      *prometheus.HistogramVec // model, version: whole request
	inputDur      *prometheus.HistogramVec // model, version: reading and decoding the body
	queueDur      *prometheus.HistogramVec // model, version: waiting for a session slot
	computeDur    *prometheus.HistogramVec // model, version: Model.Run less queue time
	outputDur     *prometheus.HistogramVec // model, version: encoding and writing the response
	requestBytes  *prometheus.CounterVec   // model, version
	responseBytes *prometheus.CounterVec   // model, version
	inferences    *prometheus.CounterVec   // model, version: batch sizes of successful requests
	executions    *prometheus.CounterVec   // model, version: model runs of successful requests
	pending       *prometheus.GaugeVec     // model, version: requests acquired and not yet answered

	mu       sync.RWMutex // guards versions
	versions map[versionKey]*versionMetrics
}

type versionKey struct{ model, version string }

// versionMetrics are one version's series, resolved once: a label look-up
// per series per request (hashing the label values under the vector's
// lock) costs more than the observation itself.
type versionMetrics struct {
	pending                                                      prometheus.Gauge
	ok, success, inferences, executions, requestBytes, responses prometheus.Counter
	duration, inputDur, queueDur, computeDur, outputDur          prometheus.Observer
}

// version returns the series of model/version, resolving them on first use.
// Like the vectors' own series they are kept for the life of the handler.
func (m *metrics) version(model, version string) *versionMetrics {
	k := versionKey{model, version}
	m.mu.RLock()
	vm := m.versions[k]
	m.mu.RUnlock()
	if vm != nil {
		return vm
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if vm = m.versions[k]; vm != nil {
		return vm
	}
	vm = &versionMetrics{
		pending:      m.pending.WithLabelValues(model, version),
		ok:           m.requests.WithLabelValues(model, version, "200"),
		success:      m.success.WithLabelValues(model, version),
		inferences:   m.inferences.WithLabelValues(model, version),
		executions:   m.executions.WithLabelValues(model, version),
		requestBytes: m.requestBytes.WithLabelValues(model, version),
		responses:    m.responseBytes.WithLabelValues(model, version),
		duration:     m.duration.WithLabelValues(model, version),
		inputDur:     m.inputDur.WithLabelValues(model, version),
		queueDur:     m.queueDur.WithLabelValues(model, version),
		computeDur:   m.computeDur.WithLabelValues(model, version),
		outputDur:    m.outputDur.WithLabelValues(model, version),
	}
	m.versions[k] = vm
	return vm
}

// latencyBuckets span 100µs to about 13s.
var latencyBuckets = prometheus.ExponentialBuckets(100e-6, 2, 18)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	mv := []string{"model", "version"}
	m := &metrics{
		versions: make(map[versionKey]*versionMetrics),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_inference_http_requests_total",
			Help: "Inference requests by model, version and HTTP status code.",
		}, []string{"model", "version", "code"}),
		success: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_inference_request_success_total",
			Help: "Inference requests that returned outputs (Triton: nv_inference_request_success).",
		}, mv),
		failure: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_inference_request_failure_total",
			Help: "Inference requests that failed, by reason (Triton: nv_inference_request_failure).",
		}, []string{"model", "version", "reason"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_inference_rejected_requests_total",
			Help: "Requests of any route rejected with an error, by reason.",
		}, []string{"reason"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "edge_inference_request_duration_seconds", Buckets: latencyBuckets,
			Help: "Time from receiving an inference request to writing the last byte of its response.",
		}, mv),
		inputDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "edge_inference_compute_input_duration_seconds", Buckets: latencyBuckets,
			Help: "Time reading and decoding request tensors into input buffers.",
		}, mv),
		queueDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "edge_inference_queue_duration_seconds", Buckets: latencyBuckets,
			Help: "Time a request waited inside the model for a free session (Triton: nv_inference_queue_duration_us).",
		}, mv),
		computeDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "edge_inference_compute_infer_duration_seconds", Buckets: latencyBuckets,
			Help: "Time running the model, queue time excluded (includes it for models that don't report it).",
		}, mv),
		outputDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "edge_inference_compute_output_duration_seconds", Buckets: latencyBuckets,
			Help: "Time encoding and writing the response.",
		}, mv),
		requestBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_inference_request_bytes_total",
			Help: "Bytes of inference request bodies read.",
		}, mv),
		responseBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_inference_response_bytes_total",
			Help: "Bytes of inference response bodies written.",
		}, mv),
		inferences: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_inference_count_total",
			Help: "Inferences performed by successful requests, a request counting its batch size (Triton: nv_inference_count).",
		}, mv),
		executions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_inference_exec_count_total",
			Help: "Model executions of successful requests, one per model Run: a dynamic batch of several requests counts once (batch sizes: edge_inference_batch_size) (Triton: nv_inference_exec_count).",
		}, mv),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edge_inference_pending_requests",
			Help: "Inference requests in progress: acquired a version and not yet answered (decoding, queued or running; Triton: nv_inference_pending_request_count).",
		}, mv),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.requests, m.success, m.failure, m.rejected, m.duration,
		m.inputDur, m.queueDur, m.computeDur, m.outputDur, m.requestBytes, m.responseBytes,
		m.inferences, m.executions, m.pending} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
