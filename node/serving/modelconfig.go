package serving

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"

	"gopkg.in/yaml.v3"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/pipeline"
	"github.com/edgeai/edge-node/models"
)

// ModelConfig is a model's config.yaml: in a model repository folder
// (<dir>/<name>/config.yaml, Triton style) or carried by a cloud manifest.
// The session fields (execution providers, threads, optimisation level,
// batching, concurrency) are inference.SessionConfig's, inline:
//
//	platform: onnxruntime_onnx     # optional; the only platform served
//	labels: {team: speech}         # optional, free-form
//	providers: [{name: tensorrt, options: {fp16: true}}, {name: cuda}, {name: cpu}]
//	intra_op_threads: 1
//	graph_optimization: all
//	max_concurrency: 2
//
// optionally with a `pipeline` section (pre- and post-processing around
// the model: pipeline.Config), or, for a model with no graph of its own that chains others (an
// ensemble, see EnsembleConfig), an `ensemble` section and no session
// fields.
//
// Unknown keys are an error: a typo must not silently fall back to a default.
type ModelConfig struct {
	Platform                string            `yaml:"platform"`
	Labels                  map[string]string `yaml:"labels"`
	Ensemble                *EnsembleConfig   `yaml:"ensemble"`
	Pipeline                *pipeline.Config  `yaml:"pipeline"`
	inference.SessionConfig `yaml:",inline"`
}

// Session returns the session part of the config.
func (c ModelConfig) Session() inference.SessionConfig { return c.SessionConfig }

// ParseModelConfig decodes and validates a model config; empty input is the
// default config. Errors wrap inference.ErrInvalidArgument.
func ParseModelConfig(data []byte) (cfg ModelConfig, err error) {
	if len(data) > inference.MaxConfigSize {
		return cfg, fmt.Errorf("model config is %d bytes, more than %d: %w", len(data), inference.MaxConfigSize, inference.ErrInvalidArgument)
	}
	defer func() {
		// yaml.v3 has panicked on hostile input before; a config is outside input.
		if r := recover(); r != nil {
			cfg, err = ModelConfig{}, fmt.Errorf("model config: YAML decoder panic: %v: %w", r, inference.ErrInvalidArgument)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return ModelConfig{}, fmt.Errorf("model config: %v: %w", err, inference.ErrInvalidArgument)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return ModelConfig{}, fmt.Errorf("model config: more than one YAML document: %w", inference.ErrInvalidArgument)
	}
	if cfg.Platform != "" && cfg.Platform != inference.PlatformONNX {
		return ModelConfig{}, fmt.Errorf("model config: platform %q: only %s is served: %w", cfg.Platform, inference.PlatformONNX, inference.ErrInvalidArgument)
	}
	if len(cfg.Labels) > 64 {
		return ModelConfig{}, fmt.Errorf("model config: %d labels, at most 64: %w", len(cfg.Labels), inference.ErrInvalidArgument)
	}
	if err := cfg.SessionConfig.Validate(); err != nil {
		return ModelConfig{}, fmt.Errorf("model config: %w", err)
	}
	if cfg.Pipeline != nil {
		if cfg.Ensemble != nil {
			return ModelConfig{}, fmt.Errorf("model config: pipeline and ensemble both set: an ensemble's steps are its own: %w", inference.ErrInvalidArgument)
		}
		if err := cfg.Pipeline.Validate(); err != nil {
			return ModelConfig{}, fmt.Errorf("model config: %w", err)
		}
		if k := cfg.Pipeline.TopK; k != nil && k.Labels != "" {
			if err := models.ValidFilePath(k.Labels); err != nil {
				return ModelConfig{}, fmt.Errorf("model config: pipeline: topk labels: %w", err)
			}
		}
	}
	if cfg.Ensemble != nil {
		if !reflect.ValueOf(cfg.SessionConfig).IsZero() {
			return ModelConfig{}, fmt.Errorf("model config: an ensemble has no session of its own: set providers, threads and batching on its members: %w", inference.ErrInvalidArgument)
		}
		if err := cfg.Ensemble.validate(); err != nil {
			return ModelConfig{}, fmt.Errorf("model config: %w", err)
		}
	}
	return cfg, nil
}
