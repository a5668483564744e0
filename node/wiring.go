package node

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/edgeai/edge-node/cgo/pinned"
	"github.com/edgeai/edge-node/internal/buildinfo"
	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/node/reconcile"
	"github.com/edgeai/edge-node/sync/broker"
	"github.com/edgeai/edge-node/sync/kubeedge/dmi"
	"github.com/edgeai/edge-node/sync/kubeedge/eventbus"
	"github.com/edgeai/edge-node/sync/mqttlink"
	"github.com/edgeai/edge-node/sync/transfer"
	"github.com/edgeai/edge-node/sync/wire"
)

// startReconcile builds the cloud link (unless disabled, or the embedded
// broker's port is taken: then the node serves without one), the
// reconciler over the serving owner, and starts them. Only a
// configuration error (bad TLS files, unreadable keys) fails start-up.
func (n *Node) startReconcile() error {
	cfg := n.cfg.Cloud
	clog := n.baseLog.With().Str("component", "cloud").Logger()
	nodeID, err := cfg.nodeID()
	if err != nil && !cfg.Disabled {
		return err
	}
	topics, err := wire.NewTopics(cfg.TopicRoot)
	if err != nil {
		return err
	}
	fetchWindow, err := transfer.ParseFetchWindow(cfg.FetchWindow)
	if err != nil {
		return fmt.Errorf("cloud.fetch_window: %w", err)
	}
	if !cfg.Disabled && !cfg.AllowUnsignedDesired && len(n.trust.base) == 0 && len(n.trust.roots) == 0 {
		return errors.New("cloud.allow_unsigned_desired is false but no trusted keys are configured (cloud.trusted_key_files, store.trusted_keys, cloud.root_key_files): no desired state could ever be accepted")
	}
	if cfg.Disabled {
		clog.Info().Msg("cloud link disabled")
	} else {
		lc := mqttlink.DefaultConfig()
		lc.BrokerURL = cfg.Broker
		lc.ClientID = "edge-node-" + nodeID
		lc.Username, lc.Password = cfg.Username, cfg.Password
		lc.TLS = mqttlink.TLSFiles{CAFile: cfg.TLS.CAFile, CertFile: cfg.TLS.CertFile, KeyFile: cfg.TLS.KeyFile, ServerName: cfg.TLS.ServerName}
		lc.BackoffMax = cfg.BackoffMax
		lc.MaxMessageBytes = cfg.MaxMessageBytes
		n.cloud, err = reconcile.NewCloud(reconcile.CloudConfig{
			NodeID: nodeID, Groups: cfg.Groups, Topics: topics, Keys: n.trust.ring, RootKeys: n.trust.roots, MaxModelBytes: cfg.MaxModelBytes,
			RequireSignedDesired: !cfg.AllowUnsignedDesired,
			Link:                 lc,
			// The embedded broker's bound counts the fixed header (≤ 5 bytes).
			Embedded: broker.Config{Addr: cfg.EmbeddedAddr, DataDir: filepath.Join(n.cfg.DataDir, "broker"),
				MaxPacketBytes: uint32(cfg.MaxMessageBytes + 5)},
			Window: cfg.Window, StallTimeout: cfg.StallTimeout, DownloadRate: cfg.DownloadRate, FetchWindow: fetchWindow,
		}, n.store, n.baseLog, n.reg)
		if errors.Is(err, reconcile.ErrEmbeddedBroker) {
			// Another process holds the port (a second node on this
			// device, a local mosquitto): serve offline rather than fail
			// or join a broker nobody configured.
			clog.Warn().Err(err).Msg("serving without a cloud link")
			n.cloud, err = nil, nil
		}
		if err != nil {
			return err
		}
	}
	rc := reconcile.Config{Store: n.store, Owner: n.serving, NodeID: nodeID, Groups: cfg.Groups, Labels: n.labels(),
		Agent: "edge-node/" + buildinfo.Version(), MaxTransferAttempts: cfg.TransferAttempts,
		Registerer: n.reg}
	if n.cloud != nil {
		rc.Fetcher = n.cloud
	}
	if n.rec, err = reconcile.New(rc, n.baseLog); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.bgCancel = cancel
	n.goBackground(func() { n.rec.Run(ctx) })
	if n.cloud != nil {
		return n.cloud.Start(n.rec)
	}
	return nil
}

func (n *Node) goBackground(f func()) {
	n.bg.Add(1)
	go func() { defer n.bg.Done(); f() }()
}

// labels are the node's own labels for fleet selection (the configured
// ones go over them): the pinned-memory mode is the accelerator hint.
func (n *Node) labels() map[string]string {
	l := map[string]string{}
	if n.pool != nil && n.pool.Mode() == pinned.CUDAHost {
		l["accelerator"] = "cuda"
	}
	for k, v := range n.cfg.Cloud.Labels {
		l[k] = v
	}
	return l
}

// kubeEdge runs the KubeEdge bridges of the node over the reconciler.
type kubeEdge struct {
	mapper *dmi.Mapper
	bridge *eventbus.Bridge
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startKubeEdge starts the enabled bridges (nil when none is). It never
// waits for EdgeCore: the mapper registers and the bridge connects in the
// background, retrying with backoff.
func startKubeEdge(n *Node) (*kubeEdge, error) {
	cfg := n.cfg.KubeEdge
	if !cfg.DMI.Enabled && !cfg.EventBus.Enabled {
		return nil, nil
	}
	log := n.baseLog.With().Str("component", "kubeedge").Logger()
	applier := reconcile.NewKubeEdge(n.rec, n.baseLog)
	k := &kubeEdge{}
	var reporters []reconcile.Reporter
	if cfg.DMI.Enabled {
		dc := cfg.DMI.Config
		m, err := dmi.New(dc, applier, n.baseLog, n.reg)
		if err != nil {
			return nil, err
		}
		k.mapper = m
		reporters = append(reporters, m)
	}
	if cfg.EventBus.Enabled {
		b, err := eventbus.New(cfg.EventBus.Config, applier, n.baseLog, n.reg)
		if err != nil {
			k.close()
			return nil, err
		}
		k.bridge = b
		reporters = append(reporters, b)
	}
	ctx, cancel := context.WithCancel(context.Background())
	k.cancel = cancel
	if k.mapper != nil {
		k.goRun(func() {
			if err := k.mapper.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				log.Error().Err(err).Msg("DMI mapper stopped")
			}
		})
	}
	if k.bridge != nil {
		k.goRun(func() {
			if err := k.bridge.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				log.Error().Err(err).Msg("EventBus bridge stopped")
			}
		})
	}
	k.goRun(func() { applier.WatchChanges(ctx, reporters...) })
	log.Info().Bool("dmi", k.mapper != nil).Bool("eventbus", k.bridge != nil).Msg("KubeEdge bridge started")
	return k, nil
}

func (k *kubeEdge) goRun(f func()) {
	k.wg.Add(1)
	go func() { defer k.wg.Done(); f() }()
}

// close stops the bridges (before the reconciler and the store close).
func (k *kubeEdge) close() error {
	if k.cancel != nil {
		k.cancel()
	}
	k.wg.Wait()
	var errs []error
	if k.mapper != nil {
		errs = append(errs, k.mapper.Close())
	}
	if k.bridge != nil {
		errs = append(errs, k.bridge.Close())
	}
	return errors.Join(errs...)
}

// ApplyDesired is how a desired-state source other than the MQTT topics
// drives the node: record want, the source's whole desired model map, at
// generation gen (which must be newer than the last one accepted from
// source, else reconcile.ErrStaleGeneration; persisted in the store), then
// reconcile in the background. Per model, the source that accepted a
// desired state most recently wins over the others.
func (n *Node) ApplyDesired(ctx context.Context, source string, gen uint64, want map[string]wire.ModelSpec) error {
	if n.rec == nil {
		return fmt.Errorf("apply desired state: the node is not running: %w", models.ErrInvalidArgument)
	}
	return n.rec.ApplyDesired(ctx, source, gen, want)
}
