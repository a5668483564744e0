package rollout

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgeai/edge-node/errdefs"
	"github.com/edgeai/edge-node/sync/wire"
)

// Errors callers tell apart with errors.Is. Each is also its errdefs class,
// so errdefs.HTTPStatus maps it (the operator page's API).
var (
	ErrNotFound  = errdefs.Sentinel(errdefs.ErrNotFound, "rollout: not found")
	ErrExists    = errdefs.Sentinel(errdefs.ErrAlreadyExists, "rollout: already exists")
	ErrLeaseHeld = errdefs.Sentinel(errdefs.ErrFailedPrecondition, "rollout: lease held by another controller")
	ErrBadState  = errdefs.Sentinel(errdefs.ErrFailedPrecondition, "rollout: not allowed in this phase")
	ErrNoNodes   = errdefs.Sentinel(errdefs.ErrFailedPrecondition, "no node matches")
)

// Phase is where a rollout is.
type Phase string

// Phases: running → completed | (aborted →) rolled_back | held, and paused
// from running (resume goes back to running). A continuous rollout goes
// from running to watching instead of completed: every wave finished, and
// it keeps adding the nodes that come to match its target (it ends only by
// abort or rollback).
const (
	PhaseRunning     Phase = "running"
	PhasePaused      Phase = "paused"
	PhaseCompleted   Phase = "completed"
	PhaseWatching    Phase = "watching"
	PhaseRollingBack Phase = "rolling_back"
	PhaseRolledBack  Phase = "rolled_back"
	PhaseHeld        Phase = "held"
)

// Final reports whether nothing more happens in phase p.
func (p Phase) Final() bool {
	return p == PhaseCompleted || p == PhaseRolledBack || p == PhaseHeld
}

// What to do when a rollout aborts.
const (
	OnAbortRollback = "rollback"
	OnAbortHold     = "hold"
)

// Operator commands (edgectl rollout pause|resume|abort|rollback), stored in
// the record and carried out by the controller on its next tick.
const (
	CmdPause    = "pause"
	CmdResume   = "resume"
	CmdAbort    = "abort"    // stop and hold
	CmdRollback = "rollback" // stop and write the previous version back
)

// Abort holds the abort criteria (Decide).
type Abort struct {
	MaxFailedPercent float64 `json:"max_failed_percent"`
	MinFinished      int     `json:"min_finished"`
	MaxP99Ratio      float64 `json:"max_p99_ratio,omitempty"`
	// ByType are criteria for one failure type each, checked beside the
	// overall one (AWS IoT Jobs' abortConfig criteria list).
	ByType []TypeCriterion `json:"by_type,omitempty"`
}

// A FailureType is one way a node can end a rollout badly.
type FailureType string

// The failure types, named as Counts names them.
const (
	FailFailed     FailureType = "failed"      // the node failed the version (download, verify, load, warm-up)
	FailRolledBack FailureType = "rolled_back" // the node's on-device gates rolled it back
	FailTimedOut   FailureType = "timed_out"   // not finished NodeTimeout after its wave started
)

var failureTypes = []FailureType{FailFailed, FailRolledBack, FailTimedOut}

// words is t for a sentence: "timed out".
func (t FailureType) words() string { return strings.ReplaceAll(string(t), "_", " ") }

// count is how many of c's nodes ended with failure type t.
func (t FailureType) count(c Counts) int {
	switch t {
	case FailFailed:
		return c.Failed
	case FailRolledBack:
		return c.RolledBack
	case FailTimedOut:
		return c.TimedOut
	}
	return 0
}

// TypeCriterion aborts the rollout when nodes of Type exceed MaxPercent of
// the finished nodes, once at least MinFinished finished (capped, as the
// overall criterion, by the number of nodes counted).
type TypeCriterion struct {
	Type        FailureType `json:"type"`
	MaxPercent  float64     `json:"max_percent"`
	MinFinished int         `json:"min_finished,omitempty"`
}

// validateByType checks the per-type criteria: known types, each once, percent
// 0-100, minimum ≥ 0.
func validateByType(cs []TypeCriterion) error {
	seen := map[FailureType]bool{}
	for _, c := range cs {
		if !slices.Contains(failureTypes, c.Type) {
			return fmt.Errorf("rollout: abort criterion: failure type %q (want failed, rolled_back or timed_out)", c.Type)
		}
		if seen[c.Type] {
			return fmt.Errorf("rollout: abort criterion for %s given twice", c.Type)
		}
		seen[c.Type] = true
		if !(c.MaxPercent >= 0 && c.MaxPercent <= 100) {
			return fmt.Errorf("rollout: abort criterion for %s: percent %g out of range (0-100)", c.Type, c.MaxPercent)
		}
		if c.MinFinished < 0 {
			return fmt.Errorf("rollout: abort criterion for %s: minimum %d finished nodes is negative", c.Type, c.MinFinished)
		}
	}
	return nil
}

// Spec is what an operator asks for.
type Spec struct {
	ID       string            `json:"id"`
	Model    string            `json:"model"`
	Version  string            `json:"version"`
	Group    string            `json:"group,omitempty"`
	Selector map[string]string `json:"selector,omitempty"`
	// Match are further label requirements, all of which a node must meet
	// (a Kubernetes label selector's matchExpressions).
	Match []Requirement `json:"match,omitempty"`
	// Waves are cumulative percentages of the selected nodes, ending at 100.
	Waves    []int          `json:"waves"`
	Strategy *wire.Strategy `json:"strategy,omitempty"`
	Abort    Abort          `json:"abort"`
	// SuccessPercent starts the next wave as soon as this share of the
	// current wave's nodes is Active (hawkBit's success threshold), without
	// waiting for its stragglers, and stops the rollout when the wave
	// finished below it; 0: the next wave starts when every node of the
	// current one finished. The last wave completes only when every node
	// finished.
	SuccessPercent float64       `json:"success_percent,omitempty"`
	WaveTimeout    time.Duration `json:"wave_timeout,omitempty"`
	// NodeTimeout counts a node timed out (a failure) when it has not
	// finished this long after its wave started; 0: never.
	NodeTimeout time.Duration `json:"node_timeout,omitempty"`
	OnAbort     string        `json:"on_abort"`
	// MaxPerMinute paces the desired-state writes (AWS IoT Jobs'
	// maximumPerMinute): a wave's nodes are written at most this many a
	// minute, spread over the ticks (a burst of at most one second's worth
	// plus one node); 0: a wave is written at once. A paced node's
	// NodeTimeout still runs from its wave's start.
	MaxPerMinute int `json:"max_per_minute,omitempty"`
	// Ramp raises the pace as nodes succeed (AWS IoT Jobs' exponentialRate):
	// BasePerMinute at first, times Factor for every EverySucceeded nodes
	// Active; MaxPerMinute, when set, caps it. nil: MaxPerMinute alone.
	Ramp *Ramp `json:"ramp,omitempty"`
	// Continuous keeps the rollout open (AWS IoT Jobs' continuous jobs):
	// nodes that come to match the target after start (new nodes, changed
	// labels or groups) join the wave under way, or the last wave once
	// every wave finished (phase watching), and get the version like any
	// node: paced, timed out and judged by the criteria. Without it such
	// nodes are left alone and counted in Record.Outside.
	Continuous bool `json:"continuous,omitempty"`
	// Retries is how many times a node that failed or timed out is given
	// the version again (its desired state re-written with a new
	// generation: docs/protocol.md, the retry rule) before it counts as
	// failed for the criteria; 0-MaxRetries.
	Retries int `json:"retries,omitempty"`
}

// MaxRetries bounds Spec.Retries.
const MaxRetries = 10

// Label requirement operators (Kubernetes' selector operators).
const (
	OpIn           = "In"
	OpNotIn        = "NotIn"
	OpExists       = "Exists"
	OpDoesNotExist = "DoesNotExist"
)

// A Requirement is one label requirement on the nodes a rollout selects.
type Requirement struct {
	Key      string   `json:"key"`
	Operator string   `json:"operator"`
	Values   []string `json:"values,omitempty"`
}

func (m Requirement) validate() error {
	for _, v := range append([]string{""}, m.Values...) {
		if err := wire.ValidLabel(m.Key, v); err != nil {
			return fmt.Errorf("rollout selector: %w", err)
		}
	}
	switch m.Operator {
	case OpIn, OpNotIn:
		if len(m.Values) == 0 {
			return fmt.Errorf("rollout selector: %s %s needs values", m.Key, m.Operator)
		}
	case OpExists, OpDoesNotExist:
		if len(m.Values) != 0 {
			return fmt.Errorf("rollout selector: %s %s takes no values", m.Key, m.Operator)
		}
	default:
		return fmt.Errorf("rollout selector: operator %q (want In, NotIn, Exists or DoesNotExist)", m.Operator)
	}
	return nil
}

// matches reports whether labels meet m.
func (m Requirement) matches(labels map[string]string) bool {
	v, ok := labels[m.Key]
	switch m.Operator {
	case OpIn:
		return ok && slices.Contains(m.Values, v)
	case OpNotIn:
		return !ok || !slices.Contains(m.Values, v)
	case OpExists:
		return ok
	case OpDoesNotExist:
		return !ok
	}
	return false
}

// Selects reports whether the node with status st is one s targets: its
// group, selector and requirements.
func (s Spec) Selects(st *wire.Status) bool {
	if !Selects(st, s.Group, s.Selector) {
		return false
	}
	for _, m := range s.Match {
		if !m.matches(st.Labels) {
			return false
		}
	}
	return true
}

// Validate checks s.
func (s Spec) Validate() error {
	for f, v := range map[string]string{"id": s.ID, "model": s.Model, "version": s.Version} {
		if err := wire.ValidName(v); err != nil {
			return fmt.Errorf("rollout %s: %w", f, err)
		}
	}
	if s.Group != "" {
		if err := wire.ValidName(s.Group); err != nil {
			return fmt.Errorf("rollout target: %w", err)
		}
	}
	for k, v := range s.Selector {
		if err := wire.ValidLabel(k, v); err != nil {
			return fmt.Errorf("rollout selector: %w", err)
		}
	}
	for _, m := range s.Match {
		if err := m.validate(); err != nil {
			return err
		}
	}
	if err := checkWaves(s.Waves); err != nil {
		return err
	}
	// The same checks a node applies to the desired state.
	d := wire.DesiredState{Protocol: wire.Protocol, Generation: 1, Models: map[string]wire.ModelSpec{
		s.Model: {Version: s.Version, Strategy: s.Strategy, Rollout: &wire.RolloutRef{ID: s.ID, Wave: len(s.Waves)}}}}
	if err := d.Validate(); err != nil {
		return fmt.Errorf("rollout: %w", err)
	}
	if s.Abort.MaxFailedPercent < 0 || s.Abort.MaxFailedPercent > 100 || s.Abort.MinFinished < 0 || s.Abort.MaxP99Ratio < 0 {
		return fmt.Errorf("rollout: abort criteria out of range: max failed percent %g (0-100), min finished %d (≥ 0), max p99 ratio %g (≥ 0)",
			s.Abort.MaxFailedPercent, s.Abort.MinFinished, s.Abort.MaxP99Ratio)
	}
	if err := validateByType(s.Abort.ByType); err != nil {
		return err
	}
	if !(s.SuccessPercent >= 0 && s.SuccessPercent <= 100) {
		return fmt.Errorf("rollout: success percent %g out of range (0-100)", s.SuccessPercent)
	}
	if s.MaxPerMinute < 0 || s.MaxPerMinute > MaxPace {
		return fmt.Errorf("rollout: max per minute %d out of range (0-%d)", s.MaxPerMinute, MaxPace)
	}
	if s.Ramp != nil {
		if err := s.Ramp.Validate(); err != nil {
			return err
		}
	}
	if s.Retries < 0 || s.Retries > MaxRetries {
		return fmt.Errorf("rollout: retries %d out of range (0-%d)", s.Retries, MaxRetries)
	}
	if s.WaveTimeout < 0 || s.NodeTimeout < 0 {
		return fmt.Errorf("rollout: negative timeout")
	}
	if s.OnAbort != OnAbortRollback && s.OnAbort != OnAbortHold {
		return fmt.Errorf("rollout: on-abort must be %q or %q, got %q", OnAbortRollback, OnAbortHold, s.OnAbort)
	}
	return nil
}

// Ramp is an exponential pace: see Spec.Ramp.
type Ramp struct {
	BasePerMinute  int     `json:"base_per_minute"`
	Factor         float64 `json:"factor"`
	EverySucceeded int     `json:"every_succeeded"`
}

// Bounds of a Ramp.
const (
	MaxRampFactor = 5
	// MaxPace bounds any pace, ramped or not, in nodes a minute.
	MaxPace = 1_000_000
)

// Validate checks r's ranges.
func (r Ramp) Validate() error {
	if r.BasePerMinute < 1 || r.BasePerMinute > MaxPace {
		return fmt.Errorf("rollout: ramp base %d nodes a minute out of range (1-%d)", r.BasePerMinute, MaxPace)
	}
	if !(r.Factor > 1 && r.Factor <= MaxRampFactor) {
		return fmt.Errorf("rollout: ramp factor %g out of range (over 1, at most %d)", r.Factor, MaxRampFactor)
	}
	if r.EverySucceeded < 1 {
		return fmt.Errorf("rollout: ramp every %d succeeded nodes: want at least 1", r.EverySucceeded)
	}
	return nil
}

// ParseRamp reads --ramp BASE:FACTOR:EVERY (e.g. 10:2:50: 10 nodes a
// minute, doubled for every 50 nodes Active); "" is no ramp.
func ParseRamp(v string) (*Ramp, error) {
	if strings.TrimSpace(v) == "" {
		return nil, nil
	}
	parts := strings.Split(v, ":")
	if len(parts) != 3 {
		return nil, fmt.Errorf("--ramp %q: want BASE:FACTOR:EVERY, e.g. 10:2:50 (10 nodes a minute, doubled for every 50 succeeded)", v)
	}
	var r Ramp
	var err error
	if r.BasePerMinute, err = strconv.Atoi(strings.TrimSpace(parts[0])); err != nil {
		return nil, fmt.Errorf("--ramp %q: base %q is not a whole number of nodes a minute", v, strings.TrimSpace(parts[0]))
	}
	if r.Factor, err = strconv.ParseFloat(strings.TrimSpace(parts[1]), 64); err != nil {
		return nil, fmt.Errorf("--ramp %q: factor %q is not a number", v, strings.TrimSpace(parts[1]))
	}
	if r.EverySucceeded, err = strconv.Atoi(strings.TrimSpace(parts[2])); err != nil {
		return nil, fmt.Errorf("--ramp %q: every %q is not a whole number of succeeded nodes", v, strings.TrimSpace(parts[2]))
	}
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("--ramp %q: %w", v, err)
	}
	return &r, nil
}

// Pace is the nodes a minute r may write now (0: no limit): MaxPerMinute,
// or the ramp's rate for the nodes Active so far, capped by MaxPerMinute.
func (r *Record) Pace() float64 {
	n := float64(r.Spec.MaxPerMinute)
	if rp := r.Spec.Ramp; rp != nil {
		active := 0
		for _, c := range r.Counts {
			active += c.Active
		}
		v := float64(rp.BasePerMinute) * math.Pow(rp.Factor, float64(active/rp.EverySucceeded))
		if n <= 0 || v < n {
			n = v
		}
	}
	return min(n, MaxPace)
}

// credit is how many nodes r may write at now under its Pace (-1: no
// limit): the bucket fills at Pace/60 a second up to one second's worth
// plus one node.
func (r *Record) credit(now time.Time) float64 {
	n := r.Pace()
	if n <= 0 {
		return -1
	}
	rate, burst := n/60, n/60+1
	c := burst // a rollout's first write
	if !r.CreditAt.IsZero() {
		c = min(burst, r.WriteCredit+rate*max(0, now.Sub(r.CreditAt).Seconds()))
	}
	return c
}

// CriteriaText says the spec's abort and advance criteria for a person:
// "abort over 10% bad of ≥ 5 finished; timed out over 5% of ≥ 10; p99 over
// 1.5× baseline; next wave at 90% active".
func (s Spec) CriteriaText() string {
	parts := []string{fmt.Sprintf("abort over %g%% bad of ≥ %d finished", s.Abort.MaxFailedPercent, s.Abort.MinFinished)}
	for _, c := range s.Abort.ByType {
		parts = append(parts, fmt.Sprintf("%s over %g%% of ≥ %d", c.Type.words(), c.MaxPercent, c.MinFinished))
	}
	if s.Abort.MaxP99Ratio > 0 {
		parts = append(parts, fmt.Sprintf("p99 over %g× baseline", s.Abort.MaxP99Ratio))
	}
	if rp := s.Ramp; rp != nil {
		ramp := fmt.Sprintf("%d nodes written a minute, ×%g for every %d active", rp.BasePerMinute, rp.Factor, rp.EverySucceeded)
		if s.MaxPerMinute > 0 {
			ramp += fmt.Sprintf(", at most %d", s.MaxPerMinute)
		}
		parts = append(parts, ramp)
	} else if s.MaxPerMinute > 0 {
		parts = append(parts, fmt.Sprintf("at most %d nodes written a minute", s.MaxPerMinute))
	}
	if s.Retries > 0 {
		parts = append(parts, fmt.Sprintf("a failed or timed-out node retried up to %d times", s.Retries))
	}
	if s.Continuous {
		parts = append(parts, "continuous: nodes that join the target get it")
	}
	if s.SuccessPercent > 0 {
		parts = append(parts, fmt.Sprintf("next wave at %g%% active", s.SuccessPercent))
	} else {
		parts = append(parts, "next wave when every node finished")
	}
	return strings.Join(parts, "; ")
}

// Transition is one line of a rollout's history.
type Transition struct {
	At    time.Time `json:"at"`
	Phase Phase     `json:"phase"`
	Wave  int       `json:"wave"` // 1-based, 0 before the first
	Note  string    `json:"note,omitempty"`
}

// Record is the persisted state of a rollout.
type Record struct {
	Spec  Spec  `json:"spec"`
	Phase Phase `json:"phase"`
	// Wave is the index (0-based) of the latest started wave.
	Wave int `json:"wave"`
	// WavesWritten counts waves whose desired state was fully published;
	// Wave ≥ WavesWritten after a restart means wave Wave's writes must be
	// completed (nodes already carrying {id, wave} are skipped).
	WavesWritten int         `json:"waves_written"`
	WaveStarted  []time.Time `json:"wave_started"`
	Members      [][]string  `json:"members"`
	// Previous is each selected node's version before the rollout ("" if
	// the model was not there): the rollback target.
	Previous      map[string]string `json:"previous"`
	BaselineP99Ms float64           `json:"baseline_p99_ms,omitempty"`
	Counts        []Counts          `json:"counts"`
	// BadNodes are the nodes of started waves that failed, rolled back or
	// timed out, with that state (tallied each tick).
	BadNodes map[string]NodeState `json:"bad_nodes,omitempty"`
	// BadReasons are the same nodes' reasons as they report them
	// (ChecksumMismatch, HealthRegression, ...; NodeTimeout when timed out).
	BadReasons      map[string]string `json:"bad_reasons,omitempty"`
	Reason          string            `json:"reason,omitempty"`
	Command         string            `json:"command,omitempty"`
	RollbackWritten bool              `json:"rollback_written,omitempty"`
	// PausedAt is when the rollout was paused (the wave timeout clock
	// stops while paused).
	PausedAt time.Time `json:"paused_at,omitzero"`
	// WriteCredit and CreditAt are the pacing bucket of Spec.MaxPerMinute:
	// nodes that may be written now, as of CreditAt.
	WriteCredit float64   `json:"write_credit,omitempty"`
	CreditAt    time.Time `json:"credit_at,omitzero"`
	// Runs are the nodes that joined after start (Spec.Continuous) or were
	// retried (Spec.Retries), with when and how often.
	Runs map[string]NodeRun `json:"runs,omitempty"`
	// Joined counts the nodes Spec.Continuous added after start.
	Joined int `json:"joined,omitempty"`
	// Outside counts, as of the last tick, the nodes that match the target
	// but are not in the rollout: they joined after start (without
	// Spec.Continuous), or, continuous, wait for another rollout of the
	// model on them to end.
	Outside int          `json:"outside,omitempty"`
	History []Transition `json:"history"`
	Created time.Time    `json:"created"`
	Updated time.Time    `json:"updated"`
}

func (r *Record) note(now time.Time, p Phase, note string) {
	r.Phase = p
	r.History = append(r.History, Transition{At: now, Phase: p, Wave: r.Wave + 1, Note: note})
	if len(r.History) > 200 {
		r.History = r.History[len(r.History)-200:]
	}
}

// NodeRun is what a record keeps about a node beyond its wave.
type NodeRun struct {
	// Joined is when Spec.Continuous added the node (zero: selected at
	// start).
	Joined time.Time `json:"joined,omitzero"`
	// Retries counts the retries written (the node's attempts less one).
	Retries int `json:"retries,omitempty"`
	// RetryGeneration is the node desired-state generation of the latest
	// retry: a report from a node that has not applied it yet predates the
	// retry.
	RetryGeneration uint64    `json:"retry_generation,omitempty"`
	RetriedAt       time.Time `json:"retried_at,omitzero"`
}

// since is when the node's current attempt started: its wave's start, its
// join or its latest retry, whichever is last (its node timeout runs from
// there).
func (n NodeRun) since(waveStart time.Time) time.Time {
	t := waveStart
	for _, u := range []time.Time{n.Joined, n.RetriedAt} {
		if u.After(t) {
			t = u
		}
	}
	return t
}

// Attempts is how many times node was given the version (1 + its retries;
// 0 for a node whose wave has not started).
func (r *Record) Attempts(node string) int {
	for w, m := range r.Members {
		if w <= r.Wave && slices.Contains(m, node) {
			return 1 + r.Runs[node].Retries
		}
	}
	return 0
}

// Nodes returns the number of selected nodes.
func (r *Record) Nodes() int {
	n := 0
	for _, m := range r.Members {
		n += len(m)
	}
	return n
}
