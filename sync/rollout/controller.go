package rollout

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/sync/fleet"
	"github.com/edgeai/edge-node/sync/wire"
)

// Link is what the controller needs from the MQTT session (*mqttlink.Link).
type Link interface {
	fleet.Link
}

// Records is where a controller keeps its rollouts' records and leases:
// the bbolt state file (Store, edgectl rollout), or the status of
// Kubernetes ModelVersion resources (sync/kube), whose controller's leader
// election stands in for the per-rollout lease.
type Records interface {
	// Create stores a new record; ErrExists if its id is taken.
	Create(ctx context.Context, r *Record) error
	// Get returns the record; ErrNotFound if there is none.
	Get(ctx context.Context, id string) (*Record, error)
	// List returns every record.
	List(ctx context.Context) ([]*Record, error)
	// Update applies fn to the stored record and stores the result.
	Update(ctx context.Context, id string, fn func(r *Record) error) (*Record, error)
	// AcquireLease takes or renews the lease of rollout id for owner until
	// now+ttl; ErrLeaseHeld while another owner's lease has not expired.
	AcquireLease(ctx context.Context, id, owner string, ttl time.Duration, now time.Time) error
	// ReleaseLease drops owner's lease.
	ReleaseLease(ctx context.Context, id, owner string) error
}

// Config configures a Controller.
type Config struct {
	Topics wire.Topics
	// StatePath is the bbolt state file, used when Records is nil.
	StatePath string
	// Records keeps the records instead of the state file.
	Records Records
	// Owner names this controller in leases (e.g. host-pid).
	Owner string
	// LeaseTTL is how long a lease lasts without renewal (default 15 s); it
	// is renewed every tick.
	LeaseTTL time.Duration
	// Tick is how often counts are re-tallied and decisions taken
	// (default 250 ms).
	Tick time.Duration
	// Quiet bounds the wait for retained messages (default 1 s).
	Quiet time.Duration
	// Pipeline is how many desired-state publishes may await their PUBACK.
	Pipeline int
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Controller drives fleet rollouts. Its methods are safe for concurrent use;
// Run drives one rollout.
type Controller struct {
	cfg   Config
	link  Link
	store Records
	log   zerolog.Logger

	mu      sync.Mutex                    // guards the fields below
	views   map[string]*wire.Status       // latest status per node
	desired map[string]*wire.DesiredState // latest retained desired state per node, as the broker sends it
	raw     map[string][]byte             // the payload of desired[node]
	// clash holds, per node, a desired state another writer published
	// under the generation desired[node] has, with other content: two
	// writers read the same generation and both wrote (MQTT has no
	// conditional publish). Valid while desired[node] has that generation.
	clash       map[string]*wire.DesiredState
	desiredKick chan struct{} // signalled on each desired message while readDesired waits
	watched     bool          // status and desired subscriptions made
}

// NewController builds a controller; nothing touches the network until
// Start or Run.
func NewController(cfg Config, link Link, log zerolog.Logger) (*Controller, error) {
	if cfg.StatePath == "" && cfg.Records == nil || cfg.Owner == "" {
		return nil, errors.New("rollout: StatePath (or Records) and Owner are required")
	}
	if cfg.Records == nil {
		cfg.Records = fileRecords{NewStore(cfg.StatePath)}
	}
	if cfg.Topics.Root == "" {
		cfg.Topics.Root = wire.DefaultRoot
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 15 * time.Second
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 250 * time.Millisecond
	}
	if cfg.Quiet <= 0 {
		cfg.Quiet = time.Second
	}
	if cfg.Pipeline <= 0 {
		cfg.Pipeline = 64
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Controller{cfg: cfg, link: link, store: cfg.Records,
		log:   log.With().Str("component", "rollout").Logger(),
		views: map[string]*wire.Status{}, desired: map[string]*wire.DesiredState{}, raw: map[string][]byte{},
		clash: map[string]*wire.DesiredState{}}, nil
}

// watch subscribes to every node's status (once) and waits for the
// retained ones.
func (c *Controller) watch(ctx context.Context) error {
	c.mu.Lock()
	done := c.watched
	c.watched = true
	c.mu.Unlock()
	if done {
		return nil
	}
	kick := make(chan struct{}, 1)
	h := func(topic string, b []byte) {
		c.onStatus(topic, b)
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	if err := c.link.Subscribe(ctx, h, c.cfg.Topics.AllStatus()); err != nil {
		return err
	}
	if err := c.readDesired(ctx); err != nil {
		return err
	}
	// Retained statuses arrive after the SUBACK; wait until they pause.
	return waitQuiet(ctx, kick, c.cfg.Quiet)
}

// readDesired (re)subscribes to every node's desired state and waits until
// the retained ones the broker sends on each SUBSCRIBE pause: afterwards
// c.desired holds what the broker holds, not what this controller last
// wrote. The subscription then follows every later write (this
// controller's echoed, and anyone else's).
func (c *Controller) readDesired(ctx context.Context) error {
	kick := make(chan struct{}, 1)
	c.mu.Lock()
	c.desiredKick = kick
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.desiredKick = nil
		c.mu.Unlock()
	}()
	if err := c.link.Subscribe(ctx, c.onDesired, c.cfg.Topics.Root+"/nodes/+/desired"); err != nil {
		return err
	}
	return waitQuiet(ctx, kick, c.cfg.Quiet)
}

// waitQuiet returns when nothing arrived on kick for quiet, or after
// 20 × quiet (a busy fleet never pauses).
func waitQuiet(ctx context.Context, kick <-chan struct{}, quiet time.Duration) error {
	t := time.NewTimer(quiet)
	defer t.Stop()
	limit := time.NewTimer(20 * quiet)
	defer limit.Stop()
	for {
		select {
		case <-kick:
			t.Reset(quiet)
		case <-t.C:
			return nil
		case <-limit.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (c *Controller) onDesired(topic string, b []byte) {
	node, leaf, err := c.cfg.Topics.ParseNodeTopic(topic)
	if err != nil || leaf != "desired" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.desiredKick != nil {
		select {
		case c.desiredKick <- struct{}{}:
		default:
		}
	}
	if len(b) == 0 { // cleared
		delete(c.desired, node)
		delete(c.raw, node)
		return
	}
	// A signed state (edgectl deploy --key) is built on like an unsigned
	// one: its entries and generation stay in the controller's next write.
	target, err := c.cfg.Topics.DesiredTarget(topic)
	if err != nil {
		return
	}
	d, err := fleet.DecodeOwn(b, target, nil)
	if err != nil {
		c.log.Warn().Err(err).Str("node", node).Msg("invalid retained desired state: will be replaced")
		return
	}
	if old := c.desired[node]; old != nil {
		switch {
		case d.Generation < old.Generation:
			return // an older write delivered late
		case d.Generation == old.Generation:
			if !bytes.Equal(c.raw[node], b) {
				c.clash[node] = &d
			}
			// Keep the first one seen: a node ignores an equal generation.
			return
		}
	}
	c.desired[node] = &d
	c.raw[node] = append([]byte(nil), b...)
}

func (c *Controller) onStatus(topic string, b []byte) {
	node, leaf, err := c.cfg.Topics.ParseNodeTopic(topic)
	if err != nil || leaf != "status" || len(b) == 0 {
		return
	}
	s, err := wire.DecodeStatus(b)
	if err != nil || s.Node != node {
		return
	}
	// Handlers run concurrently: keep the newest report per node.
	t, _ := time.Parse(time.RFC3339Nano, s.Time)
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.views[node]; old != nil {
		if ot, _ := time.Parse(time.RFC3339Nano, old.Time); ot.After(t) {
			return
		}
	}
	c.views[node] = &s
}

// Start selects the nodes, assigns waves and stores a new rollout record
// in the running phase (no wave started yet: Run starts wave 1).
func (c *Controller) Start(ctx context.Context, spec Spec) (*Record, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if err := c.watch(ctx); err != nil {
		return nil, err
	}
	c.mu.Lock()
	var nodes []string
	prev := map[string]string{}
	var p99s []float64
	for id, s := range c.views {
		if !spec.Selects(s) {
			continue
		}
		nodes = append(nodes, id)
		if ms, ok := s.Models[spec.Model]; ok && ms.State == "Active" {
			prev[id] = ms.Version
			if ms.P99Ms > 0 {
				p99s = append(p99s, ms.P99Ms)
			}
		} else {
			prev[id] = ""
		}
	}
	busy := c.busyLocked(spec, nodes)
	c.mu.Unlock()
	if len(nodes) == 0 {
		return nil, fmt.Errorf("rollout %s: %w (%s)", spec.ID, ErrNoNodes, targetText(spec))
	}
	if busy != "" {
		return nil, fmt.Errorf("rollout %s refused: %s", spec.ID, busy)
	}
	if err := c.refuseOverlap(ctx, spec, nodes); err != nil {
		return nil, err
	}
	now := c.cfg.Now()
	r := &Record{Spec: spec, Wave: -1, Members: AssignWaves(spec.ID, nodes, spec.Waves), Previous: prev,
		BaselineP99Ms: Percentile(p99s, 99), Created: now, Updated: now}
	r.Counts = make([]Counts, len(r.Members))
	for w, m := range r.Members {
		r.Counts[w].Total, r.Counts[w].Pending = len(m), len(m)
	}
	r.note(now, PhaseRunning, fmt.Sprintf("%d nodes selected", len(nodes)))
	if err := c.store.Create(ctx, r); err != nil {
		return nil, err
	}
	c.log.Info().Str("rollout", spec.ID).Int("nodes", len(nodes)).Ints("waves", spec.Waves).Msg("rollout created")
	return r, nil
}

// targetText says which nodes a spec selects, for messages.
func targetText(s Spec) string {
	switch {
	case s.Group != "":
		return "group " + s.Group
	case len(s.Selector) > 0 || len(s.Match) > 0:
		parts := matchText(s.Match)
		if len(s.Selector) > 0 {
			parts = append([]string{SelectorText(s.Selector)}, parts...)
		}
		return "selector " + strings.Join(parts, ", ")
	}
	return "every node"
}

// matchText writes requirements as "k in (a,b)", "k2", "!k3".
func matchText(ms []Requirement) []string {
	var out []string
	for _, m := range ms {
		switch m.Operator {
		case OpExists:
			out = append(out, m.Key)
		case OpDoesNotExist:
			out = append(out, "!"+m.Key)
		default:
			out = append(out, fmt.Sprintf("%s %s (%s)", m.Key, strings.ToLower(m.Operator), strings.Join(m.Values, ",")))
		}
	}
	return out
}

// SelectorText writes a selector as k=v,k2=v2 (sorted), the form
// ParseSelector reads.
func SelectorText(sel map[string]string) string {
	keys := slices.Sorted(maps.Keys(sel))
	for i, k := range keys {
		keys[i] = k + "=" + sel[k]
	}
	return strings.Join(keys, ",")
}

// refuseOverlap fails when a rollout of the same model in this state file
// is not finished and shares nodes with the new one: one rollout per model
// per node at a time.
func (c *Controller) refuseOverlap(ctx context.Context, spec Spec, nodes []string) error {
	rs, err := c.store.List(ctx)
	if err != nil {
		return err
	}
	mine := map[string]bool{}
	for _, n := range nodes {
		mine[n] = true
	}
	for _, r := range rs {
		if r.Spec.Model != spec.Model || r.Spec.ID == spec.ID || r.Phase.Final() {
			continue
		}
		shared := 0
		first := ""
		for _, m := range r.Members {
			for _, n := range m {
				if mine[n] {
					if shared == 0 {
						first = n
					}
					shared++
				}
			}
		}
		if shared > 0 {
			return fmt.Errorf("rollout %s refused: rollout %s of model %s is %s on %d of its nodes (e.g. %s); "+
				"wait for it to end, or abort or roll it back first", spec.ID, r.Spec.ID, r.Spec.Model, r.Phase, shared, first)
		}
	}
	return nil
}

// busyLocked says, when one of nodes carries another rollout of
// spec.Model in its retained desired state that the node has not finished
// (its status does not show that version Active, Failed or rolled back),
// which rollout and node; "" otherwise. c.mu is held.
func (c *Controller) busyLocked(spec Spec, nodes []string) string {
	sort.Strings(nodes)
	for _, n := range nodes {
		d := c.desired[n]
		if d == nil {
			continue
		}
		ms, ok := d.Models[spec.Model]
		if !ok || ms.Rollout == nil || ms.Rollout.ID == spec.ID {
			continue
		}
		st := StatePending
		if s := c.views[n]; s != nil {
			if cur, ok := s.Models[spec.Model]; ok {
				st = Classify(&cur, ms.Version)
			}
		}
		if st == StatePending || st == StateDownloading || st == StateCanary {
			return fmt.Sprintf("node %s is in rollout %s of model %s (version %s, %s); wait for it to end, or abort or roll it back first",
				n, ms.Rollout.ID, spec.Model, ms.Version, st)
		}
	}
	return ""
}

// overwrittenLocked says, when the desired state of a node of a written
// wave no longer carries this rollout for its model (another writer
// replaced it) or clashed with another writer's at the same generation,
// which node and how; "" otherwise. c.mu is held.
func (c *Controller) overwrittenLocked(r *Record) string {
	for w := 0; w < r.WavesWritten && w < len(r.Members); w++ {
		for _, n := range r.Members[w] {
			d := c.desired[n]
			if d == nil {
				continue // not seen (cleared, or not read yet)
			}
			if cl := c.clash[n]; cl != nil && cl.Generation == d.Generation {
				return fmt.Sprintf("node %s: another writer published desired generation %d too (%s); the node applies the first it receives",
					n, d.Generation, specText(cl.Models[r.Spec.Model]))
			}
			if ms, ok := d.Models[r.Spec.Model]; !ok || ms.Rollout == nil || ms.Rollout.ID != r.Spec.ID {
				return fmt.Sprintf("node %s: desired generation %d by another writer replaced this rollout (%s)",
					n, d.Generation, specText(ms))
			}
		}
	}
	return ""
}

// specText describes a model spec for messages.
func specText(ms wire.ModelSpec) string {
	switch {
	case ms.Absent || ms.Version == "":
		return "model removed"
	case ms.Rollout != nil:
		return fmt.Sprintf("version %s by rollout %s", ms.Version, ms.Rollout.ID)
	}
	return "version " + ms.Version
}

// Run drives rollout id until it reaches a final phase (or ctx ends, leaving
// it to be resumed by the next Run). It takes the rollout's lease first and
// fails with ErrLeaseHeld when another controller holds it. onTick, if not
// nil, sees the record after every tick.
func (c *Controller) Run(ctx context.Context, id string, onTick func(*Record)) (*Record, error) {
	owner := c.cfg.Owner
	if err := c.store.AcquireLease(ctx, id, owner, c.cfg.LeaseTTL, c.cfg.Now()); err != nil {
		return nil, err
	}
	defer func() {
		if err := c.store.ReleaseLease(context.WithoutCancel(ctx), id, owner); err != nil {
			c.log.Warn().Err(err).Msg("release lease")
		}
	}()
	if err := c.watch(ctx); err != nil {
		return nil, err
	}
	t := time.NewTicker(c.cfg.Tick)
	defer t.Stop()
	for {
		if err := c.store.AcquireLease(ctx, id, owner, c.cfg.LeaseTTL, c.cfg.Now()); err != nil {
			return nil, err
		}
		r, err := c.step(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				return r, nil
			}
			return r, err
		}
		if onTick != nil {
			onTick(r)
		}
		if r.Phase.Final() {
			return r, nil
		}
		select {
		case <-ctx.Done():
			return r, nil
		case <-t.C:
		}
	}
}

// Owner is the name this controller holds leases under.
func (c *Controller) Owner() string { return c.cfg.Owner }

// LeaseTTL is how long this controller's leases last without renewal.
func (c *Controller) LeaseTTL() time.Duration { return c.cfg.LeaseTTL }

// Watch subscribes to the nodes' status and desired state, once, and waits
// for the retained messages, so the first Start or Step does not (a
// controller that just became leader calls it).
func (c *Controller) Watch(ctx context.Context) error { return c.watch(ctx) }

// Step is one tick of rollout id without its lease, for a caller that keeps
// other controllers away itself (a Kubernetes controller's leader
// election): tally, carry out a command, decide, write desired state. The
// record is saved before and after each write, so a Step cut short is
// completed by the next one.
func (c *Controller) Step(ctx context.Context, id string) (*Record, error) {
	if err := c.watch(ctx); err != nil {
		return nil, err
	}
	return c.step(ctx, id)
}

// step is one tick: tally, carry out a command, decide, write desired state.
func (c *Controller) step(ctx context.Context, id string) (*Record, error) {
	r, err := c.store.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	now := c.cfg.Now()
	retry, outside := c.tally(r, now)
	readCmd := r.Command
	switch r.Command {
	case CmdPause:
		r.PausedAt = now
		r.note(now, PhasePaused, "paused by operator")
	case CmdResume:
		// The wave and node timeout clocks stopped while paused: every
		// started wave's start moves on by the pause.
		if !r.PausedAt.IsZero() {
			d := now.Sub(r.PausedAt)
			for w := 0; w <= r.Wave && w < len(r.WaveStarted); w++ {
				r.WaveStarted[w] = r.WaveStarted[w].Add(d)
			}
			for n, run := range r.Runs {
				if !run.Joined.IsZero() {
					run.Joined = run.Joined.Add(d)
				}
				if !run.RetriedAt.IsZero() {
					run.RetriedAt = run.RetriedAt.Add(d)
				}
				r.Runs[n] = run
			}
		}
		r.PausedAt = time.Time{}
		r.note(now, PhaseRunning, "resumed by operator")
	case CmdAbort:
		r.Reason = "aborted by operator"
		r.note(now, PhaseHeld, r.Reason)
	case CmdRollback:
		r.Reason = "rollback by operator"
		r.RollbackWritten = false
		r.note(now, PhaseRollingBack, r.Reason)
	}
	r.Command = ""
	if r.Phase == PhaseRunning {
		c.mu.Lock()
		lost := c.overwrittenLocked(r)
		c.mu.Unlock()
		if lost != "" {
			r.Reason = lost
			r.note(now, PhaseHeld, "held: "+lost)
		}
	}
	live := r.Phase == PhaseRunning || r.Phase == PhaseWatching
	if live && r.Spec.Continuous && len(outside) > 0 {
		c.addJoiners(r, now, outside)
	}
	if live {
		switch {
		case r.Wave < 0:
			c.startWave(r, now, 0, "first wave")
		case r.WavesWritten <= r.Wave:
			// Restarted between the intent and the end of the wave's writes.
		default:
			a := Decide(r, now)
			switch a.Kind {
			case ActAdvance:
				c.startWave(r, now, r.Wave+1, a.Reason)
			case ActComplete:
				if r.Spec.Continuous {
					r.note(now, PhaseWatching, a.Reason+"; watching for nodes that join the target")
				} else {
					r.note(now, PhaseCompleted, a.Reason)
				}
			case ActAbort:
				r.Reason = a.Reason
				if r.Spec.OnAbort == OnAbortHold {
					r.note(now, PhaseHeld, "aborted: "+a.Reason)
				} else {
					r.note(now, PhaseRollingBack, "aborted: "+a.Reason)
				}
			}
		}
	}
	r.Updated = now
	// Persist the intent (a started wave, a rollback) before publishing.
	if err := c.save(ctx, r, readCmd); err != nil {
		return r, err
	}
	live = r.Phase == PhaseRunning || r.Phase == PhaseWatching
	if live && r.Wave >= 0 && r.WavesWritten <= r.Wave {
		var conflict *conflictError
		switch err := c.writeWave(ctx, r); {
		case errors.Is(err, errPaced):
			// The rest of the wave on the next ticks.
		case errors.As(err, &conflict):
			r.Reason = conflict.why
			r.note(c.cfg.Now(), PhaseHeld, fmt.Sprintf("held before writing wave %d: %s", r.Wave+1, conflict.why))
		case err != nil:
			return r, err
		default:
			r.WavesWritten = r.Wave + 1
		}
		if err := c.save(ctx, r, readCmd); err != nil {
			return r, err
		}
	}
	if live = r.Phase == PhaseRunning || r.Phase == PhaseWatching; live && len(retry) > 0 {
		if err := c.writeRetries(ctx, r, retry); err != nil {
			return r, err
		}
		if err := c.save(ctx, r, readCmd); err != nil {
			return r, err
		}
	}
	if r.Phase == PhaseRollingBack && !r.RollbackWritten {
		if err := c.writeRollback(ctx, r); err != nil {
			return r, err
		}
		r.RollbackWritten = true
		r.note(c.cfg.Now(), PhaseRolledBack, "previous version written back to the started waves")
		if err := c.save(ctx, r, readCmd); err != nil {
			return r, err
		}
	}
	return r, nil
}

func (c *Controller) save(ctx context.Context, r *Record, readCmd string) error {
	_, err := c.store.Update(ctx, r.Spec.ID, func(cur *Record) error {
		cmd := cur.Command
		*cur = *r
		// A command given while this tick ran is kept for the next one (the
		// tick consumed the one it read, and cleared r.Command).
		if cmd != "" && cmd != readCmd {
			cur.Command = cmd
		}
		return nil
	})
	return err
}

func (c *Controller) startWave(r *Record, now time.Time, w int, why string) {
	r.Wave = w
	for len(r.WaveStarted) <= w {
		r.WaveStarted = append(r.WaveStarted, time.Time{})
	}
	r.WaveStarted[w] = now
	r.note(now, PhaseRunning, fmt.Sprintf("wave %d started (%d nodes): %s", w+1, len(r.Members[w]), why))
	c.log.Info().Str("rollout", r.Spec.ID).Int("wave", w+1).Int("nodes", len(r.Members[w])).Msg("wave started")
}

// tally recomputes r.Counts, r.BadNodes and r.Outside from the latest
// statuses; a node of a started wave unfinished NodeTimeout after its
// attempt started (the wave's start, its join or its latest retry) is
// timed out. While paused the clock stands at PausedAt. It returns the
// failed and timed-out nodes that have retries left (counted pending: the
// caller retries them while the rollout runs), and the nodes that match
// the target but are not members.
func (c *Controller) tally(r *Record, now time.Time) (retry []retryNode, outside []string) {
	if r.Phase == PhasePaused && !r.PausedAt.IsZero() {
		now = r.PausedAt
	}
	live := r.Phase == PhaseRunning || r.Phase == PhaseWatching
	c.mu.Lock()
	defer c.mu.Unlock()
	counts := make([]Counts, len(r.Members))
	bad := map[string]NodeState{}
	reasons := map[string]string{}
	member := map[string]bool{}
	for w, m := range r.Members {
		var p99s []float64
		started := w <= r.Wave && w < len(r.WaveStarted)
		for _, n := range m {
			member[n] = true
			st := StatePending
			reason := ""
			if w <= r.Wave {
				run := r.Runs[n]
				if s := c.views[n]; s != nil && s.Desired.Node >= run.RetryGeneration {
					// (A report from before the node applied its latest
					// retry is stale: pending.)
					if ms, ok := s.Models[r.Spec.Model]; ok {
						st = Classify(&ms, r.Spec.Version)
						reason = ms.Reason
						if (st == StateActive || st == StateCanary) && ms.P99Ms > 0 {
							p99s = append(p99s, ms.P99Ms)
						}
					}
				}
				if started && r.Spec.NodeTimeout > 0 && now.Sub(run.since(r.WaveStarted[w])) > r.Spec.NodeTimeout &&
					(st == StatePending || st == StateDownloading || st == StateCanary) {
					st, reason = StateTimedOut, "NodeTimeout"
				}
				if live && (st == StateFailed || st == StateTimedOut) && run.Retries < r.Spec.Retries {
					retry = append(retry, retryNode{n, w})
					st, reason = StatePending, ""
				}
				if st == StateFailed || st == StateRolledBack || st == StateTimedOut {
					bad[n] = st
					if reason == "" {
						reason = string(st)
					}
					reasons[n] = reason
				}
			}
			counts[w].add(st)
		}
		counts[w].P99Ms = Percentile(p99s, 99)
	}
	for n, s := range c.views {
		if !member[n] && r.Spec.Selects(s) {
			outside = append(outside, n)
		}
	}
	sort.Strings(outside)
	r.Counts, r.BadNodes, r.BadReasons, r.Outside = counts, bad, reasons, len(outside)
	return retry, outside
}

// retryNode is a node to retry, of wave (0-based) wave.
type retryNode struct {
	node string
	wave int
}

// addJoiners adds the nodes of outside that no other rollout of the model
// is under way on to the wave under way (the first, before it starts; the
// last, watching), with their previous version, so that the wave's writes
// reach them.
func (c *Controller) addJoiners(r *Record, now time.Time, outside []string) {
	w := max(r.Wave, 0)
	var added []string
	c.mu.Lock()
	for _, n := range outside {
		if c.busyLocked(r.Spec, []string{n}) != "" {
			continue // joins once that rollout ended
		}
		prev := ""
		if ms, ok := c.views[n].Models[r.Spec.Model]; ok && ms.State == "Active" {
			prev = ms.Version
		}
		if r.Previous == nil {
			r.Previous = map[string]string{}
		}
		if r.Runs == nil {
			r.Runs = map[string]NodeRun{}
		}
		r.Previous[n] = prev
		r.Runs[n] = NodeRun{Joined: now}
		added = append(added, n)
	}
	c.mu.Unlock()
	if len(added) == 0 {
		return
	}
	r.Members[w] = append(r.Members[w], added...)
	sort.Strings(r.Members[w])
	r.Counts[w].Total += len(added)
	r.Counts[w].Pending += len(added)
	r.Joined += len(added)
	r.Outside -= len(added)
	if r.Wave >= 0 && r.WavesWritten > r.Wave {
		r.WavesWritten = r.Wave // the wave's writes reach the joined nodes (paced)
	}
	r.note(now, r.Phase, fmt.Sprintf("%d nodes joined wave %d (e.g. %s)", len(added), w+1, added[0]))
	c.log.Info().Str("rollout", r.Spec.ID).Int("wave", w+1).Int("nodes", len(added)).Msg("nodes joined")
}

// writeWave writes the desired state of every node of wave r.Wave that
// does not carry it yet.
func (c *Controller) writeWave(ctx context.Context, r *Record) error {
	if err := c.readDesired(ctx); err != nil {
		return err
	}
	c.mu.Lock()
	busy := c.busyLocked(r.Spec, slices.Clone(r.Members[r.Wave]))
	c.mu.Unlock()
	if busy != "" {
		return &conflictError{busy}
	}
	ref := &wire.RolloutRef{ID: r.Spec.ID, Wave: r.Wave + 1}
	spec := wire.ModelSpec{Version: r.Spec.Version, Strategy: r.Spec.Strategy, Rollout: ref}
	now := c.cfg.Now()
	credit := r.credit(now)
	limit := -1
	if credit >= 0 {
		limit = int(credit)
	}
	written, left, err := c.writeNodes(ctx, r.Spec.Model, r.Members[r.Wave], limit, false, func(string) wire.ModelSpec { return spec })
	if credit >= 0 {
		r.WriteCredit, r.CreditAt = credit-float64(len(written)), now
	}
	if err == nil && left > 0 {
		err = errPaced
	}
	return err
}

// writeRetries writes the version again to nodes that failed or timed out
// and have retries left, with a new generation (a node retries a Failed
// version only on a newer one), within the pace; the rest wait for the
// next ticks. Each retry written is counted in r.Runs.
func (c *Controller) writeRetries(ctx context.Context, r *Record, nodes []retryNode) error {
	if err := c.readDesired(ctx); err != nil {
		return err
	}
	now := c.cfg.Now()
	credit := r.credit(now)
	limit := -1
	if credit >= 0 {
		limit = int(credit)
	}
	wave := map[string]int{}
	var names []string
	for _, n := range nodes {
		wave[n.node] = n.wave
		names = append(names, n.node)
	}
	written, _, err := c.writeNodes(ctx, r.Spec.Model, names, limit, true, func(n string) wire.ModelSpec {
		return wire.ModelSpec{Version: r.Spec.Version, Strategy: r.Spec.Strategy, Rollout: &wire.RolloutRef{ID: r.Spec.ID, Wave: wave[n] + 1}}
	})
	if credit >= 0 {
		r.WriteCredit, r.CreditAt = credit-float64(len(written)), now
	}
	if err != nil || len(written) == 0 {
		return err
	}
	if r.Runs == nil {
		r.Runs = map[string]NodeRun{}
	}
	for n, gen := range written {
		run := r.Runs[n]
		run.Retries++
		run.RetryGeneration, run.RetriedAt = gen, now
		r.Runs[n] = run
	}
	first := slices.Sorted(maps.Keys(written))[0]
	r.note(now, r.Phase, fmt.Sprintf("%d failed or timed-out nodes retried (e.g. %s, attempt %d of %d)",
		len(written), first, r.Runs[first].Retries+1, r.Spec.Retries+1))
	return nil
}

// errPaced is a wave whose writes Spec.MaxPerMinute spreads over the next
// ticks.
var errPaced = errors.New("rollout: paced")

// writeRollback writes each started node's previous version back (removes
// the model where there was none).
func (c *Controller) writeRollback(ctx context.Context, r *Record) error {
	if err := c.readDesired(ctx); err != nil {
		return err
	}
	var nodes []string
	for w := 0; w <= r.Wave && w < len(r.Members); w++ {
		nodes = append(nodes, r.Members[w]...)
	}
	// Not paced: a rollback goes out at once.
	_, _, err := c.writeNodes(ctx, r.Spec.Model, nodes, -1, false, func(n string) wire.ModelSpec {
		if p := r.Previous[n]; p != "" {
			return wire.ModelSpec{Version: p}
		}
		return wire.ModelSpec{Absent: true}
	})
	return err
}

// writeNodes sets model to specFor(node) in each node's desired state,
// bumping the generation in c.desired: callers readDesired first, so that
// is the generation the broker holds (a compare-and-set as far as MQTT
// allows: the window is the time between that read and the publish; a
// write by another writer inside it is seen by onDesired as a clash, and
// the rollout holds).
// writeNodes writes at most limit (< 0: every) of nodes that do not carry
// specFor's spec yet (with force, those that do too: a retry), and returns
// the nodes it wrote with their new generation, and how many are left.
func (c *Controller) writeNodes(ctx context.Context, model string, nodes []string, limit int, force bool, specFor func(string) wire.ModelSpec) (written map[string]uint64, left int, err error) {
	sort.Strings(nodes)
	type msg struct {
		node, topic string
		b           []byte
		// What c.desired held before (restored if the write is not
		// acknowledged), and what this write put there.
		prev    *wire.DesiredState
		prevRaw []byte
		set     *wire.DesiredState
	}
	var out []msg
	written = map[string]uint64{}
	c.mu.Lock()
	for _, n := range nodes {
		spec := specFor(n)
		d := wire.DesiredState{Protocol: wire.Protocol, Models: map[string]wire.ModelSpec{}}
		if cur := c.desired[n]; cur != nil {
			d = *cur
			d.Models = maps.Clone(cur.Models)
			if d.Models == nil {
				d.Models = map[string]wire.ModelSpec{}
			}
		}
		if old, ok := d.Models[model]; ok && sameSpec(old, spec) && !force {
			continue // already written (a restart part-way through a wave)
		}
		if limit >= 0 && len(out) >= limit {
			left++
			continue
		}
		d.Generation++
		d.Updated = c.cfg.Now().UTC().Format(time.RFC3339)
		d.Target = ""  // written unsigned: only a signed state names its target
		d.Expires = "" // the signer's expiry is the signer's; this write does not renew it
		d.Models[model] = spec
		b, err := d.Encode()
		if err != nil {
			c.mu.Unlock()
			return nil, 0, err
		}
		out = append(out, msg{node: n, topic: c.cfg.Topics.NodeDesired(n), b: b, prev: c.desired[n], prevRaw: c.raw[n], set: &d})
		written[n] = d.Generation
		c.desired[n], c.raw[n] = &d, b
	}
	c.mu.Unlock()
	// A write not acknowledged may not be the broker's: c.desired goes
	// back to what it held for it (unless a newer state arrived since), so
	// the next tick writes it again instead of taking it for written.
	acked := 0
	fail := func(err error) (map[string]uint64, int, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, m := range out[acked:] {
			if c.desired[m.node] != m.set {
				continue
			}
			if m.prev == nil {
				delete(c.desired, m.node)
				delete(c.raw, m.node)
			} else {
				c.desired[m.node], c.raw[m.node] = m.prev, m.prevRaw
			}
		}
		return nil, 0, err
	}
	// Pipelined: at most Pipeline publishes await their PUBACK.
	var pending []func(context.Context) error
	for _, m := range out {
		pending = append(pending, c.link.PublishAsync(m.topic, true, m.b))
		for len(pending) > c.cfg.Pipeline {
			if err := pending[0](ctx); err != nil {
				return fail(err)
			}
			pending = pending[1:]
			acked++
		}
	}
	for _, w := range pending {
		if err := w(ctx); err != nil {
			return fail(err)
		}
		acked++
	}
	return written, left, nil
}

// conflictError is a wave refused because another rollout of the model is
// under way on one of its nodes.
type conflictError struct{ why string }

func (e *conflictError) Error() string { return e.why }

func sameSpec(a, b wire.ModelSpec) bool {
	if a.Version != b.Version || a.Absent != b.Absent || (a.Rollout == nil) != (b.Rollout == nil) ||
		(a.Strategy == nil) != (b.Strategy == nil) {
		return false
	}
	if a.Rollout != nil && *a.Rollout != *b.Rollout {
		return false
	}
	return a.Strategy == nil || *a.Strategy == *b.Strategy
}
