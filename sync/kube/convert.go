package kube

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/kube/api/v1alpha1"
	"github.com/edgeai/edge-node/sync/rollout"
	"github.com/edgeai/edge-node/sync/wire"
)

// rolloutID names mv's rollout on the wire: namespace.name, cut to fit the
// 64 characters of a wire name, and the first 8 hex digits of the object's
// UID, so a ModelVersion deleted and applied again is a new rollout.
func rolloutID(mv *v1alpha1.ModelVersion) string {
	sum := sha256.Sum256([]byte(mv.UID))
	base := mv.Namespace + "." + mv.Name
	if len(base) > 55 {
		base = base[:55]
	}
	return strings.TrimRight(base, ".-_") + "-" + hex.EncodeToString(sum[:4])
}

// rolloutSpec is mv as the rollout engine's spec. The API server's schema
// has checked the fields it can; Validate checks the rest the way edgectl
// rollout start does.
func rolloutSpec(mv *v1alpha1.ModelVersion, id string) (rollout.Spec, error) {
	s := mv.Spec
	out := rollout.Spec{ID: id, Model: s.Model, Version: s.Version, Waves: []int{100},
		Abort: rollout.Abort{MaxFailedPercent: 10, MinFinished: 1}, SuccessPercent: float64(s.SuccessPercent), MaxPerMinute: int(s.MaxPerMinute),
		OnAbort: rollout.OnAbortRollback, Continuous: s.Continuous, Retries: int(s.Retries)}
	if sel := s.NodeSelector; sel != nil {
		out.Selector = maps.Clone(sel.MatchLabels)
		for _, e := range sel.MatchExpressions {
			out.Match = append(out.Match, rollout.Requirement{Key: e.Key, Operator: string(e.Operator), Values: e.Values})
		}
	}
	if len(s.Waves) > 0 {
		out.Waves = out.Waves[:0]
		for _, w := range s.Waves {
			out.Waves = append(out.Waves, int(w))
		}
	}
	st, err := strategy(s.TrafficWeight, s.Gates)
	if err != nil {
		return out, err
	}
	out.Strategy = &st
	if a := s.Abort; a != nil {
		if a.MaxFailedPercent != nil {
			out.Abort.MaxFailedPercent = float64(*a.MaxFailedPercent)
		}
		if a.MinFinished != nil {
			out.Abort.MinFinished = int(*a.MinFinished)
		}
		for _, c := range a.ByType {
			t, ok := failureTypes[c.Type]
			if !ok {
				return out, fmt.Errorf("abort.byType: type %q (want Failed, RolledBack or TimedOut)", c.Type)
			}
			out.Abort.ByType = append(out.Abort.ByType, rollout.TypeCriterion{Type: t, MaxPercent: float64(c.MaxPercent), MinFinished: int(c.MinFinished)})
		}
	}
	if r := s.Ramp; r != nil {
		f, err := strconv.ParseFloat(r.Factor, 64)
		if err != nil {
			return out, fmt.Errorf("ramp.factor %q: not a decimal number", r.Factor)
		}
		out.Ramp = &rollout.Ramp{BasePerMinute: int(r.BasePerMinute), Factor: f, EverySucceeded: int(r.EverySucceeded)}
	}
	if s.WaveTimeout != nil {
		out.WaveTimeout = s.WaveTimeout.Duration
	}
	if s.NodeTimeout != nil {
		out.NodeTimeout = s.NodeTimeout.Duration
	}
	switch s.OnAbort {
	case "", "Rollback":
	case "Hold":
		out.OnAbort = rollout.OnAbortHold
	default:
		return out, fmt.Errorf("onAbort %q (want Rollback or Hold)", s.OnAbort)
	}
	return out, out.Validate()
}

var failureTypes = map[string]rollout.FailureType{
	"Failed": rollout.FailFailed, "RolledBack": rollout.FailRolledBack, "TimedOut": rollout.FailTimedOut,
}

// strategy is the on-device strategy for a traffic weight: 100 immediate,
// 1-99 a canary answering that share, 0 a shadow.
func strategy(weight int32, g *v1alpha1.Gates) (wire.Strategy, error) {
	var st wire.Strategy
	switch {
	case weight < 0 || weight > 100:
		return st, fmt.Errorf("trafficWeight %d out of range (0-100)", weight)
	case weight == 100:
		st.Kind = wire.StrategyImmediate
		return st, nil
	case weight == 0:
		st.Kind = wire.StrategyShadow
	default:
		st.Kind, st.CanaryPercent = wire.StrategyCanary, float64(weight)
	}
	if g == nil {
		return st, nil
	}
	if st.Kind == wire.StrategyShadow {
		st.ShadowPercent = float64(g.ShadowPercent)
	}
	st.MinRequests = g.MinRequests
	if g.MinDuration != nil {
		st.MinDuration = models.Duration(g.MinDuration.Duration)
	}
	if g.MaxDuration != nil {
		st.MaxDuration = models.Duration(g.MaxDuration.Duration)
	}
	for _, f := range []struct {
		name, text string
		dst        **float64
	}{{"maxErrorRate", g.MaxErrorRate, &st.Gates.MaxErrorRate}, {"maxP99Ratio", g.MaxP99Ratio, &st.Gates.MaxP99Ratio}} {
		if f.text == "" {
			continue
		}
		v, err := strconv.ParseFloat(f.text, 64)
		if err != nil {
			return st, fmt.Errorf("gates.%s: %q is not a number", f.name, f.text)
		}
		*f.dst = &v
	}
	return st, nil
}

// phases maps the engine's phases to the resource's.
var phases = map[rollout.Phase]v1alpha1.Phase{
	rollout.PhaseRunning: v1alpha1.PhaseProgressing, rollout.PhasePaused: v1alpha1.PhasePaused,
	rollout.PhaseCompleted: v1alpha1.PhaseActive, rollout.PhaseWatching: v1alpha1.PhaseActive, rollout.PhaseRollingBack: v1alpha1.PhaseRollingBack,
	rollout.PhaseRolledBack: v1alpha1.PhaseRolledBack, rollout.PhaseHeld: v1alpha1.PhaseHeld,
}

// summarize sets mv's status fields a person reads (phase, reason, counts,
// conditions) from the rollout record r.
func summarize(mv *v1alpha1.ModelVersion, r *rollout.Record, now time.Time) {
	st := &mv.Status
	st.ObservedGeneration = mv.Generation
	st.Nodes, st.Active = int32(r.Nodes()), 0
	st.Waves = st.Waves[:0]
	bad := 0
	for w, c := range r.Counts {
		ws := v1alpha1.WaveStatus{Nodes: int32(c.Total), Pending: int32(c.Pending), Downloading: int32(c.Downloading),
			Canary: int32(c.Canary), Active: int32(c.Active), Failed: int32(c.Failed), RolledBack: int32(c.RolledBack),
			TimedOut: int32(c.TimedOut)}
		if w < len(r.Spec.Waves) {
			ws.Percent = int32(r.Spec.Waves[w])
		}
		if w < len(r.WaveStarted) && w <= r.Wave {
			t := metav1.NewTime(r.WaveStarted[w])
			ws.Started = &t
		}
		st.Waves = append(st.Waves, ws)
		st.Active += int32(c.Active)
		bad += c.Bad()
	}
	st.Joined, st.Outside, st.Retried = int32(r.Joined), int32(r.Outside), 0
	for _, run := range r.Runs {
		if run.Retries > 0 {
			st.Retried++
		}
	}
	st.Progress = fmt.Sprintf("%d/%d", st.Active, st.Nodes)
	st.Wave = fmt.Sprintf("%d/%d", min(r.Wave+1, len(r.Spec.Waves)), len(r.Spec.Waves))
	st.NodeReasons = nil
	for _, why := range r.BadReasons {
		if st.NodeReasons == nil {
			st.NodeReasons = map[string]int32{}
		}
		st.NodeReasons[why]++
	}
	nodeReason, nodeText := topReason(st.NodeReasons, bad, int(st.Nodes))
	st.Phase = phases[r.Phase]
	st.OnDelete = onDelete(mv.Spec.DeletionPolicy, r.Phase)
	st.Reason, st.Message = "", ""
	if len(r.History) > 0 {
		st.Message = r.History[len(r.History)-1].Note
	}
	switch st.Phase {
	case v1alpha1.PhaseProgressing, v1alpha1.PhaseActive:
		if bad > 0 {
			st.Phase, st.Reason, st.Message = v1alpha1.PhaseDegraded, nodeReason, nodeText
		} else if r.Phase == rollout.PhaseWatching {
			// Every wave finished; nodes that join the selector get it.
			st.Reason = "Watching"
		}
	case v1alpha1.PhaseRollingBack, v1alpha1.PhaseRolledBack, v1alpha1.PhaseHeld:
		st.Reason = "Aborted"
		if strings.HasPrefix(r.Reason, "rollback by operator") {
			st.Reason = "RollbackRequested"
		} else if strings.HasPrefix(r.Reason, "aborted by operator") {
			st.Reason = "AbortRequested"
		}
		if r.Reason != "" {
			st.Message = r.Reason
		}
	}
	gen := mv.Generation
	set := func(typ string, ok bool, reason, msg string) {
		s := metav1.ConditionFalse
		if ok {
			s = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg,
			ObservedGeneration: gen, LastTransitionTime: metav1.NewTime(now)})
	}
	ready := (r.Phase == rollout.PhaseCompleted || r.Phase == rollout.PhaseWatching) && int(st.Active) == r.Nodes()
	readyReason := "VersionActive"
	if !ready {
		readyReason = cmp.Or(st.Reason, string(st.Phase))
	}
	set(v1alpha1.ConditionReady, ready, readyReason, fmt.Sprintf("%d of %d nodes run %s %s", st.Active, st.Nodes, r.Spec.Model, r.Spec.Version))
	moving := r.Phase == rollout.PhaseRunning || r.Phase == rollout.PhaseRollingBack
	if r.Phase == rollout.PhaseWatching {
		set(v1alpha1.ConditionProgressing, true, "Watching", fmt.Sprintf("every wave finished; %d nodes joined since start", r.Joined))
	} else {
		set(v1alpha1.ConditionProgressing, moving, string(st.Phase), st.Wave+" waves started")
	}
	if bad > 0 {
		set(v1alpha1.ConditionDegraded, true, nodeReason, nodeText)
	} else {
		set(v1alpha1.ConditionDegraded, false, "NoFailedNodes", "no node failed the version")
	}
}

// topReason is the most common of the failed nodes' reasons (ties broken
// by name), and a sentence listing them all.
func topReason(reasons map[string]int32, bad, nodes int) (string, string) {
	if len(reasons) == 0 {
		return "NodesFailed", fmt.Sprintf("%d of %d nodes failed", bad, nodes)
	}
	keys := slices.Sorted(maps.Keys(reasons))
	slices.SortStableFunc(keys, func(a, b string) int { return cmp.Compare(reasons[b], reasons[a]) })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s (%d)", k, reasons[k])
	}
	return camel(keys[0]), fmt.Sprintf("%d of %d nodes failed: %s", bad, nodes, strings.Join(parts, ", "))
}

// camel makes a node's reason a condition reason (CamelCase letters and
// digits): "rolled_back" → "RolledBack"; "ChecksumMismatch" stays.
func camel(s string) string {
	var b strings.Builder
	up := true
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' && b.Len() > 0:
			if up && c >= 'a' && c <= 'z' {
				c -= 'a' - 'A'
			}
			b.WriteRune(c)
			up = false
		default:
			up = true
		}
	}
	return cmp.Or(b.String(), "NodesFailed")
}
