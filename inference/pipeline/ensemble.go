package pipeline

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeai/edge-node/inference"
)

// PlatformEnsemble is the platform an ensemble reports (Triton's name).
const PlatformEnsemble = "ensemble"

// Acquire hands out a routed member version and its release func; the
// node passes its serving owner's Acquire, so an ensemble runs exactly the
// sessions the owner routes and never loads or routes anything itself.
type Acquire func(model, version string) (inference.Model, func(), error)

// Metrics are the ensembles' metrics: each stage's time per ensemble model.
type Metrics struct {
	step *prometheus.HistogramVec
}

// NewMetrics registers the ensemble metrics on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{step: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "edge_pipeline_step_duration_seconds",
		Help:    "Time of one stage of an ensemble request (stages run once per text box add up per request).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 14),
	}, []string{"model", "version", "step"})}
	if err := reg.Register(m.step); err != nil {
		return nil, fmt.Errorf("pipeline metrics: %w", err)
	}
	return m, nil
}

// OCR is the ocr ensemble as one inference.Model: input "image" (BYTES
// [1], a JPEG or PNG file), outputs "text", "score" and "box" (see
// LinesTensors). Each Run acquires the three pinned member versions from
// the owner for the whole request, so one request never mixes versions.
type OCR struct {
	name, version string
	pipe          *OCRPipeline
	acquire       Acquire
	metrics       *Metrics
}

// NewOCR returns the ensemble version name/version.
func NewOCR(name, version string, pipe *OCRPipeline, acquire Acquire, m *Metrics) *OCR {
	return &OCR{name: name, version: version, pipe: pipe, acquire: acquire, metrics: m}
}

// Name implements inference.Model.
func (o *OCR) Name() string { return o.name }

// Version implements inference.Model.
func (o *OCR) Version() string { return o.version }

// Platform implements inference.Model.
func (o *OCR) Platform() string { return PlatformEnsemble }

// Provider implements inference.Model: an ensemble runs on its members'
// providers.
func (o *OCR) Provider() string { return PlatformEnsemble }

// Members are the pinned member versions.
func (o *OCR) Members() []Member {
	c := o.pipe.Config()
	return []Member{c.Det, c.Cls, c.Rec}
}

var (
	ocrInputs  = []inference.TensorInfo{{Name: InputImage, DataType: inference.Bytes, Shape: []int64{1}}}
	ocrOutputs = []inference.TensorInfo{
		{Name: OutputText, DataType: inference.Bytes, Shape: []int64{-1}},
		{Name: OutputScore, DataType: inference.FP32, Shape: []int64{-1}},
		{Name: OutputBox, DataType: inference.FP32, Shape: []int64{-1, 4, 2}},
	}
)

// Inputs implements inference.Model.
func (o *OCR) Inputs() []inference.TensorInfo { return ocrInputs }

// Outputs implements inference.Model.
func (o *OCR) Outputs() []inference.TensorInfo { return ocrOutputs }

// Run implements inference.Model.
func (o *OCR) Run(ctx context.Context, inputs []inference.Tensor, outputs []string, a inference.Allocator) ([]inference.Tensor, error) {
	if len(inputs) != 1 || inputs[0].Name != InputImage || inputs[0].DataType != inference.Bytes || len(inputs[0].Strings) != 1 {
		return nil, fmt.Errorf("ensemble %s: want one input %q, BYTES, shape [1] (a JPEG or PNG file): %w", o.name, InputImage, inference.ErrInvalidArgument)
	}
	members := make(memberSet, 3)
	defer members.release()
	for _, m := range o.Members() {
		model, release, err := o.acquire(m.Model, m.Version)
		if err != nil {
			if errors.Is(err, inference.ErrNotFound) {
				// The ensemble exists; its pinned member is not routed
				// (not loaded, or not yet): 503, not 404.
				err = fmt.Errorf("%v: not served: %w", err, inference.ErrUnavailable)
			}
			return nil, fmt.Errorf("ensemble %s/%s: member %s: %w", o.name, o.version, m, err)
		}
		members[m] = acquired{model, release}
	}
	t := Timings{}
	lines, err := o.pipe.Recognise(ctx, members, a, inputs[0].Strings[0], t)
	if o.metrics != nil {
		for stage, d := range t {
			o.metrics.step.WithLabelValues(o.name, o.version, stage).Observe(d.Seconds())
		}
	}
	if err != nil {
		return nil, fmt.Errorf("ensemble %s: %w", o.name, err)
	}
	return LinesTensors(ctx, a, lines, outputs)
}

type acquired struct {
	m       inference.Model
	release func()
}

// memberSet is the members one request holds.
type memberSet map[Member]acquired

func (s memberSet) release() {
	for _, a := range s {
		a.release()
	}
}

// RunMember implements Runner.
func (s memberSet) RunMember(ctx context.Context, m Member, in inference.Tensor, a inference.Allocator) (inference.Tensor, error) {
	am, ok := s[m]
	if !ok {
		return inference.Tensor{}, fmt.Errorf("member %s not acquired: %w", m, inference.ErrUnavailable)
	}
	out, err := am.m.Run(ctx, []inference.Tensor{in}, nil, a)
	if err != nil {
		return inference.Tensor{}, err
	}
	if len(out) == 0 {
		return inference.Tensor{}, fmt.Errorf("member %s returned no output: %w", m, inference.ErrRunFailed)
	}
	return out[0], nil
}
