package wire

import (
	"encoding/json"
	"fmt"
)

// Rollout strategies (acted on by later issues; carried through now).
const (
	StrategyImmediate = "immediate"
	StrategyCanary    = "canary"
	StrategyShadow    = "shadow"
)

// DesiredState is what a node or a group should run, published retained on
// Topics.NodeDesired or Topics.GroupDesired.
type DesiredState struct {
	Protocol   int                  `json:"protocol"`
	Generation uint64               `json:"generation"`
	Updated    string               `json:"updated,omitempty"`
	Models     map[string]ModelSpec `json:"models"`
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

// Strategy says how a new version takes traffic (later issue).
type Strategy struct {
	Kind          string `json:"kind"`
	CanaryPercent int    `json:"canary_percent,omitempty"`
	ShadowPercent int    `json:"shadow_percent,omitempty"`
}

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
	if err := checkTime(k, "updated", d.Updated, false); err != nil {
		return err
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
		switch s.Kind {
		case StrategyImmediate:
			if s.CanaryPercent != 0 || s.ShadowPercent != 0 {
				return fmt.Errorf("strategy immediate takes no percentages")
			}
		case StrategyCanary:
			if s.CanaryPercent < 1 || s.CanaryPercent > 99 || s.ShadowPercent != 0 {
				return fmt.Errorf("strategy canary needs canary_percent 1-99")
			}
		case StrategyShadow:
			if s.ShadowPercent < 1 || s.ShadowPercent > 100 || s.CanaryPercent != 0 {
				return fmt.Errorf("strategy shadow needs shadow_percent 1-100")
			}
		default:
			return fmt.Errorf("unknown strategy %q", s.Kind)
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
