package models

import (
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
)

// Lineage is where a model version came from (the MLOps record): the
// training run that produced it, the digest of the data set it was trained
// on, the source commit of the training code, and its evaluation metrics.
// It travels in the manifest, so the manifest's signature covers it. Every
// field is optional; an empty Lineage is omitted.
type Lineage struct {
	// TrainingRun is the training system's run id ("mlflow:4f2a…",
	// "wandb/team/proj/abc123"): 1–128 of [A-Za-z0-9._:/@+-].
	TrainingRun string `json:"training_run,omitempty"`
	// DatasetDigest names the training data by content: "sha256:" and 64
	// lower-case hex digits.
	DatasetDigest string `json:"dataset_digest,omitempty"`
	// SourceCommit is the training code's commit: 7–64 lower-case hex
	// digits (a git SHA-1 or SHA-256, possibly abbreviated).
	SourceCommit string `json:"source_commit,omitempty"`
	// Metrics are evaluation results by name ("accuracy", "cer.test"):
	// at most MaxLineageMetrics, names 1–64 of [a-z0-9_.-], finite values.
	Metrics map[string]float64 `json:"metrics,omitempty"`
}

// MaxLineageMetrics bounds Lineage.Metrics.
const MaxLineageMetrics = 32

var (
	trainingRunRe = regexp.MustCompile(`^[A-Za-z0-9._:/@+-]{1,128}$`)
	datasetRe     = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	commitRe      = regexp.MustCompile(`^[0-9a-f]{7,64}$`)
	metricNameRe  = regexp.MustCompile(`^[a-z0-9_.-]{1,64}$`)
)

// Validate checks every field; errors wrap ErrInvalidArgument and name the
// field.
func (l *Lineage) Validate() error {
	if l.TrainingRun != "" && !trainingRunRe.MatchString(l.TrainingRun) {
		return fmt.Errorf("lineage: training_run %.40q: want %s: %w", l.TrainingRun, trainingRunRe, ErrInvalidArgument)
	}
	if l.DatasetDigest != "" && !datasetRe.MatchString(l.DatasetDigest) {
		return fmt.Errorf("lineage: dataset_digest %.80q: want sha256:<64 hex>: %w", l.DatasetDigest, ErrInvalidArgument)
	}
	if l.SourceCommit != "" && !commitRe.MatchString(l.SourceCommit) {
		return fmt.Errorf("lineage: source_commit %.80q: want 7–64 lower-case hex digits: %w", l.SourceCommit, ErrInvalidArgument)
	}
	if len(l.Metrics) > MaxLineageMetrics {
		return fmt.Errorf("lineage: %d metrics (max %d): %w", len(l.Metrics), MaxLineageMetrics, ErrInvalidArgument)
	}
	for k, v := range l.Metrics {
		if !metricNameRe.MatchString(k) {
			return fmt.Errorf("lineage: metric name %.80q: want %s: %w", k, metricNameRe, ErrInvalidArgument)
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("lineage: metric %q is %v: %w", k, v, ErrInvalidArgument)
		}
	}
	return nil
}

// Parameters renders the lineage as flat string parameters (the KServe
// model metadata's `parameters`): training_run, dataset_digest,
// source_commit and metric.<name>, empty fields left out. nil for a nil
// Lineage.
func (l *Lineage) Parameters() map[string]string {
	if l == nil {
		return nil
	}
	p := map[string]string{}
	for k, v := range map[string]string{"training_run": l.TrainingRun, "dataset_digest": l.DatasetDigest, "source_commit": l.SourceCommit} {
		if v != "" {
			p[k] = v
		}
	}
	names := make([]string, 0, len(l.Metrics))
	for k := range l.Metrics {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		p["metric."+k] = strconv.FormatFloat(l.Metrics[k], 'g', -1, 64)
	}
	return p
}
