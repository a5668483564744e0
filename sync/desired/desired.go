// Package desired is the node side of desired state (docs/protocol.md,
// "Desired state"): it subscribes to the node's and its groups' retained
// desired-state topics, rejects stale generations, merges node over groups,
// and hands the effective state to the node's reconciler (an Applier), one
// Apply at a time, always the latest.
package desired

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/sync/mqttlink"
	"github.com/edgeai/edge-node/sync/wire"
)

// Snapshot is the effective desired state handed to the Applier.
type Snapshot struct {
	Models      map[string]wire.ModelSpec
	Generations wire.AppliedGenerations
}

// Applier is the node's reconciler. Apply is called with the latest merged
// state; it should return quickly (start work, don't finish it) or honour
// ctx, because a newer state waits for it. The node persists
// s.Generations (in the store) and passes them back as Config.Initial on the
// next start, so stale messages stay stale across restarts.
type Applier interface {
	Apply(ctx context.Context, s Snapshot) error
}

// Subscriber is what the Watcher needs from the link (*mqttlink.Link).
type Subscriber interface {
	Subscribe(ctx context.Context, h mqttlink.Handler, filters ...string) error
}

// Config configures a Watcher.
type Config struct {
	Topics wire.Topics
	Node   string
	// Groups in priority order (earlier wins over later).
	Groups []string
	// Initial are the generations accepted before a restart.
	Initial wire.AppliedGenerations
	// Policy says whether unsigned desired state is accepted and which
	// keys verify signed desired state (the zero value: unsigned accepted).
	Policy wire.DesiredPolicy
}

// Watcher tracks desired state. Create with New, then Run.
type Watcher struct {
	cfg  Config
	link Subscriber
	app  Applier
	rej  *wire.Rejecter
	log  zerolog.Logger

	mu     sync.Mutex                    // guards the fields below
	node   *wire.DesiredState            // latest accepted from the node topic
	groups map[string]*wire.DesiredState // latest accepted per group
	gens   wire.AppliedGenerations       // highest generation accepted per source
	dirty  chan struct{}                 // capacity 1: a new state is waiting
	// keyless holds, per topic, the last message refused for its key
	// (unknown, revoked, expired), for Recheck.
	keyless map[string][]byte
}

// New checks cfg and builds a Watcher.
func New(cfg Config, link Subscriber, app Applier, rej *wire.Rejecter, log zerolog.Logger) (*Watcher, error) {
	if err := wire.ValidName(cfg.Node); err != nil {
		return nil, fmt.Errorf("desired: node: %w", err)
	}
	for _, g := range cfg.Groups {
		if err := wire.ValidName(g); err != nil {
			return nil, fmt.Errorf("desired: group: %w", err)
		}
	}
	if cfg.Topics.Root == "" {
		cfg.Topics.Root = wire.DefaultRoot
	}
	gens := wire.AppliedGenerations{Node: cfg.Initial.Node, Groups: map[string]uint64{}}
	maps.Copy(gens.Groups, cfg.Initial.Groups)
	return &Watcher{cfg: cfg, link: link, app: app, rej: rej,
		log:    log.With().Str("component", "desired").Logger(),
		groups: map[string]*wire.DesiredState{}, gens: gens, dirty: make(chan struct{}, 1), keyless: map[string][]byte{}}, nil
}

// Run subscribes and applies new states until ctx ends. Subscriptions are
// kept by the link across reconnects; retained messages re-deliver the
// latest state after each one.
func (w *Watcher) Run(ctx context.Context) error {
	filters := []string{w.cfg.Topics.NodeDesired(w.cfg.Node)}
	for _, g := range w.cfg.Groups {
		filters = append(filters, w.cfg.Topics.GroupDesired(g))
	}
	if err := w.link.Subscribe(ctx, w.onMessage, filters...); err != nil {
		return fmt.Errorf("desired: subscribe: %w", err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.dirty:
			s := w.Snapshot()
			if err := w.app.Apply(ctx, s); err != nil && ctx.Err() == nil {
				w.log.Error().Err(err).Uint64("node_generation", s.Generations.Node).Msg("apply desired state")
			}
		}
	}
}

// Expiries returns when each accepted state that carries an expires stops
// being accepted, by source: "node", "group/{group}".
func (w *Watcher) Expiries() map[string]time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]time.Time{}
	add := func(source string, d *wire.DesiredState) {
		if d == nil || d.Expires == "" {
			return
		}
		if t, err := time.Parse(time.RFC3339Nano, d.Expires); err == nil {
			out[source] = t
		}
	}
	add("node", w.node)
	for g, d := range w.groups {
		add("group/"+g, d)
	}
	return out
}

// Snapshot returns the current merged state.
func (w *Watcher) Snapshot() Snapshot {
	w.mu.Lock()
	defer w.mu.Unlock()
	gs := make([]*wire.DesiredState, 0, len(w.cfg.Groups))
	for _, g := range w.cfg.Groups {
		gs = append(gs, w.groups[g])
	}
	gens := wire.AppliedGenerations{Node: w.gens.Node, Groups: maps.Clone(w.gens.Groups)}
	return Snapshot{Models: wire.Merge(w.node, gs), Generations: gens}
}

// Recheck looks again at the last message of each topic that was refused
// for its key, after the keys changed (a key list came into force): a state
// signed by a key that the list brings is taken without waiting for the
// writer to publish again.
func (w *Watcher) Recheck() {
	w.mu.Lock()
	pending := w.keyless
	w.keyless = map[string][]byte{}
	w.mu.Unlock()
	for topic, b := range pending {
		w.onMessage(topic, b)
	}
}

func (w *Watcher) onMessage(topic string, payload []byte) {
	if len(payload) == 0 {
		return // retained message cleared: keep the last state (desired state is never "nothing")
	}
	target, err := w.cfg.Topics.DesiredTarget(topic)
	if err != nil {
		w.rej.Observe(topic, err)
		return
	}
	d, _, err := wire.DecodeDesiredMessage(payload, target, w.cfg.Policy)
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.keyless, topic) // the latest message on a topic is the one to look at again
	if err != nil {
		var re *wire.RejectError
		if errors.As(err, &re) && (re.Reason == wire.ReasonUnknownKey || re.Reason == wire.ReasonRevokedKey || re.Reason == wire.ReasonExpired) {
			w.keyless[topic] = append([]byte(nil), payload...)
		}
		w.rej.Observe(topic, err)
		return
	}
	var last uint64
	group := ""
	if topic == w.cfg.Topics.NodeDesired(w.cfg.Node) {
		last = w.gens.Node
	} else if g, err := w.cfg.Topics.ParseGroupDesired(topic); err == nil {
		group = g
		last = w.gens.Groups[g]
	} else {
		w.rej.Observe(topic, err)
		return
	}
	switch {
	case d.Generation == last:
		// Duplicate (QoS 1 redelivery, or the retained copy after a reconnect).
		if (group == "" && w.node != nil) || (group != "" && w.groups[group] != nil) {
			return
		}
		// First sight after a restart of the generation we had accepted: take it.
	case d.Generation < last:
		w.rej.Observe(topic, wire.Reject(wire.KindDesired, wire.ReasonStaleGeneration,
			"generation %d, already at %d", d.Generation, last))
		return
	}
	if group == "" {
		w.node, w.gens.Node = &d, d.Generation
	} else {
		w.groups[group], w.gens.Groups[group] = &d, d.Generation
	}
	w.log.Info().Str("topic", topic).Uint64("generation", d.Generation).Msg("desired state accepted")
	select {
	case w.dirty <- struct{}{}:
	default:
	}
}
