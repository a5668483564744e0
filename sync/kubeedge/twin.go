package kubeedge

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/models"
)

// Applier is what the bridge needs from the node (consumer side): the
// node-side reconciler that also serves MQTT desired states.
type Applier interface {
	// ApplyDesired replaces the desired state of source with models (the
	// complete set: a model absent from it is no longer wanted by this
	// source). generation increases strictly within one source. It applies
	// every model it does not refuse; refused models are named in a
	// returned *RejectedError and keep what they ran before. Any other
	// error means nothing was applied (the bridge tries again).
	ApplyDesired(ctx context.Context, source string, generation uint64, models map[string]DesiredModel) error
	// Status returns the state of the node's models.
	Status(ctx context.Context) ([]ModelStatus, error)
}

// RejectedError lists models an Applier refused.
type RejectedError struct {
	Rejections []Rejection
}

func (e *RejectedError) Error() string {
	errs := make([]error, len(e.Rejections))
	for i, r := range e.Rejections {
		errs[i] = r
	}
	return errors.Join(errs...).Error()
}

// ModelStatus is one model's state as the Applier reports it.
type ModelStatus struct {
	Model string
	// Active and Canary are the serving versions ("" for none).
	Active, Canary string
	// ActiveSHA256 is the sha256 of the Active version's model.onnx.
	ActiveSHA256 string
	// Desired is the version being reconciled towards; State and Reason
	// are its state in the store (Reason set when Failed).
	Desired string
	State   models.State
	Reason  models.Reason
	// Health of the Active version; nil when not measured yet.
	Health *Health
}

// Health is what the node measured of a serving version.
type Health struct {
	P99       time.Duration
	ErrorRate float64 // 0–1
}

// TwinValue is one property's values for a report: what was asked for
// (ObservedDesired, "" when nothing) and what is (Reported).
type TwinValue struct {
	Name            string
	ObservedDesired string
	Reported        string
}

// Twin is the node's side of one KubeEdge device twin, shared by the DMI
// and EventBus transports: SetDesired decodes desired values and hands the
// result to the Applier; Report builds the reported values. Safe for
// concurrent use; updates are applied one at a time, in arrival order.
type Twin struct {
	applier Applier
	source  string
	// log is rate-limited: refusals can come as fast as updates.
	log           zerolog.Logger
	rejectedTotal *prometheus.CounterVec
	appliesTotal  *prometheus.CounterVec

	// mu guards everything below; held across ApplyDesired so that
	// updates reach the Applier in order with increasing generations.
	mu sync.Mutex
	// gen is the last generation handed to the Applier.
	gen uint64
	// desired holds the raw desired values of the last update, by
	// property name (for observedDesired).
	desired map[string]string
	// accepted is the desired set the Applier last took.
	accepted map[string]DesiredModel
	// rejected holds the current refusal of each model, and reasons every
	// refused property of it (each reported: ReasonValue).
	rejected map[string]Rejection
	reasons  map[string][]Rejection
	// applied is true once the Applier took a desired set; lastInput is
	// that set as given (before its refusals) and applierRej its refusals.
	applied    bool
	lastInput  map[string]DesiredModel
	applierRej map[string]Rejection
	// dirty is true when the last ApplyDesired failed with a transient
	// error: Retry tries again with pending.
	dirty   bool
	pending map[string]DesiredModel
}

// NewTwin returns a Twin that applies desired states as source.
//
// Generations start at the wall clock in nanoseconds and increase by one per
// applied update, so they also increase across restarts of the node unless
// the clock goes backwards; an Applier keeps them per source.
//
// Every refused value is counted in edge_kubeedge_rejected_values_total
// {source,reason} (registered on reg, which may be nil) and logged, at most
// 10 lines a second.
func NewTwin(applier Applier, source string, logger zerolog.Logger, reg prometheus.Registerer) *Twin {
	rejected := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edge_kubeedge_rejected_values_total",
		Help: "Desired values from KubeEdge refused by the node, by source and reason.",
	}, []string{"source", "reason"})
	applies := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edge_kubeedge_applies_total",
		Help: "Desired states from KubeEdge handed to the reconciler, by source and result (ok, rejected, error).",
	}, []string{"source", "result"})
	if reg != nil {
		rejected = registerOrExisting(reg, rejected)
		applies = registerOrExisting(reg, applies)
	}
	return &Twin{
		applier:       applier,
		source:        source,
		log:           logger.Sample(&zerolog.BurstSampler{Burst: 10, Period: time.Second}),
		rejectedTotal: rejected.MustCurryWith(prometheus.Labels{"source": source}),
		appliesTotal:  applies.MustCurryWith(prometheus.Labels{"source": source}),
		gen:           uint64(time.Now().UnixNano()),
		accepted:      map[string]DesiredModel{},
		rejected:      map[string]Rejection{},
		reasons:       map[string][]Rejection{},
	}
}

// registerOrExisting registers c, or returns the collector already
// registered under the same description (the DMI and EventBus twins share
// their metrics, told apart by the source label).
func registerOrExisting(reg prometheus.Registerer, c *prometheus.CounterVec) *prometheus.CounterVec {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return existing
			}
		}
		panic(err) // a programming error: the names are constants
	}
	return c
}

// Source is the source name given to the Applier.
func (t *Twin) Source() string { return t.source }

// SetDesired decodes a Device's desired property values (the complete set)
// and applies them. Refused values are reported (M.state Rejected) and
// returned; the refused models keep their last accepted entry. The error is
// nil when everything was accepted, a *RejectedError when something was
// refused, and anything else when the Applier failed (Retry repeats it).
func (t *Twin) SetDesired(ctx context.Context, props []Property) error {
	parsed, rej := ParseDesired(props)
	t.mu.Lock()
	defer t.mu.Unlock()

	t.desired = make(map[string]string, len(props))
	for _, p := range props {
		if p.Value != "" {
			t.desired[p.Name] = p.Value
		}
	}
	t.rejected = map[string]Rejection{}
	t.reasons = map[string][]Rejection{}
	next := map[string]DesiredModel{}
	if parsed == nil && len(rej) > 0 { // the whole update refused
		next = maps.Clone(t.accepted)
	}
	maps.Copy(next, parsed)
	for _, r := range rej {
		t.rejectedTotal.WithLabelValues(string(r.Reason)).Inc()
		t.log.Warn().Str("property", r.Property).Str("model", r.Model).Str("reason", string(r.Reason)).Str("detail", r.Detail).Msg("desired value refused")
		if r.Model == "" {
			continue
		}
		t.rejected[r.Model] = r
		t.reasons[r.Model] = append(t.reasons[r.Model], r)
		if old, ok := t.accepted[r.Model]; ok {
			next[r.Model] = old // a refusal never stops what ran
		}
	}
	err := t.applyLocked(ctx, next)
	if err != nil && !isRejected(err) {
		return err
	}
	var all []Rejection
	all = append(all, rej...)
	var re *RejectedError
	if errors.As(err, &re) {
		all = append(all, re.Rejections...)
	}
	if len(all) > 0 {
		return &RejectedError{Rejections: all}
	}
	return nil
}

// ReasonValue is the M.reason value for a model's refusals: the code alone
// for one, "field:Code" for each refused property, comma-separated in
// field order, for several (so each property's own reason reaches the
// cloud).
func ReasonValue(rs []Rejection) string {
	if len(rs) == 1 {
		return string(rs[0].Reason)
	}
	order := func(r Rejection) int {
		_, f, _ := SplitPropertyName(r.Property)
		for i, g := range Fields {
			if f == g {
				return i
			}
		}
		return len(Fields)
	}
	sorted := append([]Rejection(nil), rs...)
	sort.SliceStable(sorted, func(i, j int) bool { return order(sorted[i]) < order(sorted[j]) })
	var b []byte
	for i, r := range sorted {
		if i > 0 {
			b = append(b, ',')
		}
		_, f, _ := SplitPropertyName(r.Property)
		b = append(b, string(f)+":"+string(r.Reason)...)
	}
	return string(b)
}

func isRejected(err error) bool {
	var re *RejectedError
	return errors.As(err, &re)
}

// applyLocked hands next to the Applier unless it is what the Applier was
// last given successfully (EdgeCore repeats deltas while a rollout is under
// way; re-applying each would be churn). Refusals from the Applier are
// recorded; those models fall back to their previous accepted entry.
func (t *Twin) applyLocked(ctx context.Context, next map[string]DesiredModel) error {
	if t.applied && !t.dirty && maps.Equal(next, t.lastInput) {
		return t.applierRejectionsLocked()
	}
	t.gen++
	input := maps.Clone(next)
	err := t.applier.ApplyDesired(ctx, t.source, t.gen, input)
	var re *RejectedError
	t.applierRej = map[string]Rejection{}
	switch {
	case err == nil:
		t.appliesTotal.WithLabelValues("ok").Inc()
	case errors.As(err, &re):
		t.appliesTotal.WithLabelValues("rejected").Inc()
		for _, r := range re.Rejections {
			t.rejectedTotal.WithLabelValues(string(r.Reason)).Inc()
			t.log.Warn().Str("model", r.Model).Str("reason", string(r.Reason)).Str("detail", r.Detail).Msg("desired model refused by the node")
			t.applierRej[r.Model] = r
			if old, ok := t.accepted[r.Model]; ok {
				next[r.Model] = old
			} else {
				delete(next, r.Model)
			}
		}
	default:
		t.appliesTotal.WithLabelValues("error").Inc()
		t.dirty, t.pending = true, next
		return fmt.Errorf("applying the desired state: %w", err)
	}
	t.applied, t.dirty, t.pending = true, false, nil
	t.lastInput = input
	t.accepted = next
	return t.applierRejectionsLocked()
}

// applierRejectionsLocked records the Applier's last refusals as current
// and returns them as a *RejectedError (nil when there are none).
func (t *Twin) applierRejectionsLocked() error {
	if len(t.applierRej) == 0 {
		return nil
	}
	re := &RejectedError{}
	for m, r := range t.applierRej {
		t.rejected[m] = r
		if len(t.reasons[m]) == 0 {
			t.reasons[m] = []Rejection{r}
		}
		re.Rejections = append(re.Rejections, r)
	}
	sort.Slice(re.Rejections, func(i, j int) bool { return re.Rejections[i].Model < re.Rejections[j].Model })
	return re
}

// Retry applies the last desired set again if the previous attempt failed
// with a transient error; it does nothing otherwise.
func (t *Twin) Retry(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.dirty {
		return nil
	}
	err := t.applyLocked(ctx, t.pending)
	if isRejected(err) {
		return nil
	}
	return err
}

// Report builds the reported values of every model the Device names (in its
// desired values, accepted or refused), sorted by property name. Models the
// node serves but the Device does not name are left out: the Device's
// schema is the DeviceModel's, not the node's.
func (t *Twin) Report(ctx context.Context) ([]TwinValue, error) {
	st, err := t.applier.Status(ctx)
	if err != nil {
		return nil, err
	}
	byModel := make(map[string]ModelStatus, len(st))
	for _, s := range st {
		byModel[s.Model] = s
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	named := map[string]bool{}
	for m := range t.accepted {
		named[m] = true
	}
	for m := range t.rejected {
		named[m] = true
	}
	for name := range t.desired {
		if m, f, ok := SplitPropertyName(name); ok && f.valid() && models.ValidModelName(m) == nil {
			named[m] = true
		}
	}
	var out []TwinValue
	for m := range named {
		s := byModel[m]
		rej, refused := t.rejected[m]
		acc, accepted := t.accepted[m]
		val := func(f Field, reported string) {
			if reported == "" {
				reported = None
			}
			name := PropertyName(m, f)
			if !ValidName(name) || !ValidValue(reported) {
				return // cannot be carried; the log has the refusal
			}
			out = append(out, TwinValue{Name: name, ObservedDesired: t.desired[name], Reported: reported})
		}
		val(FieldVersion, s.Active)
		rollout := ""
		if accepted {
			rollout = t.desired[PropertyName(m, FieldRollout)]
			if rollout == "" || refused {
				rollout = acc.Strategy.String()
			}
		}
		val(FieldRollout, rollout)
		val(FieldSHA256, s.ActiveSHA256)
		val(FieldCanary, s.Canary)
		state, reason := string(s.State), string(s.Reason)
		if refused {
			state, reason = "Rejected", ReasonValue(t.reasons[m])
			if reason == "" {
				reason = string(rej.Reason)
			}
		}
		val(FieldState, state)
		val(FieldReason, reason)
		p99, er := "0", "0" // FLOAT properties: a number before any traffic
		if s.Health != nil {
			p99 = strconv.FormatFloat(float64(s.Health.P99)/float64(time.Millisecond), 'f', 3, 64)
			er = strconv.FormatFloat(s.Health.ErrorRate, 'f', 6, 64)
		}
		val(FieldP99, p99)
		val(FieldErrorRate, er)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
