package wire

import (
	"encoding/json"
	"fmt"
	"regexp"

	"github.com/edgeai/edge-node/models"
)

// Status is a node's retained report of what it runs.
type Status struct {
	Protocol int                    `json:"protocol"`
	Node     string                 `json:"node"`
	Time     string                 `json:"time"`
	Agent    string                 `json:"agent,omitempty"`
	Desired  AppliedGenerations     `json:"desired"`
	Models   map[string]ModelStatus `json:"models"`
	// Labels describe the node (arch, accelerator, site, anything
	// configured); fleet rollouts select nodes by them.
	Labels map[string]string `json:"labels,omitempty"`
}

// MaxLabels bounds the labels of one node.
const MaxLabels = 64

var labelValueRE = regexp.MustCompile(`^[A-Za-z0-9._-]{0,63}$`)

// ValidLabel checks a label: the key is a name (ValidName), the value 0–63
// characters of [A-Za-z0-9._-].
func ValidLabel(k, v string) error {
	if err := ValidName(k); err != nil {
		return fmt.Errorf("label key: %w", err)
	}
	if !labelValueRE.MatchString(v) {
		return fmt.Errorf("label %s: invalid value %.80q: want 0-63 of [A-Za-z0-9._-]", k, v)
	}
	return nil
}

// AppliedGenerations are the desired-state generations a node has accepted.
type AppliedGenerations struct {
	Node   uint64            `json:"node"`
	Groups map[string]uint64 `json:"groups,omitempty"`
}

// ModelStatus is the state of one model on a node.
type ModelStatus struct {
	Version    string      `json:"version"`
	State      string      `json:"state"`
	Reason     string      `json:"reason,omitempty"`
	BytesDone  int64       `json:"bytes_done,omitempty"`
	BytesTotal int64       `json:"bytes_total,omitempty"`
	Rollout    *RolloutRef `json:"rollout,omitempty"`
	// P99Ms is the 99th-percentile inference latency of this version on
	// the node, in milliseconds (0: not measured yet).
	P99Ms float64 `json:"p99_ms,omitempty"`
	// Serving is the version the node serves (its store's Active one)
	// when that is not Version: while the desired version downloads or
	// rolls out, after it failed, or under a local override. Empty when
	// Version is what serves, or when nothing does.
	Serving string `json:"serving,omitempty"`
	// Lineage is the Active version's lineage from its manifest (training
	// run, data set digest, source commit, evaluation metrics), when it
	// has one.
	Lineage *models.Lineage `json:"lineage,omitempty"`
}

// Presence is a node's retained liveness flag; the Last Will publishes it with
// Online false.
type Presence struct {
	Protocol int    `json:"protocol"`
	Node     string `json:"node"`
	Online   bool   `json:"online"`
	Time     string `json:"time,omitempty"`
}

// Event is one thing that happened on a node (not retained).
type Event struct {
	Protocol int         `json:"protocol"`
	Node     string      `json:"node"`
	Seq      uint64      `json:"seq"`
	Time     string      `json:"time"`
	Type     string      `json:"type"`
	Model    string      `json:"model,omitempty"`
	Version  string      `json:"version,omitempty"`
	State    string      `json:"state,omitempty"`
	Reason   string      `json:"reason,omitempty"`
	Detail   string      `json:"detail,omitempty"`
	Rollout  *RolloutRef `json:"rollout,omitempty"`
}

// DecodeStatus decodes and validates a status payload.
func DecodeStatus(b []byte) (Status, error) {
	var s Status
	if err := decodeStrict(KindStatus, b, MaxControlBytes, &s); err != nil {
		return Status{}, err
	}
	return s, s.Validate()
}

// Validate checks every field of s.
func (s Status) Validate() error {
	const k = KindStatus
	if err := checkProtocol(k, s.Protocol); err != nil {
		return err
	}
	if err := ValidName(s.Node); err != nil {
		return Reject(k, ReasonBadField, "node: %v", err)
	}
	if err := checkTime(k, "time", s.Time, true); err != nil {
		return err
	}
	if err := checkText(k, "agent", s.Agent); err != nil {
		return err
	}
	if len(s.Models) > MaxModels || len(s.Desired.Groups) > MaxModels {
		return Reject(k, ReasonTooLarge, "too many models or groups")
	}
	if len(s.Labels) > MaxLabels {
		return Reject(k, ReasonTooLarge, "%d labels, limit %d", len(s.Labels), MaxLabels)
	}
	for lk, lv := range s.Labels {
		if err := ValidLabel(lk, lv); err != nil {
			return Reject(k, ReasonBadField, "%v", err)
		}
	}
	if err := checkJSONInt(k, "desired node generation", s.Desired.Node); err != nil {
		return err
	}
	for g, gen := range s.Desired.Groups {
		if err := ValidName(g); err != nil {
			return Reject(k, ReasonBadField, "group: %v", err)
		}
		if err := checkJSONInt(k, "desired group "+g+" generation", gen); err != nil {
			return err
		}
	}
	for name, m := range s.Models {
		if err := ValidName(name); err != nil {
			return Reject(k, ReasonBadField, "model: %v", err)
		}
		if m.Version != "" {
			if err := ValidName(m.Version); err != nil {
				return Reject(k, ReasonBadField, "model %s version: %v", name, err)
			}
		}
		if m.Serving != "" {
			if err := ValidName(m.Serving); err != nil {
				return Reject(k, ReasonBadField, "model %s serving: %v", name, err)
			}
		}
		if err := checkText(k, "state", m.State+m.Reason); err != nil {
			return err
		}
		if m.P99Ms < 0 || m.P99Ms > 1e9 {
			return Reject(k, ReasonBadField, "model %s: p99_ms %g out of range", name, m.P99Ms)
		}
		if m.Rollout != nil {
			if err := ValidName(m.Rollout.ID); err != nil || m.Rollout.Wave < 0 || m.Rollout.Wave > 1000 {
				return Reject(k, ReasonBadField, "model %s: bad rollout reference", name)
			}
		}
		if m.Lineage != nil {
			if err := m.Lineage.Validate(); err != nil {
				return Reject(k, ReasonBadField, "model %s: %v", name, err)
			}
		}
		if err := checkJSONInt(k, "model "+name+" bytes_total", m.BytesTotal); err != nil {
			return err
		}
		if m.BytesDone < 0 || m.BytesTotal < 0 || m.BytesDone > m.BytesTotal {
			return Reject(k, ReasonBadField, "model %s: bytes_done %d / bytes_total %d", name, m.BytesDone, m.BytesTotal)
		}
	}
	return nil
}

// Encode validates s and returns its JSON.
func (s Status) Encode() ([]byte, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(s)
}

// DecodePresence decodes and validates a presence payload.
func DecodePresence(b []byte) (Presence, error) {
	var p Presence
	if err := decodeStrict(KindPresence, b, MaxControlBytes, &p); err != nil {
		return Presence{}, err
	}
	return p, p.Validate()
}

// Validate checks every field of p.
func (p Presence) Validate() error {
	if err := checkProtocol(KindPresence, p.Protocol); err != nil {
		return err
	}
	if err := ValidName(p.Node); err != nil {
		return Reject(KindPresence, ReasonBadField, "node: %v", err)
	}
	return checkTime(KindPresence, "time", p.Time, false)
}

// Encode validates p and returns its JSON.
func (p Presence) Encode() ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(p)
}

// Validate checks every field of e.
func (e Event) Validate() error {
	const k = KindEvent
	if err := checkProtocol(k, e.Protocol); err != nil {
		return err
	}
	if err := ValidName(e.Node); err != nil {
		return Reject(k, ReasonBadField, "node: %v", err)
	}
	if err := checkTime(k, "time", e.Time, true); err != nil {
		return err
	}
	if err := checkJSONInt(k, "seq", e.Seq); err != nil {
		return err
	}
	if e.Type == "" {
		return Reject(k, ReasonBadField, "type is required")
	}
	for f, v := range map[string]string{"type": e.Type, "state": e.State, "reason": e.Reason, "detail": e.Detail} {
		if err := checkText(k, f, v); err != nil {
			return err
		}
	}
	if e.Model != "" {
		if err := ValidName(e.Model); err != nil {
			return Reject(k, ReasonBadField, "model: %v", err)
		}
	}
	if e.Version != "" {
		if err := ValidName(e.Version); err != nil {
			return Reject(k, ReasonBadField, "version: %v", err)
		}
	}
	return nil
}

// Encode validates e and returns its JSON.
func (e Event) Encode() ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(e)
}
