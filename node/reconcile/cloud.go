package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/broker"
	"github.com/edgeai/edge-node/sync/desired"
	"github.com/edgeai/edge-node/sync/mqttlink"
	"github.com/edgeai/edge-node/sync/transfer"
	"github.com/edgeai/edge-node/sync/wire"
)

// CloudConfig configures the node's side of the cloud link.
type CloudConfig struct {
	NodeID string
	Groups []string
	Topics wire.Topics
	// Keys verify manifests and signed desired state (the store's keyring).
	Keys *models.Keyring
	// RootKeys verify the key list on Topics.Keys, which puts keys in
	// force in Keys; none: the node does not subscribe to it.
	RootKeys models.KeySet
	// RequireSignedDesired refuses unsigned desired state.
	RequireSignedDesired bool
	MaxModelBytes        int64
	// Link is the MQTT session's configuration; an empty BrokerURL starts
	// the embedded broker (Embedded) and connects to it.
	Link     mqttlink.Config
	Embedded broker.Config
	// Window, StallTimeout, DownloadRate and FetchWindow configure chunk
	// transfers (transfer.Config).
	Window       int
	StallTimeout time.Duration
	DownloadRate int64
	FetchWindow  transfer.FetchWindow
}

// CloudStore is what the cloud link needs from the model store: chunks to
// place fetched bytes, and the outbox of reports it publishes as events.
type CloudStore interface {
	transfer.BlobStore
	Reports(ctx context.Context, limit int) ([]models.Report, error)
	AckReports(ctx context.Context, upTo uint64) error
	// SetKeyList keeps the signed key list in force across restarts.
	SetKeyList(ctx context.Context, b []byte) error
}

// Cloud is the node's side of the cloud link (docs/protocol.md): the
// embedded broker when no broker is configured, the MQTT link, the chunk
// fetcher over the model store, the desired-state watcher feeding the
// reconciler, and status, presence and events. It implements Fetcher.
//
// Start-up order (NewCloud, then Start once the reconciler exists; the node
// calls both after the models are loaded and the HTTP listener is open, so
// nothing here delays serving): embedded broker → link (Run in a
// goroutine: connection attempts never block) → fetcher → watcher and
// publisher. Close stops them in reverse: watcher and publisher, then the
// link (publishes the will, disconnects), then the embedded broker.
type Cloud struct {
	cfg   CloudConfig
	log   zerolog.Logger // component=cloud
	base  zerolog.Logger // NewCloud's: the parts it builds add their own component
	store CloudStore
	reg   prometheus.Registerer

	broker  *broker.Broker // nil unless this node runs the embedded broker
	link    *mqttlink.Link
	rej     *wire.Rejecter
	sink    *transfer.StoreSink
	fetcher *transfer.Fetcher
	rec     *Reconciler
	watcher *desired.Watcher
	keyMu   sync.Mutex // one key list change at a time (onKeyList)

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// ErrEmbeddedBroker wraps the error of an embedded broker that could not
// start (its port taken): the node then serves without a cloud link.
var ErrEmbeddedBroker = errors.New("embedded broker not started")

// NewCloud builds the link, its broker and the fetcher; nothing connects
// until Start.
func NewCloud(cfg CloudConfig, st CloudStore, log zerolog.Logger, reg prometheus.Registerer) (_ *Cloud, err error) {
	c := &Cloud{cfg: cfg, log: log.With().Str("component", "cloud").Str("node_id", cfg.NodeID).Logger(), base: log, store: st, reg: reg}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if cfg.Link.BrokerURL == "" {
		b, err := broker.Start(cfg.Embedded, log)
		if err != nil {
			return nil, fmt.Errorf("%w on %s: %w", ErrEmbeddedBroker, cfg.Embedded.Addr, err)
		}
		c.broker = b
		c.cfg.Link.BrokerURL = b.URL()
		c.log.Info().Str("addr", b.Addr()).Msg("embedded broker started")
	}
	if c.rej, err = wire.NewRejecter(reg, c.log); err != nil {
		return nil, err
	}
	if err := registerKeyListMetrics(reg, cfg.Keys); err != nil {
		return nil, err
	}
	offline, err := wire.Presence{Protocol: wire.Protocol, Node: cfg.NodeID, Online: false}.Encode()
	if err != nil {
		return nil, err
	}
	lc := c.cfg.Link
	lc.Will = &mqttlink.Message{Topic: cfg.Topics.Presence(cfg.NodeID), Payload: offline, Retained: true}
	limit := lc.MaxMessageBytes
	if limit == 0 {
		limit = mqttlink.DefaultMaxMessageBytes
	}
	lc.OnOversize = func(topic string, size int64) {
		c.rej.Observe(topic, wire.Reject(cfg.Topics.KindOf(topic), wire.ReasonOversize,
			"%d-byte payload over the %d-byte message limit (cloud.max_message_bytes), discarded unread", size, limit))
	}
	if c.link, err = mqttlink.New(lc, &reportOutbox{c: c}, log, reg); err != nil {
		return nil, fmt.Errorf("cloud link: %w", err)
	}
	c.link.OnConnect(c.onConnect)
	c.sink = transfer.NewStoreSink(st)
	if c.fetcher, err = transfer.NewFetcher(transfer.Config{Topics: cfg.Topics, Window: cfg.Window, StallTimeout: cfg.StallTimeout, DownloadRate: cfg.DownloadRate, FetchWindow: cfg.FetchWindow},
		c.link, c.sink, c.rej, log, reg); err != nil {
		return nil, err
	}
	return c, nil
}

// URL is the broker the link connects to.
func (c *Cloud) URL() string { return c.cfg.Link.BrokerURL }

// Start connects and starts the watcher (feeding rec) and the publisher of
// status and events. It never waits for the broker.
func (c *Cloud) Start(rec *Reconciler) error {
	c.rec = rec
	initial, err := rec.Generations(context.Background())
	if err != nil {
		return err
	}
	w, err := desired.New(desired.Config{Topics: c.cfg.Topics, Node: c.cfg.NodeID, Groups: c.cfg.Groups, Initial: initial,
		Policy: wire.DesiredPolicy{Keys: c.cfg.Keys, RequireSigned: c.cfg.RequireSignedDesired}},
		c.link, rec, c.rej, c.base)
	if err != nil {
		return err
	}
	c.watcher = w
	if c.reg != nil {
		if err := c.reg.Register(desiredExpiryCollector{w}); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	if len(c.cfg.RootKeys) > 0 {
		// Registered before the watcher's: on connect the key list is
		// asked for first, and a desired state that arrives before a list
		// naming its key is looked at again once the list is in force.
		if err := c.link.Subscribe(ctx, c.onKeyList, c.cfg.Topics.Keys()); err != nil {
			cancel()
			return err
		}
	}
	// Subscribed before the link runs: onConnect's kick is what publishes
	// the retained status, and a subscriber that came later would miss it
	// (the node then reported no status until its next change).
	kicks := rec.Subscribe(ctx)
	c.goRun(func() { _ = c.link.Run(ctx) })
	c.goRun(func() { c.publishLoop(ctx, kicks) })
	c.goRun(func() {
		if err := w.Run(ctx); err != nil {
			c.log.Error().Err(err).Msg("desired-state watcher stopped")
		}
	})
	c.log.Info().Str("broker", c.URL()).Strs("groups", c.cfg.Groups).Msg("cloud link started")
	return nil
}

func (c *Cloud) goRun(f func()) {
	c.wg.Add(1)
	go func() { defer c.wg.Done(); f() }()
}

// Connected implements Fetcher.
func (c *Cloud) Connected() bool { return c.link.IsConnected() }

// Fetch implements Fetcher. Fetches of several models run at once; what an
// attempt that ended early wrote stays resumable in the store.
func (c *Cloud) Fetch(ctx context.Context, m models.Manifest, progress func(transfer.Progress)) (transfer.Result, error) {
	return c.fetcher.Fetch(ctx, m, progress)
}

// CheckManifest implements Fetcher.
func (c *Cloud) CheckManifest(b []byte, model, version string) error {
	topic := c.cfg.Topics.Manifest(model, version)
	m, _, err := wire.DecodeSignedManifest(b, c.cfg.Keys, c.cfg.MaxModelBytes)
	if err == nil && (m.Model != model || m.Version != version) {
		err = wire.Reject(wire.KindManifest, wire.ReasonBadField, "manifest for %s/%s on the topic of %s/%s", m.Model, m.Version, model, version)
	}
	if err != nil {
		c.rej.Observe(topic, err)
	}
	return err
}

// manifestWait bounds the wait for a retained manifest after the SUBACK
// (the broker sends a retained message right after it; none in this time
// means it is not published yet).
const manifestWait = 2 * time.Second

// ReadManifest implements Fetcher: the first message that arrives after
// subscribing to the manifest's topic, or false when none came within
// manifestWait.
func (c *Cloud) ReadManifest(ctx context.Context, model, version string) ([]byte, bool) {
	topic := c.cfg.Topics.Manifest(model, version)
	got := make(chan []byte, 1)
	h := func(_ string, payload []byte) {
		select {
		case got <- append([]byte(nil), payload...):
		default:
		}
	}
	if err := c.link.Subscribe(ctx, h, topic); err != nil {
		return nil, false
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = c.link.Unsubscribe(uctx, topic)
	}()
	t := time.NewTimer(manifestWait)
	defer t.Stop()
	select {
	case b := <-got:
		return b, len(b) > 0 // an empty retained payload is a deletion
	case <-t.C:
	case <-ctx.Done():
	}
	return nil, false
}

// onKeyList puts a newer key list in force: verified by a root key, not
// expired, above the version held; stored first, so that what the node
// trusts after a restart is what it trusted before. The desired-state
// watcher then looks again at states it refused for their key, and the
// reconciler at versions that failed for their manifest's signature.
func (c *Cloud) onKeyList(topic string, payload []byte) {
	if len(payload) == 0 {
		return // a cleared retained list changes nothing: trust is never dropped by silence
	}
	c.keyMu.Lock()
	defer c.keyMu.Unlock()
	l, err := wire.DecodeKeyList(payload, c.cfg.RootKeys)
	if err == nil && l.Expired(time.Now()) {
		err = wire.Reject(wire.KindKeys, wire.ReasonExpired, "key list version %d expired at %s", l.Version, l.Expires)
	}
	if err == nil {
		if cur, ok := c.cfg.Keys.List(); ok && l.Version <= cur.Version {
			if l.Version == cur.Version {
				return // the retained copy of the list in force
			}
			err = wire.Reject(wire.KindKeys, wire.ReasonStaleGeneration, "key list version %d, version %d in force", l.Version, cur.Version)
		}
	}
	if err != nil {
		c.rej.Observe(topic, err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.store.SetKeyList(ctx, payload); err != nil {
		c.log.Error().Err(err).Uint64("key_list_version", l.Version).Msg("storing the key list; not in force")
		return
	}
	if err := c.cfg.Keys.SetList(l.Trust()); err != nil {
		c.rej.Observe(topic, wire.Reject(wire.KindKeys, wire.ReasonStaleGeneration, "%v", err))
		return
	}
	c.log.Info().Uint64("key_list_version", l.Version).Str("expires", l.Expires).Int("keys", len(l.Keys)).
		Int("revoked", len(l.Revoked)).Msg("key list in force")
	if c.watcher != nil {
		c.watcher.Recheck()
	}
	if c.rec != nil {
		c.rec.TrustChanged()
	}
}

// registerKeyListMetrics exports the key list in force, read at scrape
// time: its version and its expiry (alert before time() passes it: nodes
// then stop trusting the list's keys). No series without a list.
func registerKeyListMetrics(reg prometheus.Registerer, keys *models.Keyring) error {
	if reg == nil || keys == nil {
		return nil
	}
	return reg.Register(keyListCollector{keys})
}

type keyListCollector struct{ keys *models.Keyring }

var (
	keyListVersionDesc = prometheus.NewDesc("edge_key_list_version",
		"Version of the signed key list in force (edgectl keys publish).", nil, nil)
	keyListExpiresDesc = prometheus.NewDesc("edge_key_list_expires_timestamp_seconds",
		"When the key list in force expires: its keys are no longer trusted after it.", nil, nil)
)

func (k keyListCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- keyListVersionDesc
	ch <- keyListExpiresDesc
}

func (k keyListCollector) Collect(ch chan<- prometheus.Metric) {
	l, ok := k.keys.List()
	if !ok {
		return
	}
	ch <- prometheus.MustNewConstMetric(keyListVersionDesc, prometheus.GaugeValue, float64(l.Version))
	ch <- prometheus.MustNewConstMetric(keyListExpiresDesc, prometheus.GaugeValue, float64(l.Expires.Unix()))
}

// desiredExpiryCollector exports when each accepted desired state expires
// (edgectl deploy --expires): alert before time() passes it, since the node
// then refuses the state if it is delivered again, and a broker that
// withholds renewals shows here first.
type desiredExpiryCollector struct{ w *desired.Watcher }

var desiredExpiresDesc = prometheus.NewDesc("edge_desired_expires_timestamp_seconds",
	"When the accepted desired state of a source (node, group/{group}) expires; no series for one without an expiry.",
	[]string{"source"}, nil)

func (d desiredExpiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- desiredExpiresDesc }

func (d desiredExpiryCollector) Collect(ch chan<- prometheus.Metric) {
	for source, t := range d.w.Expiries() {
		ch <- prometheus.MustNewConstMetric(desiredExpiresDesc, prometheus.GaugeValue, float64(t.Unix()), source)
	}
}

// onConnect runs after every (re)connection: presence, then the workers
// look again (a transfer waiting for the broker goes on) and status and
// events go out.
func (c *Cloud) onConnect() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	online, err := wire.Presence{Protocol: wire.Protocol, Node: c.cfg.NodeID, Online: true, Time: now()}.Encode()
	if err == nil {
		err = c.link.Publish(ctx, c.cfg.Topics.Presence(c.cfg.NodeID), true, online)
	}
	if err != nil {
		c.log.Warn().Err(err).Msg("publishing presence")
	}
	if c.rec != nil {
		c.rec.Kick()
	}
}

// publishLoop publishes the retained status and flushes the outbox of
// events whenever the reconciler or the serving owner reports a change
// (and on connect, through the reconciler's kick).
func (c *Cloud) publishLoop(ctx context.Context, kicks <-chan struct{}) {
	for range kicks {
		c.link.KickOutbox()
		if !c.link.IsConnected() {
			continue // republished on connect
		}
		b, err := c.rec.Status(ctx).Encode()
		if err != nil {
			c.log.Error().Err(err).Msg("encoding status")
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := c.link.Publish(pctx, c.cfg.Topics.Status(c.cfg.NodeID), true, b); err != nil && ctx.Err() == nil {
			c.log.Debug().Err(err).Msg("publishing status (again on connect)")
		}
		cancel()
	}
}

// Close stops everything in reverse start-up order; idempotent.
func (c *Cloud) Close() error {
	c.closeOnce.Do(func() {
		var errs []error
		if c.cancel != nil {
			c.cancel() // watcher, publisher; link.Run publishes the will and disconnects
		}
		c.wg.Wait()
		if c.link != nil {
			errs = append(errs, c.link.Close())
		}
		if c.sink != nil {
			errs = append(errs, c.sink.Close()) // open ingests stay resumable
		}
		if c.broker != nil {
			errs = append(errs, c.broker.Close())
		}
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}

// reportOutbox is the link's outbox over the model store's outbox of
// Reports: the store writes a report in the same bbolt transaction as each
// state change (so none is lost or invented), bounded (oldest dropped
// first, counted in edge_catalog_outbox_dropped_total). The link publishes
// them as events, strictly in order, and acks each after its PUBACK. There
// is no second queue: status is retained and republished whole on every
// connect, so it needs none.
type reportOutbox struct{ c *Cloud }

var _ mqttlink.Outbox = (*reportOutbox)(nil)

func (o *reportOutbox) Oldest(ctx context.Context, n int) ([]mqttlink.OutboxMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rs, err := o.c.store.Reports(ctx, n)
	if err != nil {
		return nil, err
	}
	cfg := o.c.cfg
	out := make([]mqttlink.OutboxMessage, 0, len(rs))
	for _, r := range rs {
		e := wire.Event{Protocol: wire.Protocol, Node: cfg.NodeID, Seq: r.Seq, Time: r.At.UTC().Format(time.RFC3339Nano),
			Type: "version_state", Model: r.Model, Version: r.Version, State: string(r.To), Reason: string(r.Reason),
			Detail: truncate(r.Detail, 1024)}
		if o.c.rec != nil {
			if ms, ok := o.c.rec.RolloutOf(r.Model, r.Version); ok {
				e.Rollout = ms
			}
		}
		b, err := e.Encode()
		if err != nil {
			// A report that does not make a valid event (a name the wire
			// refuses) is acked and skipped rather than blocking the queue.
			o.c.log.Warn().Err(err).Uint64("seq", r.Seq).Msg("report cannot be sent as an event; skipped")
			b = nil
		}
		out = append(out, mqttlink.OutboxMessage{Seq: r.Seq, Topic: cfg.Topics.Events(cfg.NodeID), Payload: b})
	}
	return o.skipEmpty(ctx, out)
}

// skipEmpty acks the leading messages that could not be encoded.
func (o *reportOutbox) skipEmpty(ctx context.Context, ms []mqttlink.OutboxMessage) ([]mqttlink.OutboxMessage, error) {
	out := ms[:0]
	for _, m := range ms {
		if m.Payload == nil {
			if len(out) == 0 {
				if err := o.Remove(ctx, m.Seq); err != nil {
					return nil, err
				}
				continue
			}
			break // keep the order: stop before it, it is acked next time
		}
		out = append(out, m)
	}
	return out, nil
}

func (o *reportOutbox) Remove(ctx context.Context, seq uint64) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return o.c.store.AckReports(ctx, seq)
}

func (o *reportOutbox) Len(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rs, err := o.c.store.Reports(ctx, 0)
	return len(rs), err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
