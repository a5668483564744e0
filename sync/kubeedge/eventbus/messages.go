// Package eventbus connects the node to KubeEdge's EventBus MQTT twin
// topics, for KubeEdge set-ups whose devices talk to EdgeCore over MQTT
// ($hw/events/device/{namespace}/{name}/twin/...): the node reads
// twin/update/delta (and twin/get/result at start-up), applies the desired
// values through kubeedge.Twin like an MQTT desired state, and reports
// actual values on twin/update.
//
// The message structs are written here, matching the wire format of
// KubeEdge's edge/pkg/devicetwin/dttype (kubeedge/kubeedge's edge packages
// cannot be imported: they depend on modules the Go proxy does not serve).
package eventbus

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/edgeai/edge-node/sync/kubeedge"
)

// Topics are one device's EventBus topics. The device id is
// "{namespace}/{name}" (KubeEdge ≥ 1.16).
type Topics struct {
	// Published by the device.
	Update, Get, StateUpdate string
	// Published by EdgeCore.
	UpdateResult, GetResult, Delta, Document string
}

// DeviceTopics returns the topics of device namespace/name.
func DeviceTopics(namespace, name string) Topics {
	p := "$hw/events/device/" + namespace + "/" + name
	return Topics{
		Update:       p + "/twin/update",
		Get:          p + "/twin/get",
		StateUpdate:  p + "/state/update",
		UpdateResult: p + "/twin/update/result",
		GetResult:    p + "/twin/get/result",
		Delta:        p + "/twin/update/delta",
		Document:     p + "/twin/update/document",
	}
}

// BaseMessage is in every EventBus message.
type BaseMessage struct {
	EventID string `json:"event_id"`
	// Timestamp is in milliseconds since the epoch.
	Timestamp int64 `json:"timestamp"`
}

// ValueMetadata is a twin value's metadata.
type ValueMetadata struct {
	Timestamp int64 `json:"timestamp,omitempty"`
}

// TwinValue is an expected or actual twin value.
type TwinValue struct {
	Value    *string        `json:"value,omitempty"`
	Metadata *ValueMetadata `json:"metadata,omitempty"`
}

// TypeMetadata is a twin's type ("string", ...; "deleted" for a removed twin).
type TypeMetadata struct {
	Type string `json:"type,omitempty"`
}

// TwinVersion is a twin value's version vector.
type TwinVersion struct {
	CloudVersion int64 `json:"cloud"`
	EdgeVersion  int64 `json:"edge"`
}

// MsgTwin is one twin as it travels.
type MsgTwin struct {
	Expected        *TwinValue    `json:"expected,omitempty"`
	Actual          *TwinValue    `json:"actual,omitempty"`
	Optional        *bool         `json:"optional,omitempty"`
	Metadata        *TypeMetadata `json:"metadata,omitempty"`
	ExpectedVersion *TwinVersion  `json:"expected_version,omitempty"`
	ActualVersion   *TwinVersion  `json:"actual_version,omitempty"`
}

// TwinUpdate is published on twin/update (and is the shape of twin/get/result
// and twin/update/result).
type TwinUpdate struct {
	BaseMessage
	Twin map[string]*MsgTwin `json:"twin"`
}

// TwinDelta is published by EdgeCore on twin/update/delta: every twin with an
// expected value, and in Delta the expected values that differ from actual.
type TwinDelta struct {
	BaseMessage
	Twin  map[string]*MsgTwin `json:"twin"`
	Delta map[string]string   `json:"delta"`
}

// ErrorResult is EdgeCore's answer to a refused request.
type ErrorResult struct {
	BaseMessage
	Code   int    `json:"code,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// MaxPayload bounds a decoded message: a Device's twins are bounded by the
// twin limits (kubeedge.MaxProperties names of ≤128 and values of ≤512
// characters, plus JSON), far below 2 MiB.
const MaxPayload = 2 << 20

// MaxTwins bounds the twins of one message.
const MaxTwins = kubeedge.MaxProperties

var errNotObject = errors.New("eventbus: payload is not a JSON object")

func decode(b []byte, v any) error {
	if len(b) > MaxPayload {
		return fmt.Errorf("eventbus: payload of %d bytes, limit %d", len(b), MaxPayload)
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return errNotObject
	}
	// Unknown fields are allowed: the format is KubeEdge's, and it grows.
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("eventbus: %w", err)
	}
	if dec.More() {
		return errors.New("eventbus: data after the JSON object")
	}
	return nil
}

// DecodeDelta decodes a twin/update/delta payload.
func DecodeDelta(b []byte) (TwinDelta, error) {
	var d TwinDelta
	if err := decode(b, &d); err != nil {
		return TwinDelta{}, err
	}
	if len(d.Twin)+len(d.Delta) > MaxTwins {
		return TwinDelta{}, fmt.Errorf("eventbus: %d twins, limit %d", len(d.Twin)+len(d.Delta), MaxTwins)
	}
	return d, nil
}

// DecodeTwinResult decodes a twin/get/result or twin/update/result payload.
// An error result (code and reason, no twin) comes back as an *ErrorResult
// error.
func DecodeTwinResult(b []byte) (TwinUpdate, error) {
	var r struct {
		TwinUpdate
		Code   int    `json:"code,omitempty"`
		Reason string `json:"reason,omitempty"`
	}
	if err := decode(b, &r); err != nil {
		return TwinUpdate{}, err
	}
	if r.Code >= 300 {
		return TwinUpdate{}, &ErrorResult{BaseMessage: r.BaseMessage, Code: r.Code, Reason: r.Reason}
	}
	if len(r.Twin) > MaxTwins {
		return TwinUpdate{}, fmt.Errorf("eventbus: %d twins, limit %d", len(r.Twin), MaxTwins)
	}
	return r.TwinUpdate, nil
}

func (e *ErrorResult) Error() string {
	return fmt.Sprintf("eventbus: EdgeCore refused event %q: %d %s", e.EventID, e.Code, e.Reason)
}

// Desired returns the desired property values of twins (every twin's
// expected value; deleted twins and twins without one are left out),
// overridden by delta, sorted by name.
func Desired(twins map[string]*MsgTwin, delta map[string]string) []kubeedge.Property {
	vals := map[string]string{}
	for name, tw := range twins {
		if tw == nil || (tw.Metadata != nil && tw.Metadata.Type == "deleted") {
			continue
		}
		if tw.Expected != nil && tw.Expected.Value != nil {
			vals[name] = *tw.Expected.Value
		}
	}
	for name, v := range delta {
		vals[name] = v
	}
	out := make([]kubeedge.Property, 0, len(vals))
	for n, v := range vals {
		out = append(out, kubeedge.Property{Name: n, Value: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// NewBase returns a BaseMessage with a random event id and the time now.
func NewBase(now time.Time) BaseMessage {
	var b [16]byte
	rand.Read(b[:])
	return BaseMessage{EventID: hex.EncodeToString(b[:]), Timestamp: now.UnixMilli()}
}

// EncodeReport builds a twin/update payload that reports the actual values.
func EncodeReport(vals []kubeedge.TwinValue, now time.Time) ([]byte, error) {
	ms := now.UnixMilli()
	u := TwinUpdate{BaseMessage: NewBase(now), Twin: make(map[string]*MsgTwin, len(vals))}
	for _, v := range vals {
		if !kubeedge.ValidName(v.Name) || !kubeedge.ValidValue(v.Reported) {
			return nil, fmt.Errorf("eventbus: twin %q=%q outside KubeEdge's alphabet", v.Name, v.Reported)
		}
		val := v.Reported
		u.Twin[v.Name] = &MsgTwin{
			Actual:   &TwinValue{Value: &val, Metadata: &ValueMetadata{Timestamp: ms}},
			Metadata: &TypeMetadata{Type: kubeedge.ValueType(v.Name)},
		}
	}
	return json.Marshal(u)
}

// EncodeGet builds a twin/get payload.
func EncodeGet(now time.Time) ([]byte, error) { return json.Marshal(NewBase(now)) }
