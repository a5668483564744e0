// Command edgectl is the cloud-side tool of the edge inference fleet: it
// publishes signed model versions (chunked, retained, once for the whole
// fleet), writes desired state for nodes and groups, shows node status, and
// makes signing keys. The work is done by sync/fleet; this file is flags and
// wiring only.
package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/edgeai/edge-node/internal/buildinfo"
	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/fleet"
	"github.com/edgeai/edge-node/sync/mqttlink"
	"github.com/edgeai/edge-node/sync/wire"
)

type globalFlags struct {
	broker, root, clientID, username, password string
	ca, cert, key, serverName                  string
	quiet                                      time.Duration
	verbose                                    bool
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "edgectl:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:           "edgectl",
		Version:       buildinfo.Version(),
		Short:         "Publish models to an edge fleet and roll them out",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.broker, "broker", "tcp://127.0.0.1:1883", "broker URL (tcp://, ssl://)")
	pf.StringVar(&g.root, "root", wire.DefaultRoot, "topic root")
	pf.StringVar(&g.clientID, "client-id", "", "MQTT client id (default edgectl-<host>-<pid>)")
	pf.StringVar(&g.username, "username", "", "MQTT username")
	pf.StringVar(&g.password, "password", os.Getenv("EDGECTL_PASSWORD"), "MQTT password (default $EDGECTL_PASSWORD)")
	pf.StringVar(&g.ca, "tls-ca", "", "CA certificate (PEM) to verify the broker")
	pf.StringVar(&g.cert, "tls-cert", "", "client certificate (PEM) for mutual TLS")
	pf.StringVar(&g.key, "tls-key", "", "client key (PEM) for mutual TLS")
	pf.StringVar(&g.serverName, "tls-server-name", "", "server name to verify in the broker's certificate")
	pf.DurationVar(&g.quiet, "retained-wait", time.Second, "how long to wait for retained messages after subscribing")
	pf.BoolVarP(&g.verbose, "verbose", "v", false, "log link events to stderr")

	model := &cobra.Command{Use: "model", Short: "Model versions"}
	model.AddCommand(newPublish(g))
	root.AddCommand(model, newDeploy(g), newStatus(g), newKeygen(), newRollout(g), newSimulate(g), newServe(g))
	return root
}

// connect starts a link and waits until it is up.
// connect opens a one-shot MQTT session with the global flags and returns
// it with the topics under --root.
func connect(ctx context.Context, g *globalFlags) (wire.Topics, *mqttlink.Link, func(), error) {
	tp, err := wire.NewTopics(g.root)
	if err != nil {
		return wire.Topics{}, nil, nil, err
	}
	cfg := mqttlink.DefaultConfig()
	cfg.BrokerURL, cfg.Username, cfg.Password = g.broker, g.username, g.password
	cfg.ClientID = g.clientID
	if cfg.ClientID == "" {
		host, _ := os.Hostname()
		cfg.ClientID = fmt.Sprintf("edgectl-%s-%d", host, os.Getpid())
	}
	cfg.CleanSession = true // a one-shot tool: nothing to queue for it
	cfg.TLS = mqttlink.TLSFiles{CAFile: g.ca, CertFile: g.cert, KeyFile: g.key, ServerName: g.serverName}
	cfg.BackoffMax = 5 * time.Second
	log := zerolog.Nop()
	if g.verbose {
		log = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).With().Timestamp().Logger()
	}
	l, err := mqttlink.New(cfg, nil, log, nil)
	if err != nil {
		return wire.Topics{}, nil, nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = l.Run(runCtx) }()
	closeFn := func() { cancel(); <-done; l.Close() }
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := l.WaitConnected(wctx); err != nil {
		closeFn()
		return wire.Topics{}, nil, nil, fmt.Errorf("connect to %s: %w", g.broker, err)
	}
	return tp, l, closeFn, nil
}

func newPublish(g *globalFlags) *cobra.Command {
	var name, version, keyPath, configPath, base string
	var external []string
	var noProgress bool
	var lineagePath string
	c := &cobra.Command{
		Use:   "publish [FILE]",
		Short: "Chunk, sign and publish a model version (retained, once for the whole fleet)",
		Long: `Chunk, sign and publish a model version (retained, once for the whole fleet).

FILE is the version's ONNX graph. Without FILE the version has no graph of
its own (an ensemble): --config must declare what it runs, and
--external-data lists its files (e.g. the ocr ensemble's ppocr_keys_v1.txt).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			keyPEM, err := os.ReadFile(keyPath)
			if err != nil {
				return err
			}
			key, err := wire.ParsePrivateKeyPEM(keyPEM)
			if err != nil {
				return fmt.Errorf("%s: %w", keyPath, err)
			}
			var files []fleet.FileSpec
			if len(args) == 1 {
				files = append(files, fleet.FileSpec{Path: args[0], Name: filepath.Base(args[0]), Role: wire.RoleModel})
			} else if configPath == "" || len(external) == 0 {
				return errors.New("publish without a model FILE (an ensemble) needs --config declaring it and --external-data with its files")
			}
			for _, e := range external {
				files = append(files, fleet.FileSpec{Path: e, Name: filepath.Base(e), Role: wire.RoleExternalData})
			}
			var cfgText string
			if configPath != "" {
				b, err := os.ReadFile(configPath)
				if err != nil {
					return err
				}
				cfgText = string(b)
			}
			tp, link, closeLink, err := connect(ctx, g)
			if err != nil {
				return err
			}
			defer closeLink()
			opts := fleet.PublishOptions{Config: cfgText}
			if lineagePath != "" {
				if opts.Lineage, err = readLineage(lineagePath); err != nil {
					return err
				}
			}
			if base != "" {
				keys := models.KeySet{}
				keys.Add(key.Public().(ed25519.PublicKey))
				bm, ok, err := fleet.ReadManifest(ctx, link, tp, name, base, keys, g.quiet)
				if err != nil {
					return fmt.Errorf("base version %s: %w", base, err)
				}
				if !ok {
					return fmt.Errorf("base version %s of %s is not published", base, name)
				}
				opts.Skip = fleet.ChunkSet(bm)
			}
			var bar *mpb.Bar
			var p *mpb.Progress
			if !noProgress {
				p = mpb.New(mpb.WithOutput(os.Stderr), mpb.WithWidth(40))
				bar = p.AddBar(0,
					mpb.PrependDecorators(decor.Name(name+" "+version+" ")),
					mpb.AppendDecorators(decor.CountersKibiByte("% .1f / % .1f"), decor.Name("  "),
						decor.AverageSpeed(decor.SizeB1024(0), "% .1f")))
				opts.Progress = func(done, total int64) {
					bar.SetTotal(total, false)
					bar.SetCurrent(done)
				}
			}
			m, st, err := fleet.PublishModel(ctx, link, tp, name, version, files, key, opts)
			if bar != nil {
				if err != nil {
					bar.Abort(false)
				} else {
					bar.SetTotal(st.BytesTotal, true)
				}
				p.Wait()
			}
			if err != nil {
				return err
			}
			fmt.Printf("published %s %s: %d files, %d bytes; sent %d chunks (%d bytes), skipped %d already published, in %s\n",
				m.Model, m.Version, len(m.Files), st.BytesTotal, st.Chunks, st.BytesSent, st.ChunksSkipped, st.Elapsed.Round(time.Millisecond))
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&name, "name", "", "model name (required)")
	f.StringVar(&version, "version", "", "version (required)")
	f.StringVar(&keyPath, "key", "", "ed25519 private key, PEM (from edgectl keygen) (required)")
	f.StringVar(&configPath, "config", "", "per-model config.yaml to include")
	f.StringVar(&lineagePath, "lineage", "", `lineage JSON to sign into the manifest: {"training_run", "dataset_digest": "sha256:…", "source_commit", "metrics": {name: value}}`)
	f.StringSliceVar(&external, "external-data", nil, "ONNX external-data files to include")
	f.StringVar(&base, "base", "", "published version whose chunks need not be sent again")
	f.BoolVar(&noProgress, "no-progress", false, "no progress bar")
	for _, r := range []string{"name", "version", "key"} {
		_ = c.MarkFlagRequired(r)
	}
	return c
}

func newDeploy(g *globalFlags) *cobra.Command {
	var node, group, model, version, strategy, rolloutID string
	var canary, shadow float64
	var wave int
	var remove bool
	c := &cobra.Command{
		Use:   "deploy",
		Short: "Set a model's desired version on a node or group (next generation, retained)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			spec := wire.ModelSpec{Version: version}
			switch {
			case remove:
				spec = wire.ModelSpec{Absent: true}
			case strategy != "":
				s, err := parseStrategy(strategy, canary, shadow)
				if err != nil {
					return err
				}
				spec.Strategy = &s
			}
			if rolloutID != "" && !remove {
				spec.Rollout = &wire.RolloutRef{ID: rolloutID, Wave: wave}
			}
			if !remove && version == "" {
				return errors.New("--version is required (or --remove)")
			}
			tp, link, closeLink, err := connect(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer closeLink()
			d, err := fleet.Deploy(cmd.Context(), link, tp, fleet.Target{Node: node, Group: group}, model, spec, g.quiet)
			if err != nil {
				return err
			}
			target := "node " + node
			if group != "" {
				target = "group " + group
			}
			fmt.Printf("%s: generation %d: %s -> %s\n", target, d.Generation, model, describe(spec))
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&node, "node", "", "target node id")
	f.StringVar(&group, "group", "", "target group")
	f.StringVar(&model, "model", "", "model name (required)")
	f.StringVar(&version, "version", "", "version to run")
	f.BoolVar(&remove, "remove", false, "remove the model from the target")
	f.StringVar(&strategy, "strategy", "", `immediate, canary or shadow, or a whole strategy as JSON ({"kind":"canary","canary_percent":10,"min_requests":200,"gates":{"max_error_rate":0.01}})`)
	f.Float64Var(&canary, "canary-percent", 0, "canary traffic percent (with --strategy canary)")
	f.Float64Var(&shadow, "shadow-percent", 0, "mirrored traffic percent (with --strategy shadow)")
	f.StringVar(&rolloutID, "rollout-id", "", "rollout this deploy belongs to")
	f.IntVar(&wave, "wave", 0, "rollout wave")
	_ = c.MarkFlagRequired("model")
	c.MarkFlagsMutuallyExclusive("node", "group")
	c.MarkFlagsOneRequired("node", "group")
	return c
}

func describe(s wire.ModelSpec) string {
	if s.Absent {
		return "removed"
	}
	out := s.Version
	if s.Strategy != nil {
		out += " (" + string(s.Strategy.Kind) + ")"
	}
	return out
}

func newStatus(g *globalFlags) *cobra.Command {
	var watch bool
	c := &cobra.Command{
		Use:   "status",
		Short: "Show nodes' retained status and presence",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			tp, link, closeLink, err := connect(ctx, g)
			if err != nil {
				return err
			}
			defer closeLink()
			views, err := fleet.ReadNodes(ctx, link, tp, g.quiet)
			if err != nil {
				return err
			}
			printNodes(views)
			if !watch {
				return nil
			}
			updates := make(chan [2]any, 64)
			h := func(topic string, b []byte) { updates <- [2]any{topic, append([]byte(nil), b...)} }
			if err := link.Subscribe(ctx, h, tp.AllStatus(), tp.AllPresence()); err != nil {
				return err
			}
			for {
				select {
				case <-ctx.Done():
					return nil
				case u := <-updates:
					if node := fleet.ApplyNodeMessage(tp, views, u[0].(string), u[1].([]byte)); node != "" {
						fmt.Printf("--- %s %s\n", time.Now().Format(time.TimeOnly), node)
						printNodes(views)
					}
				}
			}
		},
	}
	c.Flags().BoolVarP(&watch, "watch", "w", false, "keep printing as status changes")
	return c
}

func printNodes(views map[string]*fleet.NodeView) {
	names := make([]string, 0, len(views))
	for n := range views {
		names = append(names, n)
	}
	sort.Strings(names)
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tONLINE\tGEN\tMODELS\tUPDATED")
	for _, n := range names {
		v := views[n]
		online := "?"
		if v.Presence != nil {
			online = fmt.Sprint(v.Presence.Online)
		}
		gen, updated := "-", "-"
		var ms []string
		if s := v.Status; s != nil {
			gen, updated = fmt.Sprint(s.Desired.Node), s.Time
			for name, m := range s.Models {
				e := fmt.Sprintf("%s@%s:%s", name, m.Version, m.State)
				if m.BytesTotal > 0 && m.BytesDone < m.BytesTotal {
					e += fmt.Sprintf("(%d%%)", 100*m.BytesDone/m.BytesTotal)
				}
				if m.Reason != "" {
					e += "[" + m.Reason + "]"
				}
				if m.Serving != "" {
					e += "(serving " + m.Serving + ")"
				}
				ms = append(ms, e)
			}
			sort.Strings(ms)
		}
		if v.Err != nil {
			ms = append(ms, "INVALID: "+v.Err.Error())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n, online, gen, strings.Join(ms, " "), updated)
	}
	tw.Flush()
}

func newKeygen() *cobra.Command {
	var out string
	var force bool
	c := &cobra.Command{
		Use:   "keygen",
		Short: "Write an ed25519 signing key pair (PREFIX.key, PREFIX.pub)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, priv, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				return err
			}
			privPEM, pubPEM, err := wire.MarshalKeyPairPEM(priv)
			if err != nil {
				return err
			}
			flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
			if force {
				flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
			}
			for _, f := range []struct {
				path string
				b    []byte
				mode os.FileMode
			}{{out + ".key", privPEM, 0o600}, {out + ".pub", pubPEM, 0o644}} {
				fh, err := os.OpenFile(f.path, flags, f.mode)
				if err != nil {
					return err
				}
				if _, err := fh.Write(f.b); err != nil {
					fh.Close()
					return err
				}
				if err := fh.Close(); err != nil {
					return err
				}
			}
			fmt.Printf("wrote %s.key and %s.pub (key id %s)\n", out, out, wire.KeyID(priv.Public().(ed25519.PublicKey)))
			return nil
		},
	}
	c.Flags().StringVar(&out, "out", "edgeai-signing", "path prefix of the key files")
	c.Flags().BoolVar(&force, "force", false, "overwrite existing files")
	return c
}

// parseStrategy reads --strategy: a kind (with --canary-percent or
// --shadow-percent), or a whole on-device strategy as JSON, health gates
// included. Either way it is validated as the node will validate it.
func parseStrategy(arg string, canary, shadow float64) (wire.Strategy, error) {
	if strings.HasPrefix(strings.TrimSpace(arg), "{") {
		if canary != 0 || shadow != 0 {
			return wire.Strategy{}, errors.New("--canary-percent and --shadow-percent go with a strategy kind, not with strategy JSON")
		}
		return models.DecodeStrategy([]byte(arg))
	}
	s := wire.Strategy{Kind: models.StrategyKind(arg), CanaryPercent: canary, ShadowPercent: shadow}
	if _, err := s.Normalize(); err != nil {
		return wire.Strategy{}, err
	}
	return s, nil
}

// readLineage reads a lineage JSON file (unknown fields refused) and
// validates it.
func readLineage(path string) (*models.Lineage, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) > 64<<10 {
		return nil, fmt.Errorf("%s: %d bytes, a lineage is at most 64 KiB", path, len(b))
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var l models.Lineage
	if err := dec.Decode(&l); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := l.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &l, nil
}
