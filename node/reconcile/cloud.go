package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/broker"
	"github.com/edgeai/edge-node/sync/desired"
	"github.com/edgeai/edge-node/sync/mqttlink"
	"github.com/edgeai/edge-node/sync/outbox"
	"github.com/edgeai/edge-node/sync/transfer"
	"github.com/edgeai/edge-node/sync/wire"
)

// cloud is the node's side of the cloud link (docs/protocol.md,
// docs/architecture-cloud.md): the embedded broker when no broker is
// configured, the MQTT link, the desired-state watcher, the chunk fetcher
// over the model store, the reconciler, and status, presence and events.
//
// Start-up order (startCloud, called by New after the models are loaded and
// the HTTP listener is open, so nothing here delays serving): embedded
// broker → link (Run in a goroutine: connection attempts never block) →
// fetcher and reconciler → watcher. close stops them in reverse: watcher
// and reconciler, then the link (publishes the will, disconnects), then
// the embedded broker; the node closes the store after that.
type cloud struct {
	n      *Node
	log    zerolog.Logger
	nodeID string
	topics wire.Topics
	keys   models.KeySet

	broker  *broker.Broker // nil unless this node runs the embedded broker
	link    *mqttlink.Link
	rej     *wire.Rejecter
	fetcher *transfer.Fetcher
	watcher *desired.Watcher
	rec     *reconciler

	cancel context.CancelFunc
	wg     sync.WaitGroup

	statusKick chan struct{} // capacity 1: the status changed or the link came up
	closeOnce  sync.Once
}

// startCloud starts the cloud side, or returns nil when it is disabled or
// cannot run (no broker configured and the embedded broker's port taken):
// the node then serves offline. Only a configuration error (bad TLS files,
// unreadable keys) fails start-up.
func startCloud(n *Node, keys models.KeySet) (*cloud, error) {
	cfg := n.cfg.Cloud
	log := n.baseLog.With().Str("component", "cloud").Logger()
	if cfg.Disabled {
		log.Info().Msg("cloud link disabled")
		return nil, nil
	}
	nodeID, err := cfg.nodeID()
	if err != nil {
		return nil, err
	}
	topics, err := wire.NewTopics(cfg.TopicRoot)
	if err != nil {
		return nil, err
	}
	c := &cloud{n: n, log: log.With().Str("node_id", nodeID).Logger(), nodeID: nodeID, topics: topics, keys: keys,
		statusKick: make(chan struct{}, 1)}
	url := cfg.Broker
	if url == "" {
		b, err := broker.Start(broker.Config{Addr: cfg.EmbeddedAddr, DataDir: filepath.Join(n.cfg.DataDir, "broker")}, n.baseLog)
		if err != nil {
			// Another process holds the port (a second node on this
			// device, a local mosquitto): serve offline rather than fail
			// or join a broker nobody configured.
			c.log.Warn().Err(err).Str("addr", cfg.EmbeddedAddr).Msg("embedded broker not started; serving without a cloud link")
			return nil, nil
		}
		c.broker = b
		url = b.URL()
		c.log.Info().Str("addr", b.Addr()).Msg("embedded broker started")
	}
	ok := false
	defer func() {
		if !ok {
			c.close()
		}
	}()
	if err := c.build(url); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.goRun(func() { _ = c.link.Run(ctx) })
	c.goRun(func() { c.rec.run(ctx) })
	c.goRun(func() { c.publishLoop(ctx) })
	c.goRun(func() {
		if err := c.watcher.Run(ctx); err != nil {
			c.log.Error().Err(err).Msg("desired-state watcher stopped")
		}
	})
	ok = true
	c.log.Info().Str("broker", url).Strs("groups", cfg.Groups).Msg("cloud link started")
	return c, nil
}

func (c *cloud) goRun(f func()) {
	c.wg.Add(1)
	go func() { defer c.wg.Done(); f() }()
}

// build creates the link, fetcher, reconciler and watcher (no goroutines).
func (c *cloud) build(url string) error {
	cfg := c.n.cfg.Cloud
	reg := c.n.reg
	var err error
	if c.rej, err = wire.NewRejecter(reg, c.n.baseLog.With().Str("component", "cloud").Logger()); err != nil {
		return err
	}
	offline, err := wire.Presence{Protocol: wire.Protocol, Node: c.nodeID, Online: false}.Encode()
	if err != nil {
		return err
	}
	lc := mqttlink.DefaultConfig()
	lc.BrokerURL = url
	lc.ClientID = "edge-node-" + c.nodeID
	lc.Username, lc.Password = cfg.Username, cfg.Password
	lc.TLS = mqttlink.TLSFiles{CAFile: cfg.TLS.CAFile, CertFile: cfg.TLS.CertFile, KeyFile: cfg.TLS.KeyFile, ServerName: cfg.TLS.ServerName}
	lc.BackoffMax = cfg.BackoffMax
	lc.Will = &mqttlink.Message{Topic: c.topics.Presence(c.nodeID), Payload: offline, Retained: true}
	if c.link, err = mqttlink.New(lc, &reportOutbox{c: c}, c.n.baseLog, reg); err != nil {
		return fmt.Errorf("cloud link: %w", err)
	}
	c.link.OnConnect(c.onConnect)
	sink := transfer.NewStoreSink(context.Background(), c.n.store)
	if c.fetcher, err = transfer.NewFetcher(transfer.Config{Topics: c.topics, Window: cfg.Window, StallTimeout: cfg.StallTimeout},
		c.link, sink, c.rej, c.n.baseLog, reg); err != nil {
		return err
	}
	if c.rec, err = newReconciler(c, sink); err != nil {
		return err
	}
	initial, err := c.rec.loadGenerations(context.Background())
	if err != nil {
		return err
	}
	c.watcher, err = desired.New(desired.Config{Topics: c.topics, Node: c.nodeID, Groups: cfg.Groups, Initial: initial},
		c.link, c.rec, c.rej, c.n.baseLog)
	return err
}

// onConnect runs after every (re)connection: presence, status, outbox, and
// a reconcile pass (a transfer waiting for the broker goes on).
func (c *cloud) onConnect() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	online, err := wire.Presence{Protocol: wire.Protocol, Node: c.nodeID, Online: true, Time: now()}.Encode()
	if err == nil {
		err = c.link.Publish(ctx, c.topics.Presence(c.nodeID), true, online)
	}
	if err != nil {
		c.log.Warn().Err(err).Msg("publishing presence")
	}
	c.kickStatus()
	c.link.KickOutbox()
	c.rec.kick()
}

func (c *cloud) kickStatus() {
	select {
	case c.statusKick <- struct{}{}:
	default:
	}
}

// publishLoop publishes the retained status whenever it changed (and on
// connect), and wakes the outbox flusher now and then: the store writes
// reports in its own transactions (the admin API and boot change states
// too), so the flusher polls it every outboxPoll besides being kicked.
func (c *cloud) publishLoop(ctx context.Context) {
	const outboxPoll = 2 * time.Second
	t := time.NewTicker(outboxPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.link.KickOutbox()
			continue
		case <-c.statusKick:
		}
		if !c.link.IsConnected() {
			continue // republished on connect
		}
		b, err := c.rec.status(ctx).Encode()
		if err != nil {
			c.log.Error().Err(err).Msg("encoding status")
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := c.link.Publish(pctx, c.topics.Status(c.nodeID), true, b); err != nil && ctx.Err() == nil {
			c.log.Debug().Err(err).Msg("publishing status (again on connect)")
		}
		cancel()
	}
}

// close stops everything in reverse start-up order; idempotent.
func (c *cloud) close() error {
	var errs []error
	c.closeOnce.Do(func() {
		if c.cancel != nil {
			c.cancel() // watcher, reconciler, publisher; link.Run publishes the will and disconnects
		}
		c.wg.Wait()
		if c.link != nil {
			errs = append(errs, c.link.Close())
		}
		if c.broker != nil {
			errs = append(errs, c.broker.Close())
		}
	})
	return errors.Join(errs...)
}

func now() string { return time.Now().UTC().Format(time.RFC3339Nano) }

// reportOutbox is the link's outbox over the model store's outbox of
// Reports: the store writes a report in the same bbolt transaction as each
// state change (so none is lost or invented), bounded (oldest dropped
// first, counted in edge_catalog_outbox_dropped_total). The link publishes
// them as events, strictly in order, and acks each after its PUBACK. There
// is no second queue: status is retained and republished whole on every
// connect, so it needs none.
type reportOutbox struct{ c *cloud }

var _ mqttlink.Outbox = (*reportOutbox)(nil)

func (o *reportOutbox) Append(topic string, retained bool, payload []byte) (int, error) {
	return 0, errors.New("cloud: events come from the model store's reports; nothing else is queued")
}

func (o *reportOutbox) Oldest(n int) ([]outbox.Message, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rs, err := o.c.n.store.Reports(ctx, n)
	if err != nil {
		return nil, err
	}
	out := make([]outbox.Message, 0, len(rs))
	for _, r := range rs {
		e := wire.Event{Protocol: wire.Protocol, Node: o.c.nodeID, Seq: r.Seq, Time: r.At.UTC().Format(time.RFC3339Nano),
			Type: "version_state", Model: r.Model, Version: r.Version, State: string(r.To), Reason: string(r.Reason),
			Detail: truncate(r.Detail, 1024)}
		if ms, ok := o.c.rec.rolloutOf(r.Model, r.Version); ok {
			e.Rollout = ms
		}
		b, err := e.Encode()
		if err != nil {
			// A report that does not make a valid event (a name the wire
			// refuses) is acked and skipped rather than blocking the queue.
			o.c.log.Warn().Err(err).Uint64("seq", r.Seq).Msg("report cannot be sent as an event; skipped")
			b = nil
		}
		out = append(out, outbox.Message{Seq: r.Seq, Topic: o.c.topics.Events(o.c.nodeID), Payload: b})
	}
	return skipEmpty(o, out)
}

// skipEmpty acks the leading messages that could not be encoded.
func skipEmpty(o *reportOutbox, ms []outbox.Message) ([]outbox.Message, error) {
	out := ms[:0]
	for _, m := range ms {
		if m.Payload == nil {
			if len(out) == 0 {
				if err := o.Remove(m.Seq); err != nil {
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

func (o *reportOutbox) Remove(seq uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return o.c.n.store.AckReports(ctx, seq)
}

func (o *reportOutbox) Len() (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rs, err := o.c.n.store.Reports(ctx, 0)
	return len(rs), err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

// cloudMetrics are the reconciler's metrics.
type cloudMetrics struct {
	bytesDone  *prometheus.GaugeVec
	bytesTotal *prometheus.GaugeVec
	applies    *prometheus.CounterVec
}

func newCloudMetrics(reg prometheus.Registerer) (*cloudMetrics, error) {
	m := &cloudMetrics{
		bytesDone: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "edge_cloud_download_bytes_done",
			Help: "Bytes of the version being downloaded that are stored and verified, per model."}, []string{"model"}),
		bytesTotal: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "edge_cloud_download_bytes_total",
			Help: "Size of the version being downloaded, per model."}, []string{"model"}),
		applies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edge_cloud_reconcile_total",
			Help: "Reconciliations of one model to its desired version, by result (active, failed, waiting)."}, []string{"result"}),
	}
	for _, col := range []prometheus.Collector{m.bytesDone, m.bytesTotal, m.applies} {
		if err := reg.Register(col); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// trustedKeys is the one key set that verifies manifests (in the store's
// Announce and on the link): store.trusted_keys plus cloud.trusted_key_files.
func trustedKeys(cfg Config) (models.KeySet, error) {
	ks, err := models.ParseTrustedKeys(cfg.Store.TrustedKeys)
	if err != nil {
		return nil, fmt.Errorf("store.trusted_keys: %w", err)
	}
	for _, f := range cfg.Cloud.TrustedKeyFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("cloud.trusted_key_files: %w", err)
		}
		pub, err := models.ParsePublicKeyPEM(b)
		if err != nil {
			return nil, fmt.Errorf("cloud.trusted_key_files: %s: %w", f, err)
		}
		ks.Add(pub)
	}
	return ks, nil
}

// ApplyDesired is how a desired-state source other than the MQTT topics (a
// KubeEdge bridge) drives the node: record want, the source's whole desired
// model map, at generation gen (which must be newer than the last one
// accepted from source, else ErrStaleGeneration; persisted in the store),
// then reconcile in the background. Per model, the source that accepted a
// desired state most recently wins over the others. It fails when the cloud
// link is disabled.
func (n *Node) ApplyDesired(ctx context.Context, source string, gen uint64, want map[string]wire.ModelSpec) error {
	if n.cloud == nil {
		return fmt.Errorf("apply desired state: the cloud link is not running: %w", models.ErrInvalidArgument)
	}
	return n.cloud.rec.applyDesired(ctx, source, gen, want)
}
