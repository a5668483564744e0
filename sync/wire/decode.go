package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"time"
)

// Protocol is the protocol version this package speaks. Every JSON payload
// carries it in a "protocol" field.
const Protocol = 1

// Size limits. MaxMessageBytes bounds every MQTT payload; MaxChunkBytes bounds
// a chunk (leaving room under MaxMessageBytes for the topic and MQTT header).
const (
	MaxMessageBytes      = 1 << 20
	MaxChunkBytes        = MaxMessageBytes - 4<<10
	MaxControlBytes      = 64 << 10 // desired state, status, presence, events
	DefaultMaxModelBytes = 2 << 30
	MaxFiles             = 64
	MaxModels            = 256 // entries in one desired state or status
	maxTextBytes         = 4 << 10
)

// MaxJSONInt is the largest integer the protocol carries, 2^53-1: every JSON
// implementation (JavaScript's numbers, Python's json with floats) reads
// integers up to it exactly. Generations, event sequence numbers and byte
// counts above it are rejected (ReasonBadField).
const MaxJSONInt = 1<<53 - 1

// MaxGeneration is the largest desired-state generation: MaxJSONInt.
const MaxGeneration = MaxJSONInt

func checkJSONInt[T int64 | uint64](kind, field string, v T) error {
	if uint64(v) > MaxJSONInt && v > 0 {
		return Reject(kind, ReasonBadField, "%s %d over 2^53-1 (the largest integer JSON carries exactly)", field, v)
	}
	return nil
}

// decodeStrict decodes one JSON value from b into v: size-limited, unknown
// fields rejected, nothing after the value.
func decodeStrict(kind string, b []byte, limit int, v any) error {
	if len(b) > limit {
		return Reject(kind, ReasonOversize, "%d bytes, limit %d", len(b), limit)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &RejectError{Kind: kind, Reason: ReasonBadJSON, Err: err}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Reject(kind, ReasonBadJSON, "trailing data after JSON value")
	}
	return nil
}

func checkProtocol(kind string, p int) error {
	if p != Protocol {
		return Reject(kind, ReasonUnknownProtocol, "protocol %d, this node speaks %d", p, Protocol)
	}
	return nil
}

func checkTime(kind, field, s string, required bool) error {
	if s == "" && !required {
		return nil
	}
	if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
		return Reject(kind, ReasonBadField, "%s: %v", field, err)
	}
	return nil
}

func checkText(kind, field, s string) error {
	if len(s) > maxTextBytes {
		return Reject(kind, ReasonBadField, "%s: %d bytes, limit %d", field, len(s), maxTextBytes)
	}
	return nil
}
