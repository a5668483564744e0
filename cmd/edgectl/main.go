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
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	quiet, connectTimeout                      time.Duration
	verbose                                    bool
	output                                     string
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
	pf.DurationVar(&g.connectTimeout, "connect-timeout", 5*time.Second, "fail when the broker cannot be reached within this long")
	pf.BoolVarP(&g.verbose, "verbose", "v", false, "log link events to stderr")

	model := &cobra.Command{Use: "model", Short: "Model versions"}
	model.AddCommand(newPublish(g), newUnpublish(g), newModelList(g))
	root.AddCommand(model, newDeploy(g), newStatus(g), newKeygen(), newKeys(g), newRollout(g), newSimulate(g), newServe(g))
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
	timeout := g.connectTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	addr, err := mqttlink.CheckBroker(ctx, g.broker, timeout)
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
	wctx, wcancel := context.WithTimeout(ctx, timeout)
	defer wcancel()
	if err := l.WaitConnected(wctx); err != nil {
		closeFn()
		if ctx.Err() == nil {
			return wire.Topics{}, nil, nil, fmt.Errorf("broker %s (%s) accepts TCP connections but no MQTT session came up within %s "+
				"(not an MQTT broker, TLS or credentials refused? -v shows the link's errors)", g.broker, addr, timeout)
		}
		return wire.Topics{}, nil, nil, fmt.Errorf("connect to %s: %w", g.broker, err)
	}
	return tp, l, closeFn, nil
}

func newPublish(g *globalFlags) *cobra.Command {
	var name, version, keyPath, configPath, base string
	var external []string
	var noProgress, force bool
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
			key, err := readKey(keyPath)
			if err != nil {
				return err
			}
			var files []fleet.FileSpec
			if len(args) == 1 {
				if err := fleet.CheckONNX(args[0]); err != nil {
					return err
				}
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
			if !force {
				if err := checkSameVersion(ctx, link, tp, name, version, files, cfgText, g.quiet); err != nil {
					return err
				}
			}
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
	f.BoolVar(&force, "force", false, "replace a published version whose files or config differ")
	for _, r := range []string{"name", "version", "key"} {
		_ = c.MarkFlagRequired(r)
	}
	return c
}

// readKey reads an ed25519 private key in PEM (what edgectl keygen writes).
func readKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key, err := wire.ParsePrivateKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}

func newModelList(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the versions retained at the broker, their size and the bytes only each holds there",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tp, link, closeLink, err := connect(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer closeLink()
			rep, err := fleet.RetainedReport(cmd.Context(), link, tp, g.quiet)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MODEL\tVERSION\tBYTES\tCHUNKS\tUNSHARED BYTES")
			var total int64
			for _, v := range rep {
				if v.Invalid != nil {
					fmt.Fprintf(tw, "%s\t%s\tINVALID: %v\t\t\n", v.Model, v.Version, v.Invalid)
					continue
				}
				total += v.UnsharedBytes
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\n", v.Model, v.Version, v.Bytes, v.Chunks, v.UnsharedBytes)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Printf("%d versions; unpublishing all would clear at least %d bytes of chunks\n", len(rep), total)
			return nil
		},
	}
}

func newUnpublish(g *globalFlags) *cobra.Command {
	var force bool
	c := &cobra.Command{
		Use:   "unpublish MODEL VERSION",
		Short: "Clear a version's retained manifest and its chunks no other published version lists",
		Long: `Clear a version's retained manifest and every chunk of it that no other
retained manifest lists (empty retained publishes), so the broker stops
holding its bytes. Refused while a node's or group's desired state asks for
the version, unless --force.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			tp, link, closeLink, err := connect(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer closeLink()
			st, err := fleet.Unpublish(cmd.Context(), link, tp, args[0], args[1], force, g.quiet)
			if err != nil {
				return err
			}
			if len(st.DesiredBy) > 0 {
				fmt.Fprintf(os.Stderr, "edgectl: warning: still desired on %s\n", strings.Join(st.DesiredBy, ", "))
			}
			fmt.Printf("unpublished %s %s: manifest and %d chunks (%d bytes) cleared, %d chunks kept (listed by other versions)\n",
				args[0], args[1], st.ChunksCleared, st.BytesCleared, st.ChunksKept)
			return nil
		},
	}
	c.Flags().BoolVar(&force, "force", false, "unpublish even if a desired state asks for the version")
	return c
}

// checkSameVersion fails when model/version is published with other files
// or another config than files and config: a version's bytes never change
// under its name (nodes that have it would keep the old ones). Publishing
// the same content again is allowed (it re-sends what is missing).
func checkSameVersion(ctx context.Context, link fleet.Subscriber, tp wire.Topics, model, version string,
	files []fleet.FileSpec, config string, quiet time.Duration) error {
	got, err := fleet.ReadRetained(ctx, link, tp.Manifest(model, version), quiet)
	if err != nil {
		return err
	}
	b, ok := got[tp.Manifest(model, version)]
	if !ok {
		return nil
	}
	var sm models.SignedManifest
	var old models.Manifest
	if err := json.Unmarshal(b, &sm); err != nil || json.Unmarshal(sm.Payload, &old) != nil {
		return fmt.Errorf("version %s of model %s: the published manifest cannot be read; --force replaces it", version, model)
	}
	refuse := func(what string) error {
		return fmt.Errorf("version %s of model %s is already published with %s; publish it as a new version, or --force to replace it",
			version, model, what)
	}
	published := map[string]string{}
	for _, f := range old.Files {
		published[f.Path] = f.SHA256
	}
	if len(old.Files) != len(files) {
		return refuse(fmt.Sprintf("%d files (%d here)", len(old.Files), len(files)))
	}
	for _, f := range files {
		sum, err := fileSHA256(f.Path)
		if err != nil {
			return err
		}
		switch p, ok := published[f.Name]; {
		case !ok:
			return refuse(fmt.Sprintf("no file %s", f.Name))
		case p != sum:
			return refuse(fmt.Sprintf("other bytes in %s (sha256 %.12s… published, %.12s… here)", f.Name, p, sum))
		}
	}
	if old.Config != config {
		return refuse("another config")
	}
	return nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func newDeploy(g *globalFlags) *cobra.Command {
	var node, group, model, version, strategy, rolloutID, keyPath string
	var canary, shadow float64
	var wave int
	var remove, replaceInvalid, force, renew bool
	var expires time.Duration
	c := &cobra.Command{
		Use:   "deploy",
		Short: "Set a model's desired version on a node or group (next generation, retained)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if renew {
				if model != "" || version != "" || remove || strategy != "" {
					return errors.New("--renew rewrites the state as it is: no --model, --version, --remove or --strategy")
				}
				if keyPath == "" || expires <= 0 {
					return errors.New("--renew needs --key and --expires (it re-signs the state with a new expiry)")
				}
			} else if model == "" {
				return errors.New(`required flag(s) "model" not set`)
			}
			if expires < 0 || (expires > 0 && keyPath == "") {
				return errors.New("--expires needs --key and a positive duration (only a signed state's expiry protects anything)")
			}
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
			if !renew && !remove && version == "" {
				return errors.New("--version is required (or --remove)")
			}
			tp, link, closeLink, err := connect(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer closeLink()
			opts := fleet.DeployOptions{Quiet: g.quiet, ReplaceInvalid: replaceInvalid, Expires: expires}
			if keyPath != "" {
				if opts.Key, err = readKey(keyPath); err != nil {
					return err
				}
			}
			target := fleet.Target{Node: node, Group: group}
			var d wire.DesiredState
			if renew {
				d, err = fleet.DeployWith(cmd.Context(), link, tp, target, "", spec, opts)
			} else {
				d, err = deployChecked(cmd.Context(), link, tp, target, model, spec, force, opts)
			}
			if err != nil {
				return err
			}
			name := "node " + node
			if group != "" {
				name = "group " + group
			}
			what := model + " -> " + describe(spec)
			if renew {
				what = "renewed"
			}
			if d.Expires != "" {
				what += " (expires " + d.Expires + ")"
			}
			fmt.Printf("%s: generation %d: %s\n", name, d.Generation, what)
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
	f.StringVar(&keyPath, "key", "", "ed25519 private key, PEM (from edgectl keygen): sign the desired state (nodes with cloud.allow_unsigned_desired: false accept only signed ones)")
	f.BoolVar(&replaceInvalid, "replace-invalid", false, "replace a retained desired state the nodes reject (bad JSON, generation over 2^53-1) by one holding only this model, at the generation after the highest the nodes report")
	f.BoolVar(&force, "force", false, "write even when no node is known by that id or group, or the version is not published")
	f.DurationVar(&expires, "expires", 0, "with --key: nodes refuse the signed state this long from now (e.g. 168h), so a broker that withholds newer states is found out; renew before with --renew")
	f.BoolVar(&renew, "renew", false, "re-sign the target's state as it is, at the next generation, with a new --expires (run it on a schedule)")
	c.MarkFlagsMutuallyExclusive("node", "group")
	c.MarkFlagsOneRequired("node", "group")
	return c
}

// deployChecked writes spec for model to target after checking (unless
// force) that the target has a node and that the version is published or
// reported by a target node, reading every retained message the checks
// and the write need in one wait.
func deployChecked(ctx context.Context, link fleet.Link, tp wire.Topics, target fleet.Target, model string, spec wire.ModelSpec,
	force bool, opts fleet.DeployOptions) (wire.DesiredState, error) {
	if force {
		return fleet.DeployWith(ctx, link, tp, target, model, spec, opts)
	}
	topic, err := target.Topic(tp)
	if err != nil {
		return wire.DesiredState{}, err
	}
	manifest := tp.Manifest(model, spec.Version)
	got, err := fleet.ReadRetainedAll(ctx, link, opts.Quiet, topic, tp.AllStatus(), tp.AllPresence(), manifest)
	if err != nil {
		return wire.DesiredState{}, err
	}
	views := fleet.NodeViews(tp, got)
	if err := checkTarget(views, target.Node, target.Group); err != nil {
		return wire.DesiredState{}, err
	}
	_, published := got[manifest]
	if !spec.Absent && !published && !versionReported(views, model, spec.Version, func(id string, s *wire.Status) bool {
		return id == target.Node || (target.Group != "" && hasGroup(s, target.Group))
	}) {
		return wire.DesiredState{}, notPublished(model, spec.Version)
	}
	return fleet.DeployOnto(ctx, link, tp, target, model, spec, got, opts)
}

// checkTarget fails unless a node with that id (or one in that group)
// has a retained status or presence among views.
func checkTarget(views map[string]*fleet.NodeView, node, group string) error {
	if node != "" {
		if _, ok := views[node]; !ok {
			return fmt.Errorf("no node %s on the broker (no retained status or presence); check the id with edgectl status, or --force", node)
		}
		return nil
	}
	for _, v := range views {
		if hasGroup(v.Status, group) {
			return nil
		}
	}
	return fmt.Errorf("no node lists group %s in its status; check the group with edgectl status, or --force", group)
}

func hasGroup(s *wire.Status, group string) bool {
	if s == nil {
		return false
	}
	_, ok := s.Desired.Groups[group]
	return ok
}

// versionReported says whether a node that match selects reports
// model/version in its status (as its version or the one it serves): a
// version the node has without it being published from the cloud (its
// local model repository, an earlier download).
func versionReported(views map[string]*fleet.NodeView, model, version string, match func(string, *wire.Status) bool) bool {
	for id, v := range views {
		if v.Status == nil || !match(id, v.Status) {
			continue
		}
		if ms, ok := v.Status.Models[model]; ok && (ms.Version == version || ms.Serving == version) {
			return true
		}
	}
	return false
}

func notPublished(model, version string) error {
	return fmt.Errorf("version %s of model %s is not published and no target node reports it (edgectl model publish it first, or --force)", version, model)
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
	var output string
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
			if output == outputJSON {
				if watch {
					return errors.New("--watch prints tables: use it without -o json")
				}
				return writeJSON(nodesJSON(views))
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
	addOutputFlag(c, &output)
	return c
}

// Output formats of the read commands (-o).
const (
	outputText = "text"
	outputJSON = "json"
)

func addOutputFlag(c *cobra.Command, p *string) {
	c.Flags().StringVarP(p, "output", "o", outputText, "output format: text or json")
	c.PreRunE = func(*cobra.Command, []string) error {
		if *p != outputText && *p != outputJSON {
			return fmt.Errorf("--output %q: want text or json", *p)
		}
		return nil
	}
}

func writeJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// nodeJSON is one node in `status -o json`.
type nodeJSON struct {
	Node     string         `json:"node"`
	Status   *wire.Status   `json:"status,omitempty"`
	Presence *wire.Presence `json:"presence,omitempty"`
	Error    string         `json:"error,omitempty"`
}

func nodesJSON(views map[string]*fleet.NodeView) []nodeJSON {
	out := make([]nodeJSON, 0, len(views))
	for id, v := range views {
		n := nodeJSON{Node: id, Status: v.Status, Presence: v.Presence}
		if v.Err != nil {
			n.Error = v.Err.Error()
		}
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
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
