// Command edge-controller is the Kubernetes controller of ModelVersion
// resources (sync/kube): it turns each one into a fleet rollout over MQTT,
// keeps the rollout's state in the resource's status, and elects a leader
// among its replicas with a Lease. deploy/kubernetes/ installs it.
//
// This file only parses flags, connects the MQTT session and the
// Kubernetes client, and starts the manager.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-logr/zerologr"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/edgeai/edge-node/internal/buildinfo"
	"github.com/edgeai/edge-node/sync/kube"
	"github.com/edgeai/edge-node/sync/kube/api/v1alpha1"
	"github.com/edgeai/edge-node/sync/mqttlink"
	"github.com/edgeai/edge-node/sync/wire"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "edge-controller:", err)
		os.Exit(1)
	}
}

// setProcessLoggers points controller-runtime's and client-go's
// process-wide loggers at log. They are not safe to set while clients run,
// so the tests, which run the command beside their own clients, replace it
// (once, before any test) with a no-op.
var setProcessLoggers = func(log zerolog.Logger) {
	ctrl.SetLogger(zerologr.New(&log))
	klog.SetLogger(zerologr.New(&log))
}

type flags struct {
	broker, root, username, clientID  string
	ca, cert, key                     string
	kubeconfig, leaseNamespace        string
	namespaces                        []string
	leaderElect                       bool
	lease, renew, retryPeriod         time.Duration
	tick, retry, quiet, connect       time.Duration
	healthAddr, metricsAddr, logLevel string
}

func newRoot() *cobra.Command {
	var f flags
	c := &cobra.Command{
		Use:   "edge-controller",
		Short: "Roll ModelVersion resources out to edge nodes over MQTT",
		Long: `Roll ModelVersion resources out to edge nodes over MQTT.

Each ModelVersion (edge.edgeai.dev/v1alpha1) becomes a fleet rollout of the
edgectl rollout engine: its nodeSelector picks nodes by the labels in their
retained status, its trafficWeight is the on-device canary share, and its
waves, gates and abort criteria are the rollout's. The rollout's state lives
in the resource's status; replicas elect a leader with a Lease.

The MQTT password is read from EDGE_CONTROLLER_MQTT_PASSWORD.`,
		Version:       buildinfo.Version(),
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          func(cmd *cobra.Command, _ []string) error { return run(cmd.Context(), f) },
	}
	fl := c.Flags()
	fl.StringVar(&f.broker, "broker", "", "MQTT broker URL, tcp://host:port or ssl://host:port (required)")
	fl.StringVar(&f.root, "root", wire.DefaultRoot, "topic root")
	fl.StringVar(&f.username, "username", "", "MQTT user name")
	fl.StringVar(&f.clientID, "client-id", "", "MQTT client id (default edge-controller-HOST-PID)")
	fl.StringVar(&f.ca, "ca", "", "CA bundle for ssl:// brokers")
	fl.StringVar(&f.cert, "cert", "", "client certificate (mutual TLS)")
	fl.StringVar(&f.key, "key", "", "client key (mutual TLS)")
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the pod's service account)")
	fl.StringSliceVar(&f.namespaces, "namespace", nil, "watch only these namespaces (repeatable; default all)")
	fl.BoolVar(&f.leaderElect, "leader-elect", true, "elect a leader among replicas with a coordination.k8s.io Lease")
	fl.StringVar(&f.leaseNamespace, "leader-election-namespace", "", "the Lease's namespace (default the pod's)")
	fl.DurationVar(&f.lease, "lease-duration", 15*time.Second, "how long a dead leader keeps the Lease")
	fl.DurationVar(&f.renew, "renew-deadline", 10*time.Second, "how long the leader tries to renew before it steps down")
	fl.DurationVar(&f.retryPeriod, "retry-period", 2*time.Second, "how often candidates try to take the Lease")
	fl.DurationVar(&f.tick, "tick", time.Second, "how often a running rollout is stepped")
	fl.DurationVar(&f.retry, "retry", 10*time.Second, "how often a Pending ModelVersion is tried again")
	fl.DurationVar(&f.quiet, "retained-wait", time.Second, "how long to wait for retained messages to pause")
	fl.DurationVar(&f.connect, "connect-timeout", 10*time.Second, "fail when the broker or the API server does not answer within this")
	fl.StringVar(&f.healthAddr, "health-addr", ":8081", `serve /healthz and /readyz here ("0": off)`)
	fl.StringVar(&f.metricsAddr, "metrics-addr", "0", `serve controller-runtime's metrics here ("0": off)`)
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	return c
}

func run(ctx context.Context, f flags) error {
	level, err := zerolog.ParseLevel(f.logLevel)
	if err != nil || f.logLevel == "" {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", f.logLevel)
	}
	log := zerolog.New(os.Stderr).Level(level).With().Timestamp().Logger()
	setProcessLoggers(log)
	if f.broker == "" {
		return errors.New("--broker is required (tcp://host:port or ssl://host:port)")
	}
	tp, err := wire.NewTopics(f.root)
	if err != nil {
		return err
	}
	if f.connect <= 0 || f.tick <= 0 || f.retry <= 0 || f.quiet <= 0 {
		return errors.New("--connect-timeout, --tick, --retry and --retained-wait must be positive")
	}
	if _, err := mqttlink.CheckBroker(ctx, f.broker, f.connect); err != nil {
		return err
	}
	cfg, err := kubeConfig(f.kubeconfig)
	if err != nil {
		return err
	}
	cfg.Timeout = f.connect
	if err := checkAPI(ctx, cfg, f.namespaces); err != nil {
		return err
	}
	cfg.Timeout = 0
	host, _ := os.Hostname()
	identity := fmt.Sprintf("%s-%d", host, os.Getpid())
	mc := mqttlink.DefaultConfig()
	mc.BrokerURL, mc.Username, mc.Password = f.broker, f.username, os.Getenv("EDGE_CONTROLLER_MQTT_PASSWORD")
	mc.ClientID = f.clientID
	if mc.ClientID == "" {
		mc.ClientID = "edge-controller-" + identity
	}
	mc.TLS = mqttlink.TLSFiles{CAFile: f.ca, CertFile: f.cert, KeyFile: f.key}
	link, err := mqttlink.New(mc, nil, log, nil)
	if err != nil {
		return err
	}
	defer link.Close()
	linkCtx, stopLink := context.WithCancel(context.Background())
	linkDone := make(chan struct{})
	go func() { defer close(linkDone); _ = link.Run(linkCtx) }()
	defer func() { stopLink(); <-linkDone }()
	wctx, cancel := context.WithTimeout(ctx, f.connect)
	err = link.WaitConnected(wctx)
	cancel()
	if err != nil {
		return fmt.Errorf("broker %s accepts TCP connections but no MQTT session came up within %s (TLS or credentials refused?): %w",
			f.broker, f.connect, err)
	}
	mgr, err := kube.NewManager(cfg, link, kube.Options{Topics: tp, Identity: identity, Tick: f.tick, Retry: f.retry,
		Quiet: f.quiet, LeaderElection: f.leaderElect, LeaderElectionNamespace: f.leaseNamespace,
		LeaseDuration: f.lease, RenewDeadline: f.renew, RetryPeriod: f.retryPeriod, HealthAddr: f.healthAddr,
		MetricsAddr: f.metricsAddr, Namespaces: f.namespaces, ReleaseOnCancel: true}, log)
	if err != nil {
		return err
	}
	log.Info().Str("broker", f.broker).Str("api", cfg.Host).Str("identity", identity).Bool("leader_elect", f.leaderElect).
		Msg("edge-controller started")
	return mgr.Start(ctx)
}

// kubeConfig reads path, or finds a config the way kubectl does, or the
// pod's service account.
func kubeConfig(path string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if path != "" {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("--kubeconfig: %w", err)
		}
		rules.ExplicitPath = path
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("no Kubernetes API config (--kubeconfig, $KUBECONFIG, ~/.kube/config or a pod's service account): %w", err)
	}
	return cfg, nil
}

// checkAPI fails fast when the API server does not answer or the
// ModelVersion CRD is not installed.
func checkAPI(ctx context.Context, cfg *rest.Config, namespaces []string) error {
	scheme, err := kube.Scheme()
	if err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("Kubernetes API %s: %w", cfg.Host, err)
	}
	var opts []client.ListOption
	if len(namespaces) > 0 {
		opts = append(opts, client.InNamespace(namespaces[0]))
	}
	opts = append(opts, client.Limit(1))
	if err := c.List(ctx, &v1alpha1.ModelVersionList{}, opts...); err != nil {
		return fmt.Errorf("Kubernetes API %s: list ModelVersions (is the CRD installed? kubectl apply -f deploy/kubernetes/crd/): %w", cfg.Host, err)
	}
	return nil
}
