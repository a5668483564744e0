package wire

import (
	"encoding/json"
	"fmt"

	"github.com/edgeai/edge-node/models"
)

// Rollout strategies: how a node moves traffic to a new version, by itself.
const (
	StrategyImmediate = models.StrategyImmediate
	StrategyCanary    = models.StrategyCanary
	StrategyShadow    = models.StrategyShadow
)

// DesiredState is what a node or a group should run, published retained on
// Topics.NodeDesired or Topics.GroupDesired.
type DesiredState struct {
	Protocol   int    `json:"protocol"`
	Generation uint64 `json:"generation"`
	Updated    string `json:"updated,omitempty"`
	// Target is "node/{id}" or "group/{name}": whose desired state this is.
	// Optional in an unsigned state; a signed one must name its topic's.
	Target string `json:"target,omitempty"`
	// Expires (RFC 3339, optional) is when this state stops being
	// accepted (DecodeDesiredMessage): a writer that sets it re-signs
	// before then, so a broker that freezes a node on an old state is
	// found out at Expires instead of never.
	Expires string               `json:"expires,omitempty"`
	Models  map[string]ModelSpec `json:"models"`
}

// ModelSpec is the desired state of one model.
type ModelSpec struct {
	// Version to run; empty only when Absent.
	Version string `json:"version,omitempty"`
	// Absent removes the model that a lower-priority source asks for.
	Absent   bool        `json:"absent,omitempty"`
	Strategy *Strategy   `json:"strategy,omitempty"`
	Rollout  *RolloutRef `json:"rollout,omitempty"`
}

// Strategy says how a new version takes traffic on the node: the on-device
// rollout strategy (kind immediate, canary or shadow; percentages; minimum
// duration and requests; health gates; on_failure), the same type the node's
// store records, so that what the cloud writes is exactly what the node runs.
type Strategy = models.Strategy

// RolloutRef ties a desired state to a fleet rollout and its wave. Nodes carry
// it through to status and events without interpreting it.
type RolloutRef struct {
	ID   string `json:"id"`
	Wave int    `json:"wave"`
}

// DecodeDesired decodes and validates a desired-state payload.
func DecodeDesired(b []byte) (DesiredState, error) {
	var d DesiredState
	if err := decodeStrict(KindDesired, b, MaxControlBytes, &d); err != nil {
		return DesiredState{}, err
	}
	if err := d.Validate(); err != nil {
		return DesiredState{}, err
	}
	return d, nil
}

// Encode validates d and returns its JSON.
func (d DesiredState) Encode() ([]byte, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(d)
}

// Validate checks every field of d.
func (d DesiredState) Validate() error {
	const k = KindDesired
	if err := checkProtocol(k, d.Protocol); err != nil {
		return err
	}
	if d.Generation == 0 {
		return Reject(k, ReasonBadField, "generation must be > 0")
	}
	if err := checkJSONInt(k, "generation", d.Generation); err != nil {
		return err
	}
	if err := checkTime(k, "updated", d.Updated, false); err != nil {
		return err
	}
	if err := checkTime(k, "expires", d.Expires, false); err != nil {
		return err
	}
	if d.Target != "" {
		if err := validTarget(d.Target); err != nil {
			return Reject(k, ReasonBadField, "%v", err)
		}
	}
	if len(d.Models) > MaxModels {
		return Reject(k, ReasonTooLarge, "%d models, limit %d", len(d.Models), MaxModels)
	}
	for name, m := range d.Models {
		if err := ValidName(name); err != nil {
			return Reject(k, ReasonBadField, "model: %v", err)
		}
		if err := m.validate(); err != nil {
			return Reject(k, ReasonBadField, "model %s: %v", name, err)
		}
	}
	return nil
}

func (m ModelSpec) validate() error {
	if m.Absent {
		if m.Version != "" || m.Strategy != nil || m.Rollout != nil {
			return fmt.Errorf("absent entry must have no version, strategy or rollout")
		}
		return nil
	}
	if err := ValidName(m.Version); err != nil {
		return fmt.Errorf("version: %w", err)
	}
	if s := m.Strategy; s != nil {
		if _, err := s.Normalize(); err != nil {
			return err
		}
	}
	if r := m.Rollout; r != nil {
		if err := ValidName(r.ID); err != nil {
			return fmt.Errorf("rollout id: %w", err)
		}
		if r.Wave < 0 || r.Wave > 1000 {
			return fmt.Errorf("rollout wave %d out of range 0-1000", r.Wave)
		}
	}
	return nil
}

// Merge returns the effective desired models: node entries win over group
// entries, earlier groups win over later ones, and Absent entries remove a
// model. Nil inputs are allowed (no desired state from that source yet).
func Merge(node *DesiredState, groups []*DesiredState) map[string]ModelSpec {
	out := map[string]ModelSpec{}
	decided := map[string]bool{}
	apply := func(d *DesiredState) {
		if d == nil {
			return
		}
		for name, m := range d.Models {
			if decided[name] {
				continue
			}
			decided[name] = true
			if !m.Absent {
				out[name] = m
			}
		}
	}
	apply(node)
	for _, g := range groups {
		apply(g)
	}
	return out
}
