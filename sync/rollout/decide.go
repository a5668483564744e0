// Package rollout is the cloud-side fleet rollout controller
// (docs/protocol.md, "Fleet rollouts"; docs/architecture-fleet.md). A
// rollout moves one model of a selected set of nodes to a new version in
// cumulative waves (e.g. 1%, 10%, 50%, 100%). The controller is the single
// writer of those nodes' desired state while the rollout runs: a wave starts
// by writing each of its nodes' `{root}/nodes/{id}/desired` (retained,
// generation + 1) with the version, the on-device strategy and
// `rollout: {id, wave}`. It follows the nodes' retained status, aborts on
// the criteria in the spec (failure rate after a minimum count, fleet p99
// ratio, wave timeout) and then rolls the started waves back (previous
// version written back) or holds them.
//
// The state lives in a bbolt file (store.go): bucket "rollouts" (id → Record
// JSON) and bucket "leases" (id → Lease JSON). A controller holds the lease
// of the rollout it drives and renews it; a second controller gets
// ErrLeaseHeld. The decision functions in this file are pure.
package rollout

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/edgeai/edge-node/sync/wire"
)

// NodeState is what the controller makes of a node's report for the
// rollout's model.
type NodeState string

// Node states, in the order of the status counts.
const (
	StatePending     NodeState = "pending"
	StateDownloading NodeState = "downloading"
	StateCanary      NodeState = "canary"
	StateActive      NodeState = "active"
	StateFailed      NodeState = "failed"
	StateRolledBack  NodeState = "rolled_back"
	// StateTimedOut is a node unfinished NodeTimeout after its wave started
	// (offline, stuck): a failure for the criteria (AWS IoT Jobs' TIMED_OUT).
	// It is reclassified when the node reports a final state later.
	StateTimedOut NodeState = "timed_out"
)

// Counts are the nodes of one wave per state, and the p99 (ms) over the
// per-node p99 latencies the new version's nodes report.
type Counts struct {
	Total       int     `json:"total"`
	Pending     int     `json:"pending"`
	Downloading int     `json:"downloading"`
	Canary      int     `json:"canary"`
	Active      int     `json:"active"`
	Failed      int     `json:"failed"`
	RolledBack  int     `json:"rolled_back"`
	TimedOut    int     `json:"timed_out,omitempty"`
	P99Ms       float64 `json:"p99_ms,omitempty"`
}

// Plus adds o's node counts to c (P99Ms, a per-wave figure, is left as it
// is): the one way waves are summed.
func (c *Counts) Plus(o Counts) {
	c.Total += o.Total
	c.Pending += o.Pending
	c.Downloading += o.Downloading
	c.Canary += o.Canary
	c.Active += o.Active
	c.Failed += o.Failed
	c.RolledBack += o.RolledBack
	c.TimedOut += o.TimedOut
}

// Finished is the number of nodes that reached a final state (timed out
// included).
func (c Counts) Finished() int { return c.Active + c.Failed + c.RolledBack + c.TimedOut }

// Bad is the number of failed, rolled-back and timed-out nodes.
func (c Counts) Bad() int { return c.Failed + c.RolledBack + c.TimedOut }

func (c *Counts) add(s NodeState) {
	c.Total++
	switch s {
	case StateDownloading:
		c.Downloading++
	case StateCanary:
		c.Canary++
	case StateActive:
		c.Active++
	case StateFailed:
		c.Failed++
	case StateRolledBack:
		c.RolledBack++
	case StateTimedOut:
		c.TimedOut++
	default:
		c.Pending++
	}
}

// Classify maps a node's reported status of the rollout's model to a
// NodeState. A report of another version (or none) is pending. A failure
// after an on-device gate (reason HealthRegression, or a "RolledBack"
// state) is a rollback; any other failure (download, checksum, load,
// warm-up) is a failure.
func Classify(ms *wire.ModelStatus, version string) NodeState {
	if ms == nil || ms.Version != version {
		return StatePending
	}
	switch ms.State {
	case "Active":
		return StateActive
	case "Canary", "Shadow":
		return StateCanary
	case "RolledBack", "Retired":
		return StateRolledBack
	case "Failed":
		if ms.Reason == "HealthRegression" {
			return StateRolledBack
		}
		return StateFailed
	case "", "Pending":
		return StatePending
	}
	return StateDownloading // Announced … Warming
}

// Selects reports whether a node with status s is selected by group (the
// node's status lists it among its desired-state groups) and selector (every
// label must match). An empty group and selector select every node.
func Selects(s *wire.Status, group string, selector map[string]string) bool {
	if s == nil {
		return false
	}
	if group != "" {
		if _, ok := s.Desired.Groups[group]; !ok {
			return false
		}
	}
	for k, v := range selector {
		got, ok := s.Labels[k]
		if !ok || got != v {
			return false
		}
	}
	return true
}

// ParseSelector parses "k=v,k2=v2".
func ParseSelector(s string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return nil, fmt.Errorf("selector %q: want key=value", kv)
		}
		if err := wire.ValidLabel(k, v); err != nil {
			return nil, fmt.Errorf("selector: %w", err)
		}
		out[k] = v
	}
	return out, nil
}

// ParseWaves parses cumulative percentages "1%,10%,50%,100%" (the % is
// optional): strictly increasing, 1–100, ending at 100, at most 100 waves.
func ParseWaves(s string) ([]int, error) {
	var out []int
	for _, p := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(p), "%"))
		if err != nil {
			return nil, fmt.Errorf("waves %q: %q is not a percentage", s, p)
		}
		out = append(out, n)
	}
	return out, checkWaves(out)
}

func checkWaves(w []int) error {
	if len(w) == 0 || len(w) > 100 {
		return fmt.Errorf("waves: want 1-100 waves, got %d", len(w))
	}
	prev := 0
	for _, p := range w {
		if p <= prev || p > 100 {
			return fmt.Errorf("waves %s: cumulative percentages must increase, within 1-100", wavesText(w))
		}
		prev = p
	}
	if prev != 100 {
		return fmt.Errorf("waves %s: the last wave must be 100%%", wavesText(w))
	}
	return nil
}

// wavesText writes percentages as ParseWaves reads them: "1%,10%,100%".
func wavesText(w []int) string {
	parts := make([]string, len(w))
	for i, p := range w {
		parts[i] = strconv.Itoa(p) + "%"
	}
	return strings.Join(parts, ",")
}

// AssignWaves splits nodes into waves: nodes are ordered by
// sha256(rollout id, node id) (ties by id), so the order is the same for
// every run of the controller and unrelated to node naming; wave k holds
// the nodes up to ceil(percent_k × N / 100) of that order, minus earlier
// waves. Input order does not matter.
func AssignWaves(id string, nodes []string, percents []int) [][]string {
	type kv struct {
		h    uint64
		node string
	}
	ord := make([]kv, 0, len(nodes))
	for _, n := range nodes {
		sum := sha256.Sum256([]byte(id + "\x00" + n))
		ord = append(ord, kv{binary.BigEndian.Uint64(sum[:8]), n})
	}
	sort.Slice(ord, func(i, j int) bool {
		if ord[i].h != ord[j].h {
			return ord[i].h < ord[j].h
		}
		return ord[i].node < ord[j].node
	})
	out := make([][]string, len(percents))
	start := 0
	for k, p := range percents {
		end := (p*len(ord) + 99) / 100
		end = min(max(end, start), len(ord))
		for _, e := range ord[start:end] {
			out[k] = append(out[k], e.node)
		}
		sort.Strings(out[k])
		start = end
	}
	return out
}

// Percentile returns the p-th percentile (0–100, nearest rank) of xs, 0 for
// none.
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// ActionKind is what Decide asks the controller to do.
type ActionKind string

// Actions.
const (
	ActNone     ActionKind = ""
	ActAdvance  ActionKind = "advance"  // start the next wave
	ActComplete ActionKind = "complete" // the last wave finished
	ActAbort    ActionKind = "abort"    // criteria breached: roll back or hold
)

// Action is Decide's answer with the reason for it.
type Action struct {
	Kind   ActionKind
	Reason string
}

// Decide looks at a running rollout's counts (r.Counts, tallied for the
// waves up to r.Wave) and says what to do next. Abort criteria are checked
// first, for each started wave and over every started wave together:
//   - failure rate: failed + rolled back > MaxFailedPercent of the finished
//     nodes, once at least min(MinFinished, nodes counted) finished (AWS IoT
//     Jobs' abortConfig / hawkBit's error threshold). The minimum is capped
//     by the size of what is counted, so a wave smaller than MinFinished is
//     judged once all its nodes finished, and a rollout never completes
//     with its failure rate over the bound;
//   - fleet p99: the p99 over the new version's nodes' p99 latencies above
//     MaxP99Ratio × the baseline recorded at start, once min(MinFinished,
//     started nodes) report it;
//   - per failure type (Abort.ByType): the same rule for failed, rolled
//     back or timed-out nodes alone, with a bound and minimum of its own;
//   - success threshold (Spec.SuccessPercent): a wave that finished with
//     fewer Active nodes than that share;
//   - wave timeout: the current wave has unfinished nodes WaveTimeout after
//     it started, or after the latest join or retry of one of its nodes
//     (with a NodeTimeout below it, tally has counted them timed out by
//     then).
//
// Timed-out nodes count as finished and bad.
//
// Otherwise, when every node of the current wave finished, or, with a
// success threshold, as soon as that share of it is Active, the next wave
// starts (the rollout completes once every node of the last finished). A
// watching rollout (Spec.Continuous, every wave finished) is judged the
// same way: its joined nodes can abort it.
func Decide(r *Record, now time.Time) Action {
	if r.Phase != PhaseRunning && r.Phase != PhaseWatching || r.Wave < 0 || r.Wave >= len(r.Members) {
		return Action{}
	}
	a := r.Spec.Abort
	var all Counts
	var p99s []float64
	for w := 0; w <= r.Wave && w < len(r.Counts); w++ {
		c := r.Counts[w]
		if why, bad := failureBreach(c, a); bad {
			return Action{ActAbort, fmt.Sprintf("wave %d: %s", w+1, why)}
		}
		all.Plus(c)
		if c.P99Ms > 0 {
			p99s = append(p99s, c.P99Ms)
		}
	}
	if why, bad := failureBreach(all, a); bad {
		return Action{ActAbort, why}
	}
	minN := min(max(a.MinFinished, 1), max(all.Total, 1))
	if a.MaxP99Ratio > 0 && r.BaselineP99Ms > 0 && all.Active >= minN {
		if p := slicesMax(p99s); p > a.MaxP99Ratio*r.BaselineP99Ms {
			return Action{ActAbort, fmt.Sprintf("fleet p99 %.1f ms is %.2f× the baseline %.1f ms (bound %.2f×)",
				p, p/r.BaselineP99Ms, r.BaselineP99Ms, a.MaxP99Ratio)}
		}
	}
	if r.Wave >= len(r.Counts) {
		return Action{}
	}
	cur := r.Counts[r.Wave]
	last := r.Wave == len(r.Members)-1
	if sp := r.Spec.SuccessPercent; sp > 0 && r.WavesWritten > r.Wave && cur.Total > 0 {
		share := 100 * float64(cur.Active) / float64(cur.Total)
		switch {
		case share < sp && cur.Finished() == cur.Total:
			return Action{ActAbort, fmt.Sprintf("wave %d finished with %d of %d nodes active (%.1f%% < %.1f%%, the success threshold)",
				r.Wave+1, cur.Active, cur.Total, share, sp)}
		case share >= sp && !last && cur.Finished() < cur.Total:
			return Action{ActAdvance, fmt.Sprintf("wave %d reached its success threshold: %d of %d nodes active (%.1f%% ≥ %.1f%%), %d unfinished",
				r.Wave+1, cur.Active, cur.Total, share, sp, cur.Total-cur.Finished())}
		}
	}
	if cur.Finished() == cur.Total && r.WavesWritten > r.Wave {
		if last {
			// A success threshold lets waves start before their
			// stragglers finish: completed waits for those too.
			if left := all.Total - all.Finished(); left > 0 || r.Phase == PhaseWatching {
				return Action{}
			}
			return Action{ActComplete, fmt.Sprintf("wave %d finished", r.Wave+1)}
		}
		return Action{ActAdvance, fmt.Sprintf("wave %d finished: %d active, %d failed, %d rolled back, %d timed out",
			r.Wave+1, cur.Active, cur.Failed, cur.RolledBack, cur.TimedOut)}
	}
	if t := time.Duration(r.Spec.WaveTimeout); t > 0 && r.Wave < len(r.WaveStarted) && now.Sub(r.waveClock(r.Wave)) > t {
		return Action{ActAbort, fmt.Sprintf("wave %d timed out after %s with %d of %d nodes unfinished",
			r.Wave+1, t, cur.Total-cur.Finished(), cur.Total)}
	}
	return Action{}
}

// waveClock is when wave w's timeout clock started: the wave's start, or
// the latest join or retry of one of its nodes.
func (r *Record) waveClock(w int) time.Time {
	t := r.WaveStarted[w]
	if len(r.Runs) == 0 {
		return t
	}
	for _, n := range r.Members[w] {
		if run, ok := r.Runs[n]; ok {
			t = run.since(t)
		}
	}
	return t
}

// failureBreach reports whether the failure rate of c is over the bound,
// once min(MinFinished, c.Total) of its nodes finished.
func failureBreach(c Counts, a Abort) (string, bool) {
	if why, bad := overBound(c, c.Bad(), a.MaxFailedPercent, a.MinFinished); bad {
		return fmt.Sprintf("%d of %d finished nodes failed, rolled back or timed out (%s)", c.Bad(), c.Finished(), why), true
	}
	for _, t := range a.ByType {
		n := t.Type.count(c)
		if why, bad := overBound(c, n, t.MaxPercent, t.MinFinished); bad {
			return fmt.Sprintf("%d of %d finished nodes %s (%s, the %s criterion)", n, c.Finished(), t.Type.words(), why, t.Type), true
		}
	}
	return "", false
}

// overBound reports whether n bad nodes are over maxPercent of c's
// finished ones, once at least min(minFinished, c.Total) finished.
func overBound(c Counts, n int, maxPercent float64, minFinished int) (string, bool) {
	minN := min(max(minFinished, 1), max(c.Total, 1))
	fin := c.Finished()
	if fin < minN || n == 0 {
		return "", false
	}
	rate := 100 * float64(n) / float64(fin)
	if rate <= maxPercent {
		return "", false
	}
	return fmt.Sprintf("%.1f%% > %.1f%%", rate, maxPercent), true
}

// ParseAbortOn reads --abort-on values, TYPE:PERCENT[:MIN] each (type
// failed, rolled_back or timed_out; MIN the minimum finished nodes, default
// 0: judged from the first finished node).
func ParseAbortOn(vals []string) ([]TypeCriterion, error) {
	var out []TypeCriterion
	for _, v := range vals {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || len(parts) > 3 {
			return nil, fmt.Errorf("--abort-on %q: want TYPE:PERCENT[:MIN], e.g. timed_out:5:10", v)
		}
		c := TypeCriterion{Type: FailureType(strings.TrimSpace(parts[0]))}
		var err error
		if c.MaxPercent, err = strconv.ParseFloat(strings.TrimSpace(parts[1]), 64); err != nil {
			return nil, fmt.Errorf("--abort-on %q: percent %q is not a number", v, strings.TrimSpace(parts[1]))
		}
		if len(parts) == 3 {
			if c.MinFinished, err = strconv.Atoi(strings.TrimSpace(parts[2])); err != nil {
				return nil, fmt.Errorf("--abort-on %q: minimum finished nodes %q is not a whole number", v, strings.TrimSpace(parts[2]))
			}
		}
		out = append(out, c)
	}
	// Types, ranges and repeats: the checks Spec.Validate makes.
	if err := validateByType(out); err != nil {
		return nil, err
	}
	return out, nil
}

// slicesMax is the largest per-wave p99: the fleet p99 is bounded by the
// worst wave's.
func slicesMax(xs []float64) float64 {
	m := 0.0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}
