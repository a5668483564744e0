// Package fleetsim runs many lightweight simulated nodes in one process
// against a real broker, for fleet-rollout tests and scale runs (edgectl
// simulate). Each node is the real link code — its own sync/mqttlink
// session (stable client id, persistent session, Last Will), a
// sync/desired watcher — publishing retained status, presence and events in
// exactly the wire.Status/ModelStatus/Event formats of docs/protocol.md. Only
// the inference side is a stand-in: on a new desired version a node
// "downloads" for Profile.Download, or with Profile.RealDownload fetches the
// manifest and every chunk from the broker with the node's transfer code and
// verifies them (download.go), runs the on-device gate for
// Profile.Gate when the strategy is canary or shadow, and fails it on a
// configured fraction of nodes per version (chosen by a hash of node and
// version, so the same nodes fail on every run). A failed gate is reported
// the way the node's on-device rollout reports it: state Failed, reason
// HealthRegression, the previous version still Active.
package fleetsim

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/desired"
	"github.com/edgeai/edge-node/sync/mqttlink"
	"github.com/edgeai/edge-node/sync/transfer"
	"github.com/edgeai/edge-node/sync/wire"
)

// Profile is the stand-in backend's behaviour.
type Profile struct {
	// Download is how long fetching a version takes; Gate how long the
	// on-device canary/shadow gate runs. Each is jittered ±25% per node.
	Download, Gate time.Duration
	// FailGate is, per version, the fraction (0–1) of nodes whose gate fails.
	FailGate map[string]float64
	// FailVerify is, per version, the fraction (0–1) of nodes whose download
	// fails verification (Failed, ChecksumMismatch).
	FailVerify map[string]float64
	// RealDownload fetches each version for real instead of sleeping for
	// Download: the retained manifest (verified with Config.Keys) and every
	// chunk from the broker, with the node's own transfer code, each file
	// hashed and checked (see download.go). A version whose manifest or
	// chunks fail is reported Failed with the node's reason.
	RealDownload bool
	// P99Ms is the latency the nodes report for a version: BaseP99Ms ×
	// P99Factor[version] (factor 1 when absent).
	BaseP99Ms float64
	P99Factor map[string]float64
}

// Config configures a simulated fleet.
type Config struct {
	BrokerURL string
	Topics    wire.Topics
	Nodes     int
	// Prefix names nodes Prefix-00000 …
	Prefix string
	// Groups every node is configured into.
	Groups []string
	// Labels returns node i's labels (default: arch, accelerator, site by i).
	Labels func(i int) map[string]string
	// Initial is the model → version every node runs Active at start.
	Initial map[string]string
	Profile Profile
	// ConnectParallel bounds concurrent connection attempts (default 64).
	ConnectParallel int
	KeepAlive       time.Duration
	// Keys verify manifests with Profile.RealDownload.
	Keys models.KeySet
	// DownloadRate bounds each node's chunk download, bytes per second
	// (transfer.Config.DownloadRate; 0: unlimited), with RealDownload.
	DownloadRate int64
}

// DefaultLabels spreads nodes over two archs, two accelerators and four
// sites.
func DefaultLabels(i int) map[string]string {
	arch := []string{"amd64", "arm64"}[i%2]
	acc := []string{"cpu", "cuda"}[(i/2)%2]
	return map[string]string{"arch": arch, "accelerator": acc, "site": fmt.Sprintf("site-%d", i%4)}
}

// Stats counts the messages and bytes the simulated nodes exchanged with
// the broker (chunks included with RealDownload), and the chunk bytes their
// downloads placed.
type Stats struct {
	Published, PublishedBytes int64
	Received, ReceivedBytes   int64
	DownloadedBytes           int64
}

// Fleet is a running simulated fleet.
type Fleet struct {
	cfg    Config
	log    zerolog.Logger
	nodes  []*node
	cancel context.CancelFunc
	wg     sync.WaitGroup

	pub, pubBytes, recv, recvBytes, downloadBytes atomic.Int64
}

// Start connects cfg.Nodes nodes and waits until every one is connected
// and has published its first status (or ctx ends).
func Start(ctx context.Context, cfg Config, log zerolog.Logger) (*Fleet, error) {
	if cfg.Nodes <= 0 || cfg.BrokerURL == "" {
		return nil, fmt.Errorf("fleetsim: Nodes and BrokerURL are required")
	}
	if cfg.Profile.RealDownload && len(cfg.Keys) == 0 {
		return nil, fmt.Errorf("fleetsim: RealDownload needs Keys to verify manifests")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "sim"
	}
	if cfg.Labels == nil {
		cfg.Labels = DefaultLabels
	}
	if cfg.Topics.Root == "" {
		cfg.Topics.Root = wire.DefaultRoot
	}
	if cfg.ConnectParallel <= 0 {
		cfg.ConnectParallel = 64
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = 60 * time.Second
	}
	if limit, err := raiseFDLimit(); err == nil && limit < uint64(cfg.Nodes)+256 {
		return nil, fmt.Errorf("fleetsim: open-files limit %d is too low for %d nodes (ulimit -n)", limit, cfg.Nodes)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	f := &Fleet{cfg: cfg, log: log.With().Str("component", "fleetsim").Logger(), cancel: cancel}
	rej, err := wire.NewRejecter(nil, f.log)
	if err != nil {
		cancel()
		return nil, err
	}
	sem := make(chan struct{}, cfg.ConnectParallel)
	for i := 0; i < cfg.Nodes; i++ {
		n, err := f.newNode(i, rej)
		if err != nil {
			f.Close()
			return nil, err
		}
		f.nodes = append(f.nodes, n)
	}
	for _, n := range f.nodes {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		}
		f.wg.Add(2)
		go func() { defer f.wg.Done(); _ = n.link.Run(runCtx) }()
		go func() { defer f.wg.Done(); _ = n.watcher.Run(runCtx) }()
		go func() {
			select {
			case <-n.ready:
			case <-ctx.Done():
			}
			<-sem
		}()
	}
	for _, n := range f.nodes {
		select {
		case <-n.ready:
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("fleetsim: waiting for nodes to connect: %w", ctx.Err())
		}
	}
	return f, nil
}

// Close disconnects every node (each publishes its offline presence).
func (f *Fleet) Close() {
	f.cancel()
	f.wg.Wait()
	for _, n := range f.nodes {
		n.link.Close()
	}
}

// Stats returns the message counts so far.
func (f *Fleet) Stats() Stats {
	return Stats{Published: f.pub.Load(), PublishedBytes: f.pubBytes.Load(),
		Received: f.recv.Load(), ReceivedBytes: f.recvBytes.Load(), DownloadedBytes: f.downloadBytes.Load()}
}

// IDs returns the node ids.
func (f *Fleet) IDs() []string {
	out := make([]string, len(f.nodes))
	for i, n := range f.nodes {
		out[i] = n.id
	}
	return out
}

// FirstDownloads returns, per node that started one, when its first
// download of model started (a rollout's achieved pace, nodes started per
// minute, is read from these).
func (f *Fleet) FirstDownloads(model string) map[string]time.Time {
	out := map[string]time.Time{}
	for _, n := range f.nodes {
		n.mu.Lock()
		if t, ok := n.started[model]; ok {
			out[n.id] = t
		}
		n.mu.Unlock()
	}
	return out
}

// Downloads returns, per node, the versions of model it started to
// download, in order.
func (f *Fleet) Downloads(model string) map[string][]string {
	out := map[string][]string{}
	for _, n := range f.nodes {
		n.mu.Lock()
		out[n.id] = append([]string(nil), n.downloads[model]...)
		n.mu.Unlock()
	}
	return out
}

// NodeGenerations returns the node-topic desired generation each node has
// accepted (1 after exactly one write to a fresh topic).
func (f *Fleet) NodeGenerations() map[string]uint64 {
	out := map[string]uint64{}
	for _, n := range f.nodes {
		n.mu.Lock()
		out[n.id] = n.gens.Node
		n.mu.Unlock()
	}
	return out
}

// Active returns each node's active version of model.
func (f *Fleet) Active(model string) map[string]string {
	out := map[string]string{}
	for _, n := range f.nodes {
		n.mu.Lock()
		out[n.id] = n.active[model]
		n.mu.Unlock()
	}
	return out
}

// GateFails reports whether node's gate fails for version under p (a hash
// of both below the configured fraction).
func (p Profile) GateFails(node, version string) bool {
	return picked(p.FailGate[version], node, version)
}

// VerifyFails reports whether node's download of version fails
// verification under p.
func (p Profile) VerifyFails(node, version string) bool {
	return picked(p.FailVerify[version], node, "verify\x00"+version)
}

func picked(frac float64, node, version string) bool {
	if frac <= 0 {
		return false
	}
	sum := sha256.Sum256([]byte(node + "\x00" + version))
	return float64(binary.BigEndian.Uint64(sum[:8])>>11)/float64(1<<53) < frac
}

type modelState struct {
	target  wire.ModelSpec // what desired state asks for
	state   string
	reason  string
	running context.CancelFunc
}

type node struct {
	f       *Fleet
	i       int
	id      string
	labels  map[string]string
	link    *mqttlink.Link
	watcher *desired.Watcher
	fetcher *transfer.Fetcher // with Profile.RealDownload
	ready   chan struct{}
	once    sync.Once

	mu        sync.Mutex // guards the fields below
	gens      wire.AppliedGenerations
	active    map[string]string // model → active version
	models    map[string]*modelState
	downloads map[string][]string
	started   map[string]time.Time // model → when its first download started
	seq       uint64
}

// countingLink counts what a node receives.
type countingLink struct {
	*mqttlink.Link
	f *Fleet
}

func (c countingLink) Subscribe(ctx context.Context, h mqttlink.Handler, filters ...string) error {
	return c.Link.Subscribe(ctx, func(topic string, b []byte) {
		c.f.recv.Add(1)
		c.f.recvBytes.Add(int64(len(b)))
		h(topic, b)
	}, filters...)
}

func (f *Fleet) newNode(i int, rej *wire.Rejecter) (*node, error) {
	id := fmt.Sprintf("%s-%05d", f.cfg.Prefix, i)
	tp := f.cfg.Topics
	will, _ := wire.Presence{Protocol: wire.Protocol, Node: id, Online: false}.Encode()
	lc := mqttlink.DefaultConfig()
	lc.BrokerURL, lc.ClientID, lc.KeepAlive = f.cfg.BrokerURL, "edge-node-"+id, f.cfg.KeepAlive
	lc.BackoffMin, lc.BackoffMax = 200*time.Millisecond, 5*time.Second
	lc.Will = &mqttlink.Message{Topic: tp.Presence(id), Payload: will, Retained: true}
	link, err := mqttlink.New(lc, nil, zerolog.Nop(), nil)
	if err != nil {
		return nil, err
	}
	n := &node{f: f, i: i, id: id, labels: f.cfg.Labels(i), link: link, ready: make(chan struct{}),
		active: maps.Clone(f.cfg.Initial), models: map[string]*modelState{}, downloads: map[string][]string{},
		started: map[string]time.Time{}}
	if n.active == nil {
		n.active = map[string]string{}
	}
	n.gens.Groups = map[string]uint64{}
	for _, g := range f.cfg.Groups {
		n.gens.Groups[g] = 0
	}
	w, err := desired.New(desired.Config{Topics: tp, Node: id, Groups: f.cfg.Groups}, countingLink{link, f}, n, rej, zerolog.Nop())
	if err != nil {
		return nil, err
	}
	n.watcher = w
	if f.cfg.Profile.RealDownload {
		n.fetcher, err = transfer.NewFetcher(transfer.Config{Topics: tp, DownloadRate: f.cfg.DownloadRate},
			countingLink{link, f}, newHashSink(), rej, zerolog.Nop(), nil)
		if err != nil {
			return nil, err
		}
	}
	link.OnConnect(func() {
		p, _ := wire.Presence{Protocol: wire.Protocol, Node: id, Online: true, Time: now()}.Encode()
		n.publish(tp.Presence(id), true, p)
		n.publishStatus()
		n.once.Do(func() { close(n.ready) })
	})
	return n, nil
}

func now() string { return time.Now().UTC().Format(time.RFC3339Nano) }

func (n *node) publish(topic string, retained bool, b []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.link.Publish(ctx, topic, retained, b); err != nil {
		n.f.log.Debug().Err(err).Str("node", n.id).Msg("publish")
		return
	}
	n.f.pub.Add(1)
	n.f.pubBytes.Add(int64(len(b)))
}

func (n *node) statusLocked() wire.Status {
	st := wire.Status{Protocol: wire.Protocol, Node: n.id, Time: now(), Agent: "edge-node-sim/0.1",
		Desired: wire.AppliedGenerations{Node: n.gens.Node, Groups: maps.Clone(n.gens.Groups)},
		Models:  map[string]wire.ModelStatus{}, Labels: n.labels}
	for m, v := range n.active {
		st.Models[m] = wire.ModelStatus{Version: v, State: "Active", P99Ms: n.f.cfg.Profile.p99(v)}
	}
	for m, ms := range n.models {
		if ms.target.Absent {
			continue
		}
		e := wire.ModelStatus{Version: ms.target.Version, State: ms.state, Reason: ms.reason, Rollout: ms.target.Rollout}
		if ms.state == "Active" || ms.state == "Canary" || ms.state == "Shadow" {
			e.P99Ms = n.f.cfg.Profile.p99(ms.target.Version)
		}
		st.Models[m] = e
	}
	return st
}

func (p Profile) p99(version string) float64 {
	if p.BaseP99Ms <= 0 {
		return 0
	}
	f, ok := p.P99Factor[version]
	if !ok {
		f = 1
	}
	return p.BaseP99Ms * f
}

func (n *node) publishStatus() {
	n.mu.Lock()
	st := n.statusLocked()
	n.mu.Unlock()
	b, err := st.Encode()
	if err != nil {
		n.f.log.Error().Err(err).Msg("encode status")
		return
	}
	n.publish(n.f.cfg.Topics.Status(n.id), true, b)
}

func (n *node) event(model, version, state, reason string, ref *wire.RolloutRef) {
	n.mu.Lock()
	n.seq++
	e := wire.Event{Protocol: wire.Protocol, Node: n.id, Seq: n.seq, Time: now(), Type: "version_state",
		Model: model, Version: version, State: state, Reason: reason, Rollout: ref}
	n.mu.Unlock()
	if b, err := e.Encode(); err == nil {
		n.publish(n.f.cfg.Topics.Events(n.id), false, b)
	}
}

// Apply is the stand-in reconciler (desired.Applier).
func (n *node) Apply(_ context.Context, s desired.Snapshot) error {
	n.mu.Lock()
	// Like the real node, report the generations accepted; list every
	// configured group (generation 0 until its first desired state) so a
	// rollout can target the group.
	newer := s.Generations.Node > n.gens.Node
	n.gens = s.Generations
	for _, g := range n.f.cfg.Groups {
		if _, ok := n.gens.Groups[g]; !ok {
			if n.gens.Groups == nil {
				n.gens.Groups = map[string]uint64{}
			}
			n.gens.Groups[g] = 0
		}
	}
	var start []func()
	for model, spec := range s.Models {
		cur := n.models[model]
		// A Failed version is tried again on a newer generation (the
		// protocol's retry rule: a re-written node desired state).
		if cur != nil && cur.target.Version == spec.Version && sameRef(cur.target.Rollout, spec.Rollout) &&
			!(cur.state == "Failed" && newer) {
			continue
		}
		if cur != nil && cur.running != nil {
			cur.running()
		}
		ms := &modelState{target: spec}
		n.models[model] = ms
		if spec.Version == n.active[model] {
			ms.state = "Active" // rollback to (or re-statement of) the running version
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		ms.running, ms.state = cancel, "Downloading"
		n.downloads[model] = append(n.downloads[model], spec.Version)
		if _, ok := n.started[model]; !ok {
			n.started[model] = time.Now()
		}
		start = append(start, func() { go n.roll(ctx, model, ms) })
	}
	for model, ms := range n.models {
		if _, ok := s.Models[model]; !ok {
			if ms.running != nil {
				ms.running()
			}
			delete(n.models, model)
			delete(n.active, model)
		}
	}
	n.mu.Unlock()
	n.publishStatus()
	for _, f := range start {
		f()
	}
	return nil
}

func sameRef(a, b *wire.RolloutRef) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func (n *node) jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	sum := sha256.Sum256([]byte(fmt.Sprint(n.id, d)))
	frac := float64(binary.BigEndian.Uint16(sum[:2]))/65535.0 - 0.5 // ±0.5
	return d + time.Duration(float64(d)*frac/2)
}

// roll is one version's way through the stand-in backend.
func (n *node) roll(ctx context.Context, model string, ms *modelState) {
	v, ref := ms.target.Version, ms.target.Rollout
	set := func(state, reason string) bool {
		n.mu.Lock()
		if ctx.Err() != nil || n.models[model] != ms {
			n.mu.Unlock()
			return false
		}
		ms.state, ms.reason = state, reason
		if state == "Active" {
			n.active[model] = v
		}
		n.mu.Unlock()
		n.publishStatus()
		n.event(model, v, state, reason, ref)
		return true
	}
	sleep := func(d time.Duration) bool {
		t := time.NewTimer(n.jitter(d))
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	n.event(model, v, "Downloading", "", ref)
	p := n.f.cfg.Profile
	if p.RealDownload {
		reason, ok := n.download(ctx, model, v, set)
		if !ok {
			return
		}
		if reason != "" {
			set("Failed", reason)
			return
		}
	} else if !sleep(p.Download) {
		return
	}
	if p.VerifyFails(n.id, v) {
		set("Failed", "ChecksumMismatch")
		return
	}
	kind := wire.StrategyImmediate
	if ms.target.Strategy != nil {
		kind = ms.target.Strategy.Kind
	}
	if kind != wire.StrategyImmediate {
		state := "Canary"
		if kind == wire.StrategyShadow {
			state = "Shadow"
		}
		if !set(state, "") || !sleep(p.Gate) {
			return
		}
		if p.GateFails(n.id, v) {
			set("Failed", "HealthRegression")
			return
		}
	} else if p.GateFails(n.id, v) {
		set("Failed", "WarmupFailed")
		return
	}
	set("Active", "")
}
