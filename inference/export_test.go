package inference

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"gopkg.in/yaml.v3"
)

// ParseSessionConfig decodes and validates a SessionConfig on its own, the
// way a model's config.yaml carries it, for the tests of SessionConfig's
// decoding and Validate. The node decodes the whole file as
// node.ModelConfig, which holds a SessionConfig inline.
func ParseSessionConfig(data []byte) (SessionConfig, error) {
	var cfg SessionConfig
	if len(data) > MaxConfigSize {
		return cfg, fmt.Errorf("session config is %d bytes, more than %d: %w", len(data), MaxConfigSize, ErrInvalidArgument)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return SessionConfig{}, fmt.Errorf("session config: %v: %w", err, ErrInvalidArgument)
	}
	if err := cfg.Validate(); err != nil {
		return SessionConfig{}, err
	}
	return cfg, nil
}

// BatchQueueLen is how many requests wait in s's batch queue.
func BatchQueueLen(s *Session) int {
	s.batch.mu.Lock()
	defer s.batch.mu.Unlock()
	return len(s.batch.waiting)
}

// GraphInfo and SessionInfo are the two ways Load reads a model's inputs
// and outputs, for the test that they agree.
var (
	GraphInfo   = graphInfo
	SessionInfo = sessionInfo
)

// WarmedShapes reports whether s has run (output shapes learned or static).
func WarmedShapes(s *Session) bool {
	s.shapes.mu.Lock()
	defer s.shapes.mu.Unlock()
	return len(s.shapes.m) > 0
}

// OptimizedFrom is the saved optimized model s's sessions were created
// from ("" for the original) and whether its load built it.
func OptimizedFrom(s *Session) (string, bool) { return s.optimized, s.optimizedBuilt }
