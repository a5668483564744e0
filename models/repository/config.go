package repository

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"

	"gopkg.in/yaml.v3"

	"github.com/edgeai/edge-node/models"
)

// MaxConfigBytes bounds a config.yaml.
const MaxConfigBytes = 64 << 10

// Config is a model's config.yaml. Unknown keys are an error (a typo should
// not be silently ignored).
//
//	name: resnet50            # optional; must match the folder name
//	platform: onnxruntime_onnx
//	max_batch_size: 8         # 0..1024; 0 = no batching
//	providers: [tensorrt, cuda, cpu]   # preference order
//	labels: {team: vision}
type Config struct {
	Name         string            `yaml:"name" json:"name,omitempty"`
	Platform     string            `yaml:"platform" json:"platform,omitempty"`
	MaxBatchSize int               `yaml:"max_batch_size" json:"max_batch_size,omitempty"`
	Providers    []string          `yaml:"providers" json:"providers,omitempty"`
	Labels       map[string]string `yaml:"labels" json:"labels,omitempty"`
}

var labelKey = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// ParseConfig decodes and validates a config.yaml. Errors wrap
// models.ErrInvalidArgument. It never panics, whatever the input.
func ParseConfig(b []byte) (cfg Config, err error) {
	if len(b) > MaxConfigBytes {
		return Config{}, fmt.Errorf("config: %d bytes (max %d): %w", len(b), MaxConfigBytes, models.ErrInvalidArgument)
	}
	defer func() {
		if r := recover(); r != nil { // yaml.v3 has panicked on hostile input before
			cfg, err = Config{}, fmt.Errorf("config: YAML decoder panic: %v: %w", r, models.ErrInvalidArgument)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("config: %v: %w", err, models.ErrInvalidArgument)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("config: more than one YAML document: %w", models.ErrInvalidArgument)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// Validate checks a Config's values.
func (c *Config) Validate() error {
	if c.Name != "" {
		if err := models.ValidModelName(c.Name); err != nil {
			return fmt.Errorf("config: %w", err)
		}
	}
	if c.Platform != "" && c.Platform != "onnxruntime_onnx" {
		return fmt.Errorf("config: platform %q (only onnxruntime_onnx): %w", c.Platform, models.ErrInvalidArgument)
	}
	if c.MaxBatchSize < 0 || c.MaxBatchSize > 1024 {
		return fmt.Errorf("config: max_batch_size %d (0..1024): %w", c.MaxBatchSize, models.ErrInvalidArgument)
	}
	if len(c.Providers) > 8 {
		return fmt.Errorf("config: %d providers (max 8): %w", len(c.Providers), models.ErrInvalidArgument)
	}
	seen := map[string]bool{}
	for _, p := range c.Providers {
		switch p {
		case "cpu", "cuda", "tensorrt":
		default:
			return fmt.Errorf("config: provider %q (cpu, cuda, tensorrt): %w", p, models.ErrInvalidArgument)
		}
		if seen[p] {
			return fmt.Errorf("config: provider %q twice: %w", p, models.ErrInvalidArgument)
		}
		seen[p] = true
	}
	if len(c.Labels) > 32 {
		return fmt.Errorf("config: %d labels (max 32): %w", len(c.Labels), models.ErrInvalidArgument)
	}
	for k, v := range c.Labels {
		if !labelKey.MatchString(k) || len(v) > 256 {
			return fmt.Errorf("config: label %q: %w", k, models.ErrInvalidArgument)
		}
	}
	return nil
}
