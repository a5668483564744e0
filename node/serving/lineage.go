package serving

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	lineageInfoDesc = prometheus.NewDesc("edge_model_lineage_info",
		"Lineage of each model's Active version (from its signed manifest): 1 with the ids as labels.",
		[]string{"model", "version", "training_run", "dataset_digest", "source_commit"}, nil)
	lineageMetricDesc = prometheus.NewDesc("edge_model_evaluation_metric",
		"Evaluation metrics of each model's Active version, from its manifest's lineage.",
		[]string{"model", "version", "metric"}, nil)
	versionStateDesc = prometheus.NewDesc("edge_model_version_state",
		"Every stored model version: 1, with its lifecycle state (Active, Ready, Canary, Failed, ...) and, when Failed, the reason as labels.",
		[]string{"model", "version", "state", "reason"}, nil)
)

// modelsCollector exports every stored version's state and the lineage of
// every Active version, read from the store at scrape time (under the
// owner's view, so they agree with what is routed; a version change needs
// no metric update).
type modelsCollector struct{ o *Owner }

// ModelsCollector returns the collector of edge_model_version_state,
// edge_model_lineage_info and edge_model_evaluation_metric.
func (o *Owner) ModelsCollector() prometheus.Collector { return modelsCollector{o} }

// Describe implements prometheus.Collector.
func (c modelsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- versionStateDesc
	ch <- lineageInfoDesc
	ch <- lineageMetricDesc
}

// Collect implements prometheus.Collector.
func (c modelsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ms, err := c.o.Models(ctx)
	if err != nil {
		c.o.log.Warn().Err(err).Msg("model metrics: listing the store")
		return
	}
	for _, mi := range ms {
		for _, v := range mi.Versions {
			ch <- prometheus.MustNewConstMetric(versionStateDesc, prometheus.GaugeValue, 1, mi.Name, v.Version, string(v.State), string(v.Reason))
		}
		if mi.Active == "" {
			continue
		}
		v, err := c.o.store.Version(ctx, mi.Name, mi.Active)
		if err != nil || v.Manifest.Lineage == nil {
			continue
		}
		l := v.Manifest.Lineage
		ch <- prometheus.MustNewConstMetric(lineageInfoDesc, prometheus.GaugeValue, 1, mi.Name, mi.Active, l.TrainingRun, l.DatasetDigest, l.SourceCommit)
		for k, val := range l.Metrics {
			ch <- prometheus.MustNewConstMetric(lineageMetricDesc, prometheus.GaugeValue, val, mi.Name, mi.Active, k)
		}
	}
}
