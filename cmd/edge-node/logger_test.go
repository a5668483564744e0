package main

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/edgeai/edge-node/node"
)

// TestLogDurationsAreStrings: the process logger writes a duration as a
// Go duration string, so a reader needs no convention for the unit.
func TestLogDurationsAreStrings(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger(node.LogConfig{Level: "info", Format: "json"}, &buf, false)
	if err != nil {
		t.Fatal(err)
	}
	log.Info().Dur("retry_in", 1500*time.Millisecond).Msg("x")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	if line["retry_in"] != "1.5s" {
		t.Errorf("retry_in = %#v, want \"1.5s\" (line %s)", line["retry_in"], buf.Bytes())
	}
}
