package models

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"time"
)

// StrategyKind says how a new version replaces the Active one.
type StrategyKind string

// The rollout strategies.
const (
	// StrategyImmediate: load, warm up, switch all traffic at once.
	StrategyImmediate StrategyKind = "immediate"
	// StrategyCanary: a fraction of the model's traffic goes to the
	// candidate and its answers are returned; the health gates compare it
	// with Active.
	StrategyCanary StrategyKind = "canary"
	// StrategyShadow: a sample of live traffic is mirrored to the candidate
	// after Active answered; its outputs are compared, never returned.
	StrategyShadow StrategyKind = "shadow"
)

// OnFailure says what a failed health gate does.
type OnFailure string

// The failure policies.
const (
	// Rollback (the default): stop routing to the candidate, unload it,
	// mark it Failed(HealthRegression). Active never stopped serving.
	Rollback OnFailure = "rollback"
	// Hold: stop routing traffic (or mirroring) to the candidate but keep
	// it loaded in its Canary/Shadow state for an operator to inspect;
	// activate or abort it through the admin API.
	Hold OnFailure = "hold"
)

// Strategy is a model's rollout instruction, as carried in desired state
// and accepted by the admin API. JSON:
//
//	{"kind": "canary", "canary_percent": 10, "min_duration": "5m", "min_requests": 500,
//	 "max_duration": "1h", "gates": {"max_error_rate": 0.01, "max_p99_ratio": 1.5},
//	 "on_failure": "rollback"}
//
//	{"kind": "shadow", "shadow_percent": 25, "min_requests": 200,
//	 "gates": {"max_abs_diff": 1e-3, "min_argmax_agreement": 0.99}}
//
// Zero fields take the defaults of Normalize.
type Strategy struct {
	Kind StrategyKind `json:"kind"`
	// CanaryPercent is the share of the model's default-routed requests
	// that the candidate answers (canary only), 0 < p ≤ 100.
	CanaryPercent float64 `json:"canary_percent,omitempty"`
	// ShadowPercent is the share of default-routed requests mirrored to the
	// candidate (shadow only), 0 < p ≤ 100.
	ShadowPercent float64 `json:"shadow_percent,omitempty"`
	// MinDuration and MinRequests must both be reached before the
	// candidate is promoted (MinRequests counts candidate requests for a
	// canary, compared mirrors for a shadow). Gates are checked from the
	// moment MinRequests is reached, so a bad candidate fails early.
	MinDuration Duration `json:"min_duration,omitempty"`
	MinRequests int64    `json:"min_requests,omitempty"`
	// MaxDuration bounds the whole observation (canary and shadow default
	// 10m, or MinDuration when longer), so a node with little traffic does
	// not sit in Canary for ever; reaching it without MinRequests
	// observations is decided by OnLowTraffic.
	MaxDuration Duration `json:"max_duration,omitempty"`
	// OnLowTraffic is promote (the default: the gates are checked on the
	// observations there are, and the candidate is promoted when none
	// failed) or fail ("not enough traffic").
	OnLowTraffic LowTraffic `json:"on_low_traffic,omitempty"`
	Gates        Gates      `json:"gates"`
	// OnFailure is rollback (default) or hold.
	OnFailure OnFailure `json:"on_failure,omitempty"`
}

// LowTraffic says what reaching MaxDuration with fewer than MinRequests
// observations does.
type LowTraffic string

// The low-traffic rules.
const (
	LowTrafficPromote LowTraffic = "promote"
	LowTrafficFail    LowTraffic = "fail"
)

// Gates are the health checks a candidate must pass. A nil gate is not
// checked. Latency and error figures cover the rollout's window only.
type Gates struct {
	// MaxErrorRate: candidate run errors / candidate requests (client
	// errors such as bad input shapes are not counted), 0–1.
	MaxErrorRate *float64 `json:"max_error_rate,omitempty"`
	// MaxP99Ratio: candidate p99 latency / Active's p99 over the same
	// window, ≥ 1.
	MaxP99Ratio *float64 `json:"max_p99_ratio,omitempty"`
	// MaxAbsDiff (shadow): the largest |candidate − active| of any float
	// output element in any compared request, ≥ 0.
	MaxAbsDiff *float64 `json:"max_abs_diff,omitempty"`
	// MaxCosineDistance (shadow): the mean over compared float outputs of
	// 1 − cos(candidate, active), 0–2.
	MaxCosineDistance *float64 `json:"max_cosine_distance,omitempty"`
	// MinArgmaxAgreement (shadow): the share of rows (argmax over each
	// output's last axis) whose class agrees, 0–1.
	MinArgmaxAgreement *float64 `json:"min_argmax_agreement,omitempty"`
}

// Strategy defaults (Normalize).
const (
	DefaultCanaryPercent = 10
	DefaultShadowPercent = 100
	DefaultMinRequests   = 100
	DefaultMinDuration   = Duration(time.Minute)
	DefaultMaxDuration   = Duration(10 * time.Minute)
	DefaultMaxErrorRate  = 0.01
	DefaultMaxP99Ratio   = 2.0
	// MaxStrategyBytes bounds an encoded strategy.
	MaxStrategyBytes = 4 << 10
)

// Duration is a time.Duration written in JSON as a Go duration string
// ("90s", "5m"); a JSON number is read as seconds.
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*d = Duration(v)
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("duration: want a string such as \"90s\" or a number of seconds")
	}
	if math.IsNaN(f) || math.Abs(f) > float64(math.MaxInt64)/float64(time.Second) {
		return fmt.Errorf("duration %v seconds is out of range", f)
	}
	*d = Duration(f * float64(time.Second))
	return nil
}

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// DecodeStrategy decodes and validates a strategy (unknown fields and
// trailing data are errors) and fills in the defaults. Errors wrap
// ErrInvalidArgument.
func DecodeStrategy(b []byte) (Strategy, error) {
	var s Strategy
	if len(b) > MaxStrategyBytes {
		return s, fmt.Errorf("strategy is %d bytes, more than %d: %w", len(b), MaxStrategyBytes, ErrInvalidArgument)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return Strategy{}, fmt.Errorf("strategy: %v: %w", err, ErrInvalidArgument)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Strategy{}, fmt.Errorf("strategy: data after the JSON object: %w", ErrInvalidArgument)
	}
	return s.Normalize()
}

// Normalize validates s and returns it with the defaults filled in: kind
// immediate; canary 10 %, shadow 100 %; min_requests 100, min_duration
// 1m, max_duration 10m (or min_duration when longer) and on_low_traffic
// promote for canary and shadow; max_error_rate 0.01 and max_p99_ratio 2 when
// no gate at all is given; on_failure rollback. Errors name the field and
// wrap ErrInvalidArgument.
func (s Strategy) Normalize() (Strategy, error) {
	bad := func(format string, args ...any) (Strategy, error) {
		return Strategy{}, fmt.Errorf("strategy: "+format+": %w", append(args, ErrInvalidArgument)...)
	}
	if s.Kind == "" {
		s.Kind = StrategyImmediate
	}
	finite := func(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }
	switch s.Kind {
	case StrategyImmediate:
		if s.CanaryPercent != 0 || s.ShadowPercent != 0 {
			return bad("kind immediate takes no canary_percent or shadow_percent")
		}
		if s.OnLowTraffic != "" {
			return bad("kind immediate takes no on_low_traffic")
		}
	case StrategyCanary:
		if s.ShadowPercent != 0 {
			return bad("kind canary takes no shadow_percent")
		}
		if s.CanaryPercent == 0 {
			s.CanaryPercent = DefaultCanaryPercent
		}
		if !finite(s.CanaryPercent) || s.CanaryPercent <= 0 || s.CanaryPercent > 100 {
			return bad("canary_percent %v: want 0 < p ≤ 100", s.CanaryPercent)
		}
	case StrategyShadow:
		if s.CanaryPercent != 0 {
			return bad("kind shadow takes no canary_percent")
		}
		if s.ShadowPercent == 0 {
			s.ShadowPercent = DefaultShadowPercent
		}
		if !finite(s.ShadowPercent) || s.ShadowPercent <= 0 || s.ShadowPercent > 100 {
			return bad("shadow_percent %v: want 0 < p ≤ 100", s.ShadowPercent)
		}
	default:
		return bad("kind %q: want immediate, canary or shadow", s.Kind)
	}
	if s.MinDuration < 0 || s.MaxDuration < 0 || s.MinRequests < 0 {
		return bad("min_duration, max_duration and min_requests must not be negative")
	}
	if s.MinRequests > 1e9 {
		return bad("min_requests %d is more than 1e9", s.MinRequests)
	}
	if s.Kind != StrategyImmediate {
		if s.MinRequests == 0 {
			s.MinRequests = DefaultMinRequests
		}
		if s.MinDuration == 0 {
			s.MinDuration = DefaultMinDuration
		}
		if s.MaxDuration == 0 {
			s.MaxDuration = max(DefaultMaxDuration, s.MinDuration)
		}
		if s.MaxDuration < s.MinDuration {
			return bad("max_duration %v is shorter than min_duration %v", s.MaxDuration.D(), s.MinDuration.D())
		}
		switch s.OnLowTraffic {
		case "":
			s.OnLowTraffic = LowTrafficPromote
		case LowTrafficPromote, LowTrafficFail:
		default:
			return bad("on_low_traffic %q: want promote or fail", s.OnLowTraffic)
		}
	}
	g := s.Gates
	check := func(name string, p *float64, lo, hi float64) error {
		if p != nil && (!finite(*p) || *p < lo || *p > hi) {
			return fmt.Errorf("strategy: gates.%s %v: want %v ≤ x ≤ %v: %w", name, *p, lo, hi, ErrInvalidArgument)
		}
		return nil
	}
	if err := errors.Join(
		check("max_error_rate", g.MaxErrorRate, 0, 1),
		check("max_p99_ratio", g.MaxP99Ratio, 1, math.MaxFloat64),
		check("max_abs_diff", g.MaxAbsDiff, 0, math.MaxFloat64),
		check("max_cosine_distance", g.MaxCosineDistance, 0, 2),
		check("min_argmax_agreement", g.MinArgmaxAgreement, 0, 1),
	); err != nil {
		return Strategy{}, err
	}
	if s.Kind != StrategyShadow && (g.MaxAbsDiff != nil || g.MaxCosineDistance != nil || g.MinArgmaxAgreement != nil) {
		return bad("output drift gates apply to kind shadow only")
	}
	if s.Kind != StrategyImmediate && g == (Gates{}) {
		e, p := DefaultMaxErrorRate, DefaultMaxP99Ratio
		s.Gates = Gates{MaxErrorRate: &e, MaxP99Ratio: &p}
	}
	switch s.OnFailure {
	case "":
		s.OnFailure = Rollback
	case Rollback, Hold:
	default:
		return bad("on_failure %q: want rollback or hold", s.OnFailure)
	}
	return s, nil
}

// RolloutPhase is where a rollout stands.
type RolloutPhase string

// The rollout phases. Running is the only one that is not final.
const (
	RolloutRunning    RolloutPhase = "running"
	RolloutPromoted   RolloutPhase = "promoted"
	RolloutRolledBack RolloutPhase = "rolled_back"
	RolloutHeld       RolloutPhase = "held"
	// RolloutAborted: stopped by an operator, a newer rollout, or a node
	// restart; the candidate was retired, Active kept serving.
	RolloutAborted RolloutPhase = "aborted"
)

// Final reports whether p is a final phase.
func (p RolloutPhase) Final() bool { return p != RolloutRunning && p != "" }

// Decision events.
const (
	EventStarted    = "started"
	EventStaged     = "staged"      // candidate loaded, warmed up and receiving traffic
	EventPromoted   = "promoted"    // candidate became Active
	EventRolledBack = "rolled_back" // candidate failed and was removed
	EventHeld       = "held"        // candidate failed and was kept, without traffic
	EventAborted    = "aborted"
)

// Decision is one step of a rollout with the figures it was based on
// (requests, errors, error_rate, p99 latencies in seconds, drift, …).
type Decision struct {
	At      time.Time          `json:"at"`
	Event   string             `json:"event"`
	Reason  string             `json:"reason,omitempty"`
	Figures map[string]float64 `json:"figures,omitempty"`
}

// MaxDecisions is how many decisions a rollout record keeps (the outbox
// has them all).
const MaxDecisions = 32

// Rollout is the record of a model's latest rollout.
type Rollout struct {
	Model   string `json:"model"`
	Version string `json:"version"`
	// Baseline is the version that was Active when the rollout started.
	Baseline  string       `json:"baseline,omitempty"`
	Strategy  Strategy     `json:"strategy"`
	Phase     RolloutPhase `json:"phase"`
	Started   time.Time    `json:"started"`
	Updated   time.Time    `json:"updated"`
	Decisions []Decision   `json:"decisions,omitempty"`
}

// RolloutStore is the store's side of on-device rollouts: the latest
// rollout per model and its decisions, each written with its outbox report
// (Report.Event set) in one transaction.
type RolloutStore interface {
	// StartRollout records r (phase running) with a "started" decision. It
	// refuses (ErrInUse) while the model has a running rollout.
	StartRollout(ctx context.Context, r Rollout) (Rollout, error)
	// Decide appends d to the model's rollout and sets its phase; move,
	// when not nil, is a version state transition made in the same
	// transaction.
	Decide(ctx context.Context, model string, phase RolloutPhase, d Decision, move *Move) (Rollout, error)
	// Rollout returns a model's latest rollout (ErrNotFound if none).
	Rollout(ctx context.Context, model string) (Rollout, error)
	// Rollouts returns every model's latest rollout.
	Rollouts(ctx context.Context) ([]Rollout, error)
}

// Move is a version state transition made together with a rollout decision.
type Move struct {
	Version string
	To      State
	Opts    TransitionOptions
}
