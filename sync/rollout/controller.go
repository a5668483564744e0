package rollout

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
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

// Config configures a Controller.
type Config struct {
	Topics wire.Topics
	// StatePath is the bbolt state file.
	StatePath string
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
	store *Store
	log   zerolog.Logger

	mu      sync.Mutex                    // guards the fields below
	views   map[string]*wire.Status       // latest status per node
	desired map[string]*wire.DesiredState // latest known desired state per node (we are its writer)
	watched bool                          // status subscription made
}

// NewController builds a controller; nothing touches the network until
// Start or Run.
func NewController(cfg Config, link Link, log zerolog.Logger) (*Controller, error) {
	if cfg.StatePath == "" || cfg.Owner == "" {
		return nil, errors.New("rollout: StatePath and Owner are required")
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
	return &Controller{cfg: cfg, link: link, store: NewStore(cfg.StatePath),
		log:   log.With().Str("component", "rollout").Logger(),
		views: map[string]*wire.Status{}, desired: map[string]*wire.DesiredState{}}, nil
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
	got, err := fleet.ReadRetained(ctx, c.link, c.cfg.Topics.Root+"/nodes/+/desired", c.cfg.Quiet)
	if err != nil {
		return err
	}
	c.mu.Lock()
	for topic, b := range got {
		node, _, err := c.cfg.Topics.ParseNodeTopic(topic)
		if err != nil {
			continue
		}
		d, err := wire.DecodeDesired(b)
		if err != nil {
			c.log.Warn().Err(err).Str("node", node).Msg("invalid retained desired state: will be replaced")
			continue
		}
		c.desired[node] = &d
	}
	c.mu.Unlock()
	// Retained statuses arrive after the SUBACK; wait until they pause
	// (at most 20 × Quiet: a busy fleet never pauses).
	t := time.NewTimer(c.cfg.Quiet)
	defer t.Stop()
	limit := time.NewTimer(20 * c.cfg.Quiet)
	defer limit.Stop()
	for {
		select {
		case <-kick:
			t.Reset(c.cfg.Quiet)
		case <-t.C:
			return nil
		case <-limit.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
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
		if !Selects(s, spec.Group, spec.Selector) {
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
	c.mu.Unlock()
	if len(nodes) == 0 {
		return nil, fmt.Errorf("rollout %s: no node matches (group %q, selector %v)", spec.ID, spec.Group, spec.Selector)
	}
	now := c.cfg.Now()
	r := &Record{Spec: spec, Wave: -1, Members: AssignWaves(spec.ID, nodes, spec.Waves), Previous: prev,
		BaselineP99Ms: Percentile(p99s, 99), Created: now, Updated: now}
	r.Counts = make([]Counts, len(r.Members))
	for w, m := range r.Members {
		r.Counts[w].Total, r.Counts[w].Pending = len(m), len(m)
	}
	r.note(now, PhaseRunning, fmt.Sprintf("%d nodes selected", len(nodes)))
	if err := c.store.Create(r); err != nil {
		return nil, err
	}
	c.log.Info().Str("rollout", spec.ID).Int("nodes", len(nodes)).Ints("waves", spec.Waves).Msg("rollout created")
	return r, nil
}

// Run drives rollout id until it reaches a final phase (or ctx ends, leaving
// it to be resumed by the next Run). It takes the rollout's lease first and
// fails with ErrLeaseHeld when another controller holds it. onTick, if not
// nil, sees the record after every tick.
func (c *Controller) Run(ctx context.Context, id string, onTick func(*Record)) (*Record, error) {
	owner := c.cfg.Owner
	if err := c.store.AcquireLease(id, owner, c.cfg.LeaseTTL, c.cfg.Now()); err != nil {
		return nil, err
	}
	defer func() {
		if err := c.store.ReleaseLease(id, owner); err != nil {
			c.log.Warn().Err(err).Msg("release lease")
		}
	}()
	if err := c.watch(ctx); err != nil {
		return nil, err
	}
	t := time.NewTicker(c.cfg.Tick)
	defer t.Stop()
	for {
		if err := c.store.AcquireLease(id, owner, c.cfg.LeaseTTL, c.cfg.Now()); err != nil {
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

// step is one tick: tally, carry out a command, decide, write desired state.
func (c *Controller) step(ctx context.Context, id string) (*Record, error) {
	r, err := c.store.Get(id)
	if err != nil {
		return nil, err
	}
	now := c.cfg.Now()
	c.tally(r)
	readCmd := r.Command
	switch r.Command {
	case CmdPause:
		r.PausedAt = now
		r.note(now, PhasePaused, "paused by operator")
	case CmdResume:
		if !r.PausedAt.IsZero() && r.Wave >= 0 && r.Wave < len(r.WaveStarted) {
			r.WaveStarted[r.Wave] = r.WaveStarted[r.Wave].Add(now.Sub(r.PausedAt))
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
				r.note(now, PhaseCompleted, a.Reason)
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
	if err := c.save(r, readCmd); err != nil {
		return r, err
	}
	if r.Phase == PhaseRunning && r.Wave >= 0 && r.WavesWritten <= r.Wave {
		if err := c.writeWave(ctx, r); err != nil {
			return r, err
		}
		r.WavesWritten = r.Wave + 1
		if err := c.save(r, readCmd); err != nil {
			return r, err
		}
	}
	if r.Phase == PhaseRollingBack && !r.RollbackWritten {
		if err := c.writeRollback(ctx, r); err != nil {
			return r, err
		}
		r.RollbackWritten = true
		r.note(c.cfg.Now(), PhaseRolledBack, "previous version written back to the started waves")
		if err := c.save(r, readCmd); err != nil {
			return r, err
		}
	}
	return r, nil
}

func (c *Controller) save(r *Record, readCmd string) error {
	_, err := c.store.Update(r.Spec.ID, func(cur *Record) error {
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

// tally recomputes r.Counts from the latest statuses.
func (c *Controller) tally(r *Record) {
	c.mu.Lock()
	defer c.mu.Unlock()
	counts := make([]Counts, len(r.Members))
	for w, m := range r.Members {
		var p99s []float64
		for _, n := range m {
			st := StatePending
			if w <= r.Wave {
				if s := c.views[n]; s != nil {
					if ms, ok := s.Models[r.Spec.Model]; ok {
						st = Classify(&ms, r.Spec.Version)
						if (st == StateActive || st == StateCanary) && ms.P99Ms > 0 {
							p99s = append(p99s, ms.P99Ms)
						}
					}
				}
			}
			counts[w].add(st)
		}
		counts[w].P99Ms = Percentile(p99s, 99)
	}
	r.Counts = counts
}

// writeWave writes the desired state of every node of wave r.Wave that
// does not carry it yet.
func (c *Controller) writeWave(ctx context.Context, r *Record) error {
	ref := &wire.RolloutRef{ID: r.Spec.ID, Wave: r.Wave + 1}
	spec := wire.ModelSpec{Version: r.Spec.Version, Strategy: r.Spec.Strategy, Rollout: ref}
	return c.writeNodes(ctx, r.Spec.Model, r.Members[r.Wave], func(string) wire.ModelSpec { return spec })
}

// writeRollback writes each started node's previous version back (removes
// the model where there was none).
func (c *Controller) writeRollback(ctx context.Context, r *Record) error {
	var nodes []string
	for w := 0; w <= r.Wave && w < len(r.Members); w++ {
		nodes = append(nodes, r.Members[w]...)
	}
	return c.writeNodes(ctx, r.Spec.Model, nodes, func(n string) wire.ModelSpec {
		if p := r.Previous[n]; p != "" {
			return wire.ModelSpec{Version: p}
		}
		return wire.ModelSpec{Absent: true}
	})
}

func (c *Controller) writeNodes(ctx context.Context, model string, nodes []string, specFor func(string) wire.ModelSpec) error {
	sort.Strings(nodes)
	type msg struct {
		topic string
		b     []byte
	}
	var out []msg
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
		if old, ok := d.Models[model]; ok && sameSpec(old, spec) {
			continue // already written (a restart part-way through a wave)
		}
		d.Generation++
		d.Updated = c.cfg.Now().UTC().Format(time.RFC3339)
		d.Models[model] = spec
		b, err := d.Encode()
		if err != nil {
			c.mu.Unlock()
			return err
		}
		out = append(out, msg{c.cfg.Topics.NodeDesired(n), b})
		c.desired[n] = &d
	}
	c.mu.Unlock()
	// Pipelined: at most Pipeline publishes await their PUBACK.
	var pending []func(context.Context) error
	for _, m := range out {
		pending = append(pending, c.link.PublishAsync(m.topic, true, m.b))
		for len(pending) > c.cfg.Pipeline {
			if err := pending[0](ctx); err != nil {
				return err
			}
			pending = pending[1:]
		}
	}
	for _, w := range pending {
		if err := w(ctx); err != nil {
			return err
		}
	}
	return nil
}

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
