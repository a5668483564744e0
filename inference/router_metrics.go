package inference

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Per-version metrics, read from VersionStats at scrape time (nothing is
// added to the request path, and a removed version's series disappear).
var (
	descRequests = prometheus.NewDesc("edge_inference_version_requests_total",
		"Runs of a routed model version (role: default, canary, shadow, other), including shadow runs.", []string{"model", "version", "role"}, nil)
	descErrors = prometheus.NewDesc("edge_inference_version_errors_total",
		"Runs of a routed model version that failed through the version's fault (not bad input, cancellation or unavailability).", []string{"model", "version", "role"}, nil)
	descLatency = prometheus.NewDesc("edge_inference_version_run_duration_seconds",
		"Duration of successful runs of a routed model version (queue + compute).", []string{"model", "version", "role"}, nil)
	descCompared = prometheus.NewDesc("edge_inference_shadow_compared_total",
		"Mirrored requests whose outputs were compared with the primary's.", []string{"model", "version"}, nil)
	descMaxAbs = prometheus.NewDesc("edge_inference_shadow_max_abs_diff",
		"Largest absolute difference between a shadow's and the primary's output elements so far.", []string{"model", "version"}, nil)
	descCosine = prometheus.NewDesc("edge_inference_shadow_cosine_distance_mean",
		"Mean cosine distance between a shadow's and the primary's float outputs.", []string{"model", "version"}, nil)
	descArgmax = prometheus.NewDesc("edge_inference_shadow_argmax_agreement",
		"Share of output rows whose argmax agrees between a shadow and the primary.", []string{"model", "version"}, nil)
	descSkipped = prometheus.NewDesc("edge_inference_shadow_skipped_total",
		"Requests sampled for mirroring that were not mirrored because every shadow slot was busy.", []string{"model"}, nil)
	descBatchSize = prometheus.NewDesc("edge_inference_batch_size",
		"Inferences per ONNX Runtime Run of a model version with dynamic batching.", []string{"model", "version"}, nil)
	descBatchQueue = prometheus.NewDesc("edge_inference_batch_queue_duration_seconds",
		"Time requests of a model version with dynamic batching waited in its batch queue.", []string{"model", "version"}, nil)
	descShare = prometheus.NewDesc("edge_inference_candidate_share",
		"Share of a model's default-routed requests sent to (canary) or mirrored to (shadow) a candidate.", []string{"model", "version", "role"}, nil)
)

// Collector returns a prometheus.Collector over the router's per-version
// statistics; register it on the node's registry.
func (r *Router) Collector() prometheus.Collector { return routerCollector{r} }

type routerCollector struct{ r *Router }

// Describe implements prometheus.Collector.
func (c routerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRequests, descErrors, descLatency, descCompared, descMaxAbs, descCosine, descArgmax, descSkipped, descShare, descBatchSize, descBatchQueue} {
		ch <- d
	}
}

// latencyExportStep exports every 4th bucket (powers of two from 1 µs):
// enough resolution for dashboards, a quarter of the series.
const latencyExportStep = latencyBucketsPerDoubling

// Collect implements prometheus.Collector.
func (c routerCollector) Collect(ch chan<- prometheus.Metric) {
	c.r.mu.RLock()
	defer c.r.mu.RUnlock()
	for name, rm := range c.r.models {
		ch <- prometheus.MustNewConstMetric(descSkipped, prometheus.CounterValue, float64(rm.shadowSkipped.Load()), name)
		for v, rv := range rm.versions {
			role := "other"
			switch {
			case v == rm.def:
				role = "default"
			case rv == rm.canary:
				role = "canary"
				ch <- prometheus.MustNewConstMetric(descShare, prometheus.GaugeValue, float64(rm.canaryCut)/(1<<64), name, v, role)
			case rv == rm.shadow:
				role = "shadow"
				ch <- prometheus.MustNewConstMetric(descShare, prometheus.GaugeValue, float64(rm.shadowCut)/(1<<64), name, v, role)
			}
			s := rv.stats.Snapshot()
			ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(s.Requests), name, v, role)
			ch <- prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, float64(s.Errors), name, v, role)
			buckets := make(map[float64]uint64, latencyBuckets/latencyExportStep+1)
			var cum uint64
			for i, n := range s.Latency {
				cum += n
				if i%latencyExportStep == 0 {
					buckets[LatencyBound(i).Seconds()] = cum
				}
			}
			ch <- prometheus.MustNewConstHistogram(descLatency, cum, s.LatencySum.Seconds(), buckets, name, v, role)
			if bs, ok := rv.m.(batchStatser); ok {
				if b, ok := bs.BatchStats(); ok {
					collectBatchStats(ch, b, name, v)
				}
			}
			if d := s.Drift; d.Compared > 0 {
				ch <- prometheus.MustNewConstMetric(descCompared, prometheus.CounterValue, float64(d.Compared), name, v)
				ch <- prometheus.MustNewConstMetric(descMaxAbs, prometheus.GaugeValue, d.MaxAbsDiff, name, v)
				ch <- prometheus.MustNewConstMetric(descCosine, prometheus.GaugeValue, d.MeanCosineDistance(), name, v)
				ch <- prometheus.MustNewConstMetric(descArgmax, prometheus.GaugeValue, d.ArgmaxAgreement(), name, v)
			}
		}
	}
}

// batchStatser is a Model with a dynamic batcher (*Session).
type batchStatser interface {
	BatchStats() (BatchStats, bool)
}

// collectBatchStats exports a batcher's batch sizes (buckets at the powers
// of two and at max_batch_size) and queue times.
func collectBatchStats(ch chan<- prometheus.Metric, b BatchStats, name, version string) {
	sizes := map[float64]uint64{}
	var cum, sum uint64
	for n, c := range b.Sizes {
		cum += c
		sum += uint64(n) * c
		if n > 0 && (n&(n-1) == 0 || n == len(b.Sizes)-1) {
			sizes[float64(n)] = cum
		}
	}
	ch <- prometheus.MustNewConstHistogram(descBatchSize, cum, float64(sum), sizes, name, version)
	queue := make(map[float64]uint64, latencyBuckets/latencyExportStep+1)
	cum = 0
	for i, n := range b.Queue {
		cum += n
		if i%latencyExportStep == 0 {
			queue[LatencyBound(i).Seconds()] = cum
		}
	}
	ch <- prometheus.MustNewConstHistogram(descBatchQueue, cum, b.QueueSum.Seconds(), queue, name, version)
}
