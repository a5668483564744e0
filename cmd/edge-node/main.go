// Command edge-node is the edge inference node daemon: it serves ONNX models
// over the KServe v2 REST protocol, keeps model versions in a local store, and
// takes new versions and rollout instructions from the cloud over MQTT.
//
// This file only parses flags, environment and the config file, builds the
// logger, and hands a node.Config to package node.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/edgeai/edge-node/internal/buildinfo"
	"github.com/edgeai/edge-node/node"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "edge-node:", err)
		os.Exit(1)
	}
}

// envPrefix names the environment variables that mirror flags:
// --http-addr is EDGE_NODE_HTTP_ADDR.
const envPrefix = "EDGE_NODE_"

func newRootCommand() *cobra.Command {
	var configPath string
	var showVersion bool
	cfg := node.DefaultConfig()
	cmd := &cobra.Command{
		Use:           "edge-node",
		Short:         "Serve ONNX models on an edge device (KServe v2 REST), synced from the cloud over MQTT",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if showVersion {
				fmt.Fprintf(cmd.OutOrStdout(), "edge-node %s\n", buildinfo.Version())
				return nil
			}
			final, err := resolveConfig(cmd.Flags(), configPath)
			if err != nil {
				return err
			}
			return serve(final)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "YAML config file (flags and EDGE_NODE_* environment override it)")
	f.BoolVar(&showVersion, "version", false, "print the version and exit")
	bindConfigFlags(f, &cfg)
	cmd.AddCommand(newModelsCommand())
	return cmd
}

// resolveConfig layers the configuration: defaults, then the config file,
// then EDGE_NODE_* environment, then flags given on the command line. The
// result is validated once, after all layers (a file may leave part of a
// section to the environment), and a validation error names where the
// offending values were set.
func resolveConfig(flags *pflag.FlagSet, configPath string) (node.Config, error) {
	cfg := node.DefaultConfig()
	sources := newConfigSources(&cfg, configPath)
	if configPath != "" {
		var err error
		if cfg, err = node.LoadConfigFile(configPath, cfg); err != nil {
			return cfg, err
		}
	}
	if cfg.ORTLibrary == "" {
		cfg.ORTLibrary = os.Getenv("ONNXRUNTIME_LIB")
	}
	// Secrets have no flag (a flag shows in ps): the config file, then
	// systemd credentials, then the environment.
	if err := applyCredentials(&cfg); err != nil {
		return cfg, err
	}
	if v, ok := os.LookupEnv(envPrefix + "BROKER_PASSWORD"); ok {
		cfg.Cloud.Password = v
	}
	if v, ok := os.LookupEnv(envPrefix + "KUBEEDGE_EVENTBUS_PASSWORD"); ok {
		cfg.KubeEdge.EventBus.Password = v
	}
	if v, ok := os.LookupEnv(envPrefix + "TRACING_HEADERS"); ok {
		h, err := node.ParseTracingHeaders(v)
		if err != nil {
			// The value may hold a token: name the variable, not the value.
			return cfg, fmt.Errorf("%sTRACING_HEADERS: %w", envPrefix, err)
		}
		cfg.Tracing.Headers = h
	}
	// Environment, then explicit flags, both applied through the flag set so
	// that each value is parsed exactly as its flag would be.
	var err error
	// source names where the value came from, as the operator wrote it: the
	// environment variable or the flag.
	apply := func(fl *pflag.Flag, source, val string) {
		if err == nil {
			if e := fl.Value.Set(val); e != nil {
				err = fmt.Errorf("%s %q: %w", source, val, e)
			}
			sources.record(fl, source)
		}
	}
	overlay := pflag.NewFlagSet("overlay", pflag.ContinueOnError)
	bindConfigFlags(overlay, &cfg)
	flags.VisitAll(func(fl *pflag.Flag) {
		if o := overlay.Lookup(fl.Name); o != nil {
			name := envPrefix + strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))
			if v, ok := os.LookupEnv(name); ok {
				apply(o, name, v)
			}
		}
	})
	flags.Visit(func(fl *pflag.Flag) {
		if o := overlay.Lookup(fl.Name); o != nil {
			apply(o, "--"+fl.Name, fl.Value.String())
		}
	})
	if err != nil {
		return cfg, err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, sources.explain(err)
	}
	return cfg, nil
}

// bindConfigFlags binds the config-carrying flags to cfg. The root command
// uses it for parsing and help; resolveConfig uses it again to apply
// environment and flag values onto a config that came from a file.
func bindConfigFlags(f *pflag.FlagSet, cfg *node.Config) {
	f.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "address of the REST API (KServe v2 and admin)")
	f.StringVar(&cfg.GRPCAddr, "grpc-addr", cfg.GRPCAddr, `address of Triton's gRPC inference service ("" turns it off)`)
	f.StringVar(&cfg.HTTPSocket, "http-socket", cfg.HTTPSocket, "Unix-domain socket path serving the REST API too (local callers)")
	f.StringVar(&cfg.GRPCSocket, "grpc-socket", cfg.GRPCSocket, "Unix-domain socket path serving the gRPC service too (local callers)")
	f.StringVar(&cfg.SocketMode, "socket-mode", cfg.SocketMode, "file mode of the Unix-domain sockets, octal")
	f.StringVar(&cfg.ModelRepository, "model-repository", cfg.ModelRepository, "Triton-style model folder <dir>/<name>/<version>/model.onnx imported and served at boot")
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "folder of the model store")
	f.StringVar(&cfg.ORTLibrary, "ort-lib", cfg.ORTLibrary, "path of libonnxruntime.so (also env ONNXRUNTIME_LIB)")
	f.Int64Var(&cfg.MaxRequestBytes, "max-request-bytes", cfg.MaxRequestBytes, "largest /infer body accepted (413 above)")
	f.DurationVar(&cfg.DrainTimeout, "drain-timeout", cfg.DrainTimeout, "how long shutdown waits for in-flight requests")
	f.BoolVar(&cfg.Pprof, "pprof", cfg.Pprof, "serve /debug/pprof/ on the HTTP address")
	f.StringVar(&cfg.AdminToken, "admin-token", cfg.AdminToken, "bearer token required on /admin/ calls")
	f.BoolVar(&cfg.RepositoryControl, "repository-control", cfg.RepositoryControl, "serve Triton's POST /v2/repository/models/{m}/load and /unload (with --admin-token as their bearer token)")
	f.StringVar(&cfg.Log.Level, "log-level", cfg.Log.Level, "trace, debug, info, warn or error")
	f.StringVar(&cfg.Log.Format, "log-format", cfg.Log.Format, "json, console, or auto (console on a terminal)")
	f.Uint32Var(&cfg.Log.AccessEvery, "log-access-every", cfg.Log.AccessEvery, "access log line for every Nth REST request (0: none, 1: all)")
	f.StringVar(&cfg.Cloud.Broker, "broker", cfg.Cloud.Broker, "MQTT broker URL (tcp://host:port, ssl://host:port); empty starts the embedded broker on --embedded-broker-addr")
	f.StringVar(&cfg.Cloud.NodeID, "node-id", cfg.Cloud.NodeID, "this node's id in topics (default: the host name)")
	f.Var((*csvList)(&cfg.Cloud.Groups), "groups", "comma-separated groups this node belongs to, highest priority first")
	f.StringVar(&cfg.Cloud.EmbeddedAddr, "embedded-broker-addr", cfg.Cloud.EmbeddedAddr, "listen address of the embedded broker (used when --broker is empty)")
	f.BoolVar(&cfg.Cloud.Disabled, "cloud-disabled", cfg.Cloud.Disabled, "run without any cloud link or broker")
	f.Var((*csvList)(&cfg.Cloud.TrustedKeyFiles), "trusted-key-files", "comma-separated PEM public keys (edgectl keygen) that manifests must be signed with")
	f.Var((*csvList)(&cfg.Cloud.RootKeyFiles), "root-key-files", "comma-separated PEM public keys that sign the fleet's key list (edgectl keys publish): rotation and revocation of signing keys")
	f.Int64Var(&cfg.Cloud.DownloadRate, "download-rate", cfg.Cloud.DownloadRate, "model download limit in bytes per second, for metered links (0: unlimited)")
	f.StringVar(&cfg.Cloud.FetchWindow, "fetch-window", cfg.Cloud.FetchWindow, `daily window of local time for model downloads, HH:MM-HH:MM, may cross midnight ("": always)`)
	f.StringVar(&cfg.Cloud.Username, "broker-username", cfg.Cloud.Username, "broker user name (the password comes from the config file or EDGE_NODE_BROKER_PASSWORD)")
	f.StringVar(&cfg.Cloud.TLS.CAFile, "broker-ca-file", cfg.Cloud.TLS.CAFile, "PEM CA that signed the broker's certificate")
	f.StringVar(&cfg.Cloud.TLS.CertFile, "broker-cert-file", cfg.Cloud.TLS.CertFile, "PEM client certificate (mutual TLS)")
	f.StringVar(&cfg.Cloud.TLS.KeyFile, "broker-key-file", cfg.Cloud.TLS.KeyFile, "PEM client key (mutual TLS)")
	f.BoolVar(&cfg.KubeEdge.DMI.Enabled, "kubeedge-dmi", cfg.KubeEdge.DMI.Enabled, "register with KubeEdge's EdgeCore as a DMI mapper (the node is a Device)")
	f.StringVar(&cfg.KubeEdge.DMI.EdgeCoreSocket, "kubeedge-dmi-socket", cfg.KubeEdge.DMI.EdgeCoreSocket, "EdgeCore's DMI socket")
	f.StringVar(&cfg.KubeEdge.DMI.Socket, "kubeedge-mapper-socket", cfg.KubeEdge.DMI.Socket, "the node's own DMI mapper socket")
	f.BoolVar(&cfg.KubeEdge.EventBus.Enabled, "kubeedge-eventbus", cfg.KubeEdge.EventBus.Enabled, "be a Device on EdgeCore's EventBus MQTT broker")
	f.StringVar(&cfg.KubeEdge.EventBus.Broker, "kubeedge-eventbus-broker", cfg.KubeEdge.EventBus.Broker, "EdgeCore's EventBus broker URL (the password comes from the config file or EDGE_NODE_KUBEEDGE_EVENTBUS_PASSWORD)")
	f.Var(bothStrings{&cfg.KubeEdge.DMI.DeviceName, &cfg.KubeEdge.EventBus.DeviceName}, "kubeedge-device-name", "name of the KubeEdge Device that is this node (DMI and EventBus)")
	f.Var(bothStrings{&cfg.KubeEdge.DMI.DeviceNamespace, &cfg.KubeEdge.EventBus.DeviceNamespace}, "kubeedge-device-namespace", "namespace of that Device (DMI and EventBus)")
	f.StringVar(&cfg.Tracing.Endpoint, "tracing-endpoint", cfg.Tracing.Endpoint, `OTLP/HTTP collector URL the spans are exported to, e.g. http://127.0.0.1:4318 ("": none; headers come from the config file or EDGE_NODE_TRACING_HEADERS)`)
	f.Float64Var(&cfg.Tracing.SampleRatio, "tracing-sample-ratio", cfg.Tracing.SampleRatio, "share of traces started on this node that are exported, 0 to 1 (a caller's traceparent decides for its own)")
	f.DurationVar(&cfg.Tracing.Timeout, "tracing-timeout", cfg.Tracing.Timeout, "bound on one span export, retries included")
	f.StringVar(&cfg.Tracing.CAFile, "tracing-ca-file", cfg.Tracing.CAFile, "PEM CA bundle the https collector is checked against (default: the system roots)")
}

// bothStrings is a flag that sets two config strings to one value (the
// Device's name is the same for the DMI and the EventBus bridge).
type bothStrings [2]*string

func (b bothStrings) String() string {
	if b[0] == nil {
		return ""
	}
	return *b[0]
}
func (b bothStrings) Type() string { return "string" }
func (b bothStrings) Set(v string) error {
	*b[0], *b[1] = v, v
	return nil
}

// csvList is a flag holding a comma-separated list. Unlike pflag's
// StringSlice, String() gives back exactly what Set accepts, so a value can
// be re-applied onto a config from a file (resolveConfig does that), and a
// Set replaces the list instead of appending to it.
type csvList []string

func (l *csvList) String() string { return strings.Join(*l, ",") }
func (l *csvList) Type() string   { return "strings" }
func (l *csvList) Set(v string) error {
	*l = nil
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// bindSomeConfigFlags binds only the named config-carrying flags (see
// bindConfigFlags) to cfg: subcommands take the few they use.
func bindSomeConfigFlags(f *pflag.FlagSet, cfg *node.Config, names ...string) {
	all := pflag.NewFlagSet("all", pflag.ContinueOnError)
	bindConfigFlags(all, cfg)
	for _, name := range names {
		f.AddFlag(all.Lookup(name))
	}
}

// newLogger builds the process logger: JSON lines, or human-readable output
// when stderr is a terminal and the format is auto. Durations are written
// as strings ("1.5s", not 1500 with the unit left to guess); zerolog keeps
// that setting process-wide, and this is the process's one logger.
func newLogger(c node.LogConfig, w io.Writer, terminal bool) (zerolog.Logger, error) {
	level, err := zerolog.ParseLevel(c.Level)
	if err != nil {
		return zerolog.Nop(), err
	}
	zerolog.DurationFieldFormat = zerolog.DurationFormatString
	if c.Format == "console" || (c.Format == "auto" && terminal) {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger(), nil
}

func serve(cfg node.Config) error {
	logger, err := newLogger(cfg.Log, os.Stderr, isatty.IsTerminal(os.Stderr.Fd()))
	if err != nil {
		return err
	}
	// Signals are registered before the slow start-up (loading models), so a
	// SIGTERM during start-up still stops the node cleanly.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	n, err := node.New(ctx, cfg, logger)
	if err != nil {
		return err
	}
	notified := make(chan struct{})
	go func() {
		defer close(notified)
		notifySystemd(ctx, n, logger)
	}()
	runErr := n.Run(ctx)
	stop() // a server error ends Run without a signal: STOPPING=1 all the same
	<-notified
	closeErr := n.Close()
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		return runErr
	}
	return closeErr
}
