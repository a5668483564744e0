package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/fleet"
	"github.com/edgeai/edge-node/sync/fleetsim"
	"github.com/edgeai/edge-node/sync/rollout"
	"github.com/edgeai/edge-node/sync/wire"
)

func defaultState() string {
	if s := os.Getenv("EDGECTL_STATE"); s != "" {
		return s
	}
	return "edgectl-rollouts.db"
}

func logger(g *globalFlags) zerolog.Logger {
	if g.verbose {
		return zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).With().Timestamp().Logger()
	}
	return zerolog.Nop()
}

func newRollout(g *globalFlags) *cobra.Command {
	var state string
	c := &cobra.Command{Use: "rollout", Short: "Fleet rollouts in waves (start, run, status, pause, resume, abort, rollback)"}
	c.PersistentFlags().StringVar(&state, "state", defaultState(), "controller state file (bbolt; default $EDGECTL_STATE)")
	c.AddCommand(newRolloutStart(g, &state), newRolloutRun(g, &state), newRolloutStatus(&state))
	for _, cmd := range []struct{ name, short string }{
		{rollout.CmdPause, "Stop starting waves (nodes already written keep going)"},
		{rollout.CmdResume, "Continue a paused rollout"},
		{rollout.CmdAbort, "Stop the rollout and hold: nodes keep what they run"},
		{rollout.CmdRollback, "Stop the rollout and write the previous version back to every started node"},
	} {
		c.AddCommand(newRolloutCommand(g, &state, cmd.name, cmd.short))
	}
	return c
}

// newController connects and builds a controller; the link is returned
// for the checks commands make before starting.
func newController(ctx context.Context, g *globalFlags, state string) (*rollout.Controller, fleet.Link, wire.Topics, func(), error) {
	tp, link, closeLink, err := connect(ctx, g)
	if err != nil {
		return nil, nil, tp, nil, err
	}
	host, _ := os.Hostname()
	c, err := rollout.NewController(rollout.Config{Topics: tp, StatePath: state, Owner: fmt.Sprintf("%s-%d", host, os.Getpid()),
		Quiet: g.quiet}, link, logger(g))
	if err != nil {
		closeLink()
		return nil, nil, tp, nil, err
	}
	return c, link, tp, closeLink, nil
}

// drive runs the controller, drawing progress bars unless quiet. It fails
// when the rollout ends in another final phase than want (completed for
// start, run and resume), so scripts see an aborted rollout as an error.
func drive(ctx context.Context, c *rollout.Controller, id string, bars bool, want rollout.Phase) error {
	var pb *progressBars
	if bars {
		pb = newProgressBars()
		defer pb.wait()
	}
	r, err := c.Run(ctx, id, func(r *rollout.Record) {
		if pb != nil {
			pb.update(r)
		}
	})
	if pb != nil && r != nil {
		pb.finish(r)
	}
	if err != nil {
		return err
	}
	printRecord(r)
	if r.Phase.Final() && r.Phase != want {
		if r.Reason != "" {
			return fmt.Errorf("rollout %s ended %s: %s", id, r.Phase, r.Reason)
		}
		return fmt.Errorf("rollout %s ended %s", id, r.Phase)
	}
	return nil
}

func newRolloutStart(g *globalFlags, state *string) *cobra.Command {
	var s rollout.Spec
	var waves, selector, strategy, ramp string
	var abortOn []string
	var canary, shadow float64
	var detach, noProgress, force bool
	c := &cobra.Command{
		Use:   "start",
		Short: "Create a rollout and drive it (select nodes, assign waves, write desired state wave by wave)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if s.Waves, err = rollout.ParseWaves(waves); err != nil {
				return err
			}
			if s.Selector, err = rollout.ParseSelector(selector); err != nil {
				return err
			}
			if s.Abort.ByType, err = rollout.ParseAbortOn(abortOn); err != nil {
				return err
			}
			if s.Ramp, err = rollout.ParseRamp(ramp); err != nil {
				return err
			}
			if strategy != "" {
				st, err := parseStrategy(strategy, canary, shadow)
				if err != nil {
					return err
				}
				s.Strategy = &st
			}
			if s.ID == "" {
				s.ID = fmt.Sprintf("r-%s-%s-%d", s.Model, s.Version, time.Now().Unix())
			}
			if err := s.Validate(); err != nil {
				return err
			}
			ctx := cmd.Context()
			c, link, tp, closeLink, err := newController(ctx, g, *state)
			if err != nil {
				return err
			}
			defer closeLink()
			if !force {
				manifest := tp.Manifest(s.Model, s.Version)
				got, err := fleet.ReadRetainedAll(ctx, link, g.quiet, manifest, tp.AllStatus())
				if err != nil {
					return err
				}
				_, published := got[manifest]
				if !published && !versionReported(fleet.NodeViews(tp, got), s.Model, s.Version, func(_ string, st *wire.Status) bool {
					return s.Selects(st)
				}) {
					return fmt.Errorf("rollout %s: %w", s.ID, notPublished(s.Model, s.Version))
				}
			}
			r, err := c.Start(ctx, s)
			if err != nil {
				return err
			}
			fmt.Printf("rollout %s: %d nodes in %d waves (%s nodes)\n", s.ID, r.Nodes(), len(r.Members), waveSizes(r))
			if detach {
				fmt.Printf("created; drive it with: edgectl rollout run %s\n", s.ID)
				return nil
			}
			return drive(ctx, c, s.ID, !noProgress, rollout.PhaseCompleted)
		},
	}
	f := c.Flags()
	f.StringVar(&s.ID, "id", "", "rollout id (default r-MODEL-VERSION-UNIXTIME)")
	f.StringVar(&s.Model, "model", "", "model name (required)")
	f.StringVar(&s.Version, "version", "", "version to roll out (required; publish it first)")
	f.StringVar(&s.Group, "target", "", "group: nodes whose status lists it")
	f.StringVar(&selector, "selector", "", "label selector k=v,k2=v2 (all must match)")
	f.StringVar(&waves, "waves", "1%,10%,50%,100%", "cumulative wave percentages")
	f.StringVar(&strategy, "strategy", string(wire.StrategyCanary), `on-device strategy: immediate, canary or shadow, or a whole strategy as JSON (with health gates)`)
	f.Float64Var(&canary, "canary-percent", 0, "canary traffic percent (canary; 0: the node's default, 10)")
	f.Float64Var(&shadow, "shadow-percent", 0, "mirrored traffic percent (shadow; 0: the node's default, 100)")
	f.Float64Var(&s.Abort.MaxFailedPercent, "max-failed-percent", 10, "abort when failed + rolled-back nodes exceed this % of finished nodes")
	f.IntVar(&s.Abort.MinFinished, "min-finished", 5, "... once at least this many nodes finished")
	f.StringArrayVar(&abortOn, "abort-on", nil, "abort on one failure type: TYPE:PERCENT[:MIN] (type failed, rolled_back or timed_out; over PERCENT of finished nodes once MIN finished); repeatable")
	f.Float64Var(&s.SuccessPercent, "success-percent", 0, "start the next wave once this % of the current one is active, without waiting for stragglers; a wave that finishes below it aborts (0: wait for every node)")
	f.Float64Var(&s.Abort.MaxP99Ratio, "max-p99-ratio", 0, "abort when the new version's fleet p99 exceeds this × the baseline (0: off)")
	f.DurationVar(&s.WaveTimeout, "wave-timeout", 30*time.Minute, "abort when a wave has unfinished nodes after this long (0: none)")
	f.DurationVar(&s.NodeTimeout, "node-timeout", 15*time.Minute, "count a node timed out (a failure for the criteria) when unfinished this long after its wave started (0: never)")
	f.StringVar(&s.OnAbort, "on-abort", rollout.OnAbortRollback, "on abort: rollback or hold")
	f.IntVar(&s.MaxPerMinute, "max-per-minute", 0, "write at most this many nodes' desired state a minute, spread over the ticks (0: a wave at once; rollbacks are never paced)")
	f.StringVar(&ramp, "ramp", "", "an exponential pace BASE:FACTOR:EVERY, e.g. 10:2:50: 10 nodes a minute, times 2 for every 50 nodes Active (capped by --max-per-minute when set)")
	f.BoolVar(&s.Continuous, "continuous", false, "keep watching once every wave finished: nodes that join the target later get the version (runs until aborted or rolled back)")
	f.IntVar(&s.Retries, "retries", 0, "give a node that failed or timed out the version again up to this many times (0-10) before it counts as failed")
	f.BoolVar(&detach, "detach", false, "only create the rollout (drive it with rollout run)")
	f.BoolVar(&force, "force", false, "start even when the version is not published")
	f.BoolVar(&noProgress, "no-progress", false, "no progress bars")
	_ = c.MarkFlagRequired("model")
	_ = c.MarkFlagRequired("version")
	c.MarkFlagsMutuallyExclusive("target", "selector")
	return c
}

func newRolloutRun(g *globalFlags, state *string) *cobra.Command {
	var noProgress, takeOver bool
	c := &cobra.Command{
		Use:   "run ID",
		Short: "Drive (or resume) a rollout until it ends; refuses while another controller holds it (--take-over: unless you know it is dead)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, _, closeLink, err := newController(cmd.Context(), g, *state)
			if err != nil {
				return err
			}
			defer closeLink()
			if takeOver {
				prev, ok, err := rollout.NewStore(*state).TakeLease(args[0], c.Owner(), c.LeaseTTL(), time.Now())
				if err != nil {
					return err
				}
				switch {
				case !ok || prev.Owner == c.Owner():
					fmt.Printf("rollout %s: no other controller held it\n", args[0])
				case time.Now().Before(prev.Expires):
					fmt.Printf("rollout %s: taken over from controller %s (its lease ran until %s)\n", args[0], prev.Owner,
						prev.Expires.UTC().Format(time.RFC3339))
				default:
					fmt.Printf("rollout %s: taken over from controller %s (its lease expired at %s)\n", args[0], prev.Owner,
						prev.Expires.UTC().Format(time.RFC3339))
				}
			}
			return drive(cmd.Context(), c, args[0], !noProgress, rollout.PhaseCompleted)
		},
	}
	c.Flags().BoolVar(&noProgress, "no-progress", false, "no progress bars")
	c.Flags().BoolVar(&takeOver, "take-over", false, "take the rollout's lease from the controller holding it (say so only when that controller is dead: two controllers would both write)")
	return c
}

func newRolloutCommand(g *globalFlags, state *string, name, short string) *cobra.Command {
	return &cobra.Command{
		Use:   name + " ID",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st := rollout.NewStore(*state)
			r, err := st.Command(args[0], name)
			if err != nil {
				return err
			}
			l, held, err := st.LeaseOf(args[0])
			if err != nil {
				return err
			}
			if held && time.Now().Before(l.Expires) {
				fmt.Printf("rollout %s (%s): %s recorded; controller %s carries it out on its next tick\n", args[0], r.Phase, name, l.Owner)
				return nil
			}
			// No controller: carry it out now.
			c, _, _, closeLink, err := newController(cmd.Context(), g, *state)
			if err != nil {
				return err
			}
			defer closeLink()
			ctx := cmd.Context()
			if name == rollout.CmdPause || name == rollout.CmdResume {
				// One tick applies the command; resume then keeps driving.
				if name == rollout.CmdResume {
					return drive(ctx, c, args[0], true, rollout.PhaseCompleted)
				}
				ctx1, stop := context.WithCancel(ctx)
				defer stop()
				_, err := c.Run(ctx1, args[0], func(*rollout.Record) { stop() })
				return err
			}
			want := rollout.PhaseHeld
			if name == rollout.CmdRollback {
				want = rollout.PhaseRolledBack
			}
			return drive(ctx, c, args[0], false, want)
		},
	}
}

func newRolloutStatus(state *string) *cobra.Command {
	var watch bool
	var output string
	c := &cobra.Command{
		Use:   "status [ID]",
		Short: "Show rollouts (from the state file); --watch draws per-wave progress bars until the rollout ends",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st := rollout.NewStore(*state)
			if watch && output == outputJSON {
				return errors.New("--watch draws progress bars: use it without -o json")
			}
			if len(args) == 0 {
				rs, err := st.List()
				if err != nil {
					return err
				}
				if output == outputJSON {
					if rs == nil {
						rs = []*rollout.Record{}
					}
					return writeJSON(rs)
				}
				if len(rs) == 0 {
					fmt.Printf("no rollouts in %s\n", *state)
					return nil
				}
				tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tMODEL\tVERSION\tPHASE\tWAVE\tNODES\tACTIVE\tBAD\tJOINED\tOUTSIDE\tREASON")
				for _, r := range rs {
					var all rollout.Counts
					for _, c := range r.Counts {
						all.Plus(c)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%d\t%d\t%d\t%d\t%d\t%s\n", r.Spec.ID, r.Spec.Model, r.Spec.Version, r.Phase,
						r.Wave+1, len(r.Members), r.Nodes(), all.Active, all.Bad(), r.Joined, r.Outside, r.Reason)
				}
				return tw.Flush()
			}
			r, err := st.Get(args[0])
			if err != nil {
				return err
			}
			if output == outputJSON {
				return writeJSON(r)
			}
			if !watch {
				printRecord(r)
				return nil
			}
			pb := newProgressBars()
			t := time.NewTicker(500 * time.Millisecond)
			defer t.Stop()
			for {
				pb.update(r)
				if r.Phase.Final() {
					pb.finish(r)
					pb.wait()
					printRecord(r)
					return nil
				}
				select {
				case <-cmd.Context().Done():
					pb.finish(r)
					pb.wait()
					return nil
				case <-t.C:
				}
				if r, err = st.Get(args[0]); err != nil {
					pb.wait()
					return err
				}
			}
		},
	}
	c.Flags().BoolVarP(&watch, "watch", "w", false, "draw per-wave progress bars until the rollout ends")
	addOutputFlag(c, &output)
	return c
}

// waveSizes writes the wave sizes as "1, 10, 40, 49".
func waveSizes(r *rollout.Record) string {
	out := make([]string, len(r.Members))
	for i, m := range r.Members {
		out[i] = strconv.Itoa(len(m))
	}
	return strings.Join(out, ", ")
}

func countsText(c rollout.Counts) string {
	return fmt.Sprintf("pending %d  downloading %d  canary %d  active %d  failed %d  rolled back %d  timed out %d",
		c.Pending, c.Downloading, c.Canary, c.Active, c.Failed, c.RolledBack, c.TimedOut)
}

func printRecord(r *rollout.Record) {
	fmt.Printf("rollout %s: %s %s -> %s, %s, wave %d of %d, %d nodes\n", r.Spec.ID, r.Spec.Model,
		prevSummary(r), r.Spec.Version, r.Phase, r.Wave+1, len(r.Members), r.Nodes())
	if r.Reason != "" {
		fmt.Printf("  reason: %s\n", r.Reason)
	}
	fmt.Printf("  criteria: %s\n", r.Spec.CriteriaText())
	if len(r.WaveStarted) > 0 && r.Phase.Final() {
		fmt.Printf("  %s from wave 1 to %s\n", r.Updated.Sub(r.WaveStarted[0]).Round(time.Millisecond), r.Phase)
	}
	for w, c := range r.Counts {
		fmt.Printf("  wave %d (%d%%, %d nodes): %s\n", w+1, r.Spec.Waves[w], c.Total, countsText(c))
	}
	if len(r.BadNodes) > 0 {
		fmt.Printf("  failed, rolled back or timed out: %s\n", badNodesText(r.BadNodes, 20))
	}
	if r.Phase == rollout.PhaseWatching {
		fmt.Println("  watching: every wave finished; nodes that join the target get the version (end it with rollout abort or rollback)")
	}
	if r.Spec.Continuous || r.Joined > 0 {
		fmt.Printf("  joined after start: %d nodes\n", r.Joined)
	}
	switch {
	case r.Outside > 0 && r.Spec.Continuous:
		fmt.Printf("  waiting to join: %d nodes match the target but another rollout of %s is under way on them\n", r.Outside, r.Spec.Model)
	case r.Outside > 0:
		fmt.Printf("  not in this rollout: %d nodes match the target but joined after start (rollout start --continuous takes them in)\n", r.Outside)
	}
	if t := retriedText(r, 20); t != "" {
		fmt.Printf("  retried: %s\n", t)
	}
}

// retriedText lists up to limit retried nodes as "node (attempt 2 of 3)",
// sorted, and how many more there are.
func retriedText(r *rollout.Record, limit int) string {
	var ids []string
	for n, run := range r.Runs {
		if run.Retries > 0 {
			ids = append(ids, n)
		}
	}
	return limitedList(ids, limit, func(n string) string {
		return fmt.Sprintf("%s (attempt %d of %d)", n, r.Attempts(n), r.Spec.Retries+1)
	})
}

// badNodesText lists up to limit nodes as "node (state)", sorted, and how
// many more there are.
func badNodesText(bad map[string]rollout.NodeState, limit int) string {
	ids := make([]string, 0, len(bad))
	for n := range bad {
		ids = append(ids, n)
	}
	return limitedList(ids, limit, func(n string) string { return fmt.Sprintf("%s (%s)", n, bad[n]) })
}

// limitedList sorts ids and joins up to limit of them, each as label
// writes it, with how many more there are.
func limitedList(ids []string, limit int, label func(string) string) string {
	sort.Strings(ids)
	var parts []string
	for i, n := range ids {
		if i == limit {
			parts = append(parts, fmt.Sprintf("and %d more", len(ids)-limit))
			break
		}
		parts = append(parts, label(n))
	}
	return strings.Join(parts, ", ")
}

func prevSummary(r *rollout.Record) string {
	seen := map[string]int{}
	for _, v := range r.Previous {
		if v == "" {
			v = "(none)"
		}
		seen[v]++
	}
	var out []string
	for v := range seen {
		out = append(out, v)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

// progressBars draws one mpb bar per wave: finished nodes of the wave's
// total, with the counts per state beside it.
type progressBars struct {
	// plain: stderr is not a terminal (mpb would clip lines to the bar
	// width): print the counts when they change instead.
	plain bool
	last  string
	p     *mpb.Progress
	mu    sync.Mutex // guards bars, last (held while calling into mpb)
	bars  []*mpb.Bar
	tmu   sync.Mutex // guards text; the decorators take it from mpb's render goroutine, so never hold it while calling mpb
	text  []string
}

func newProgressBars() *progressBars {
	if !isatty.IsTerminal(os.Stderr.Fd()) {
		return &progressBars{plain: true}
	}
	return &progressBars{p: mpb.New(mpb.WithOutput(os.Stderr), mpb.WithWidth(24), mpb.WithRefreshRate(200*time.Millisecond), mpb.WithAutoRefresh())}
}

func (pb *progressBars) update(r *rollout.Record) {
	pb.mu.Lock()
	defer pb.mu.Unlock()
	if pb.plain {
		var b strings.Builder
		for i, c := range r.Counts {
			fmt.Fprintf(&b, "wave %d (%d%%) %d/%d: %s\n", i+1, r.Spec.Waves[i], c.Finished(), c.Total, countsText(c))
		}
		if b.String() != pb.last {
			pb.last = b.String()
			fmt.Fprintf(os.Stderr, "--- %s %s\n%s", time.Now().Format(time.TimeOnly), r.Phase, pb.last)
		}
		return
	}
	pb.tmu.Lock()
	for len(pb.text) < len(r.Counts) {
		pb.text = append(pb.text, "")
	}
	for i, c := range r.Counts {
		pb.text[i] = fmt.Sprintf(" pend %d dl %d canary %d active %d failed %d rb %d timeout %d",
			c.Pending, c.Downloading, c.Canary, c.Active, c.Failed, c.RolledBack, c.TimedOut)
	}
	pb.tmu.Unlock()
	for len(pb.bars) < len(r.Counts) {
		i := len(pb.bars)
		name := fmt.Sprintf("wave %d (%d%%) ", i+1, r.Spec.Waves[i])
		pb.bars = append(pb.bars, pb.p.AddBar(int64(max(r.Counts[i].Total, 1)),
			mpb.PrependDecorators(decor.Name(name, decor.WC{W: 15, C: decor.DindentRight}), decor.CountersNoUnit("%4d/%-4d", decor.WC{W: 10})),
			mpb.AppendDecorators(decor.Any(func(decor.Statistics) string {
				pb.tmu.Lock()
				defer pb.tmu.Unlock()
				return pb.text[i]
			}))))
	}
	for i, c := range r.Counts {
		if c.Total == 0 {
			pb.bars[i].SetCurrent(1)
			continue
		}
		if !pb.bars[i].Completed() {
			pb.bars[i].SetTotal(int64(c.Total), false) // nodes join a continuous rollout's wave
		}
		pb.bars[i].SetCurrent(int64(c.Finished()))
	}
}

func (pb *progressBars) finish(r *rollout.Record) {
	pb.update(r)
	if pb.plain {
		return
	}
	pb.mu.Lock()
	defer pb.mu.Unlock()
	for i, b := range pb.bars {
		if b.Completed() {
			continue
		}
		if i < len(r.Counts) && r.Counts[i].Finished() == r.Counts[i].Total {
			b.SetTotal(int64(max(r.Counts[i].Total, 1)), true)
		} else {
			b.Abort(false)
		}
	}
}

func (pb *progressBars) wait() {
	if !pb.plain {
		pb.p.Wait()
	}
}

func newSimulate(g *globalFlags) *cobra.Command {
	var cfg fleetsim.Config
	var groups, initial, fail, factor string
	var keyFiles []string
	c := &cobra.Command{
		Use:   "simulate",
		Short: "Run N simulated nodes (real link and desired-state code, stand-in inference) against the broker",
		RunE: func(cmd *cobra.Command, _ []string) error {
			tp, err := wire.NewTopics(g.root)
			if err != nil {
				return err
			}
			cfg.BrokerURL, cfg.Topics = g.broker, tp
			if groups != "" {
				cfg.Groups = strings.Split(groups, ",")
			}
			if cfg.Initial, err = kvMap(initial, func(s string) (string, error) { return s, nil }); err != nil {
				return err
			}
			if cfg.Profile.FailGate, err = kvMap(fail, parseFloat); err != nil {
				return err
			}
			if cfg.Profile.P99Factor, err = kvMap(factor, parseFloat); err != nil {
				return err
			}
			if cfg.Profile.RealDownload {
				if len(keyFiles) == 0 {
					return fmt.Errorf("--real-download needs --key-file: the public keys that verify manifests (edgectl keygen writes them)")
				}
				pubs, err := readPublicKeys(keyFiles)
				if err != nil {
					return err
				}
				cfg.Keys = models.KeySet{}
				for _, p := range pubs {
					cfg.Keys.Add(p)
				}
			}
			start := time.Now()
			f, err := fleetsim.Start(cmd.Context(), cfg, logger(g))
			if err != nil {
				return err
			}
			fmt.Printf("%d simulated nodes connected in %s; Ctrl-C to stop\n", cfg.Nodes, time.Since(start).Round(time.Millisecond))
			<-cmd.Context().Done()
			st := f.Stats()
			f.Close()
			fmt.Printf("nodes published %d messages (%d bytes), received %d (%d bytes), downloaded %d chunk bytes\n",
				st.Published, st.PublishedBytes, st.Received, st.ReceivedBytes, st.DownloadedBytes)
			return nil
		},
	}
	fl := c.Flags()
	fl.IntVar(&cfg.Nodes, "nodes", 100, "number of nodes")
	fl.StringVar(&cfg.Prefix, "prefix", "sim", "node id prefix")
	fl.StringVar(&groups, "groups", "sim", "groups every node is configured into")
	fl.StringVar(&initial, "initial", "", "model=version every node runs at start")
	fl.DurationVar(&cfg.Profile.Download, "download", 500*time.Millisecond, "simulated download time (without --real-download)")
	fl.BoolVar(&cfg.Profile.RealDownload, "real-download", false, "fetch each version's manifest and chunks from the broker and verify them, as a node does")
	fl.StringSliceVar(&keyFiles, "key-file", nil, "public key PEM files that verify manifests (with --real-download)")
	fl.Int64Var(&cfg.DownloadRate, "download-rate", 0, "bytes per second each node downloads at most (with --real-download; 0: unlimited)")
	fl.DurationVar(&cfg.Profile.Gate, "gate", time.Second, "simulated canary/shadow gate time")
	fl.StringVar(&fail, "fail", "", "version=fraction of nodes whose gate fails (e.g. 3=0.3)")
	fl.Float64Var(&cfg.Profile.BaseP99Ms, "p99-ms", 20, "reported p99 latency (ms)")
	fl.StringVar(&factor, "p99-factor", "", "version=factor on the reported p99")
	return c
}

func parseFloat(s string) (float64, error) {
	var f float64
	_, err := fmt.Sscanf(s, "%g", &f)
	return f, err
}

func kvMap[V any](s string, parse func(string) (V, error)) (map[string]V, error) {
	out := map[string]V{}
	if s == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("%q: want key=value", kv)
		}
		pv, err := parse(v)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", kv, err)
		}
		out[k] = pv
	}
	return out, nil
}

func newServe(g *globalFlags) *cobra.Command {
	var addr, state, tokenFile string
	c := &cobra.Command{
		Use:   "serve",
		Short: "Serve the operator page of the fleet and the rollouts, and its JSON API (commands need a token)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			token, err := serveToken(tokenFile)
			if err != nil {
				return err
			}
			tp, link, closeLink, err := connect(ctx, g)
			if err != nil {
				return err
			}
			defer closeLink()
			changes := rollout.NewChanges()
			views := fleet.NewLiveViews(tp, func(string) { changes.Nodes.Notify() })
			if err := link.Subscribe(ctx, views.Handle, tp.AllStatus(), tp.AllPresence()); err != nil {
				return err
			}
			st := rollout.NewStore(state)
			log := logger(g)
			// The state file is written by other processes: read it every
			// half second for changes to push to the page.
			go rollout.WatchStore(ctx, st, 500*time.Millisecond, changes, log)
			cfg := rollout.WebConfig{Store: st, Nodes: views.Snapshot, Token: token, Changes: changes}
			var carrying sync.WaitGroup
			defer carrying.Wait()
			if token != "" {
				cfg.Carry = newCarrier(ctx, g, state, &carrying, log).carry
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return err
			}
			srv := &http.Server{Handler: rollout.Handler(cfg, log), ReadHeaderTimeout: 5 * time.Second}
			go func() { <-ctx.Done(); _ = srv.Close() }()
			mode := "read-only (no token)"
			if token != "" {
				mode = "commands with the token"
			}
			fmt.Printf("serving http://%s/ (%s)\n", ln.Addr(), mode)
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	c.Flags().StringVar(&addr, "addr", "127.0.0.1:8090", "listen address")
	c.Flags().StringVar(&state, "state", defaultState(), "controller state file (bbolt; default $EDGECTL_STATE)")
	c.Flags().StringVar(&tokenFile, "token-file", "", "file holding the bearer token the page's commands need (default $EDGECTL_SERVE_TOKEN; neither: read-only)")
	return c
}

// serveToken reads the page's command token from file, else
// $EDGECTL_SERVE_TOKEN; "" (read-only) when neither is given.
func serveToken(file string) (string, error) {
	if file == "" {
		return strings.TrimSpace(os.Getenv("EDGECTL_SERVE_TOKEN")), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" || len(tok) > 4096 || strings.ContainsAny(tok, "\r\n") {
		return "", fmt.Errorf("--token-file %s: want one line of 1-4096 characters", file)
	}
	return tok, nil
}

// carrier carries out, for edgectl serve, a command given on the page for
// a rollout no controller drives, as `edgectl rollout CMD` does: pause
// takes one tick, the others drive the rollout until it ends (or serve
// stops). One controller per rollout at a time, on its own MQTT session.
type carrier struct {
	ctx   context.Context
	g     globalFlags
	state string
	wg    *sync.WaitGroup
	log   zerolog.Logger

	mu      sync.Mutex      // guards running
	running map[string]bool // rollouts being driven
}

func newCarrier(ctx context.Context, g *globalFlags, state string, wg *sync.WaitGroup, log zerolog.Logger) *carrier {
	return &carrier{ctx: ctx, g: *g, state: state, wg: wg, log: log, running: map[string]bool{}}
}

func (k *carrier) carry(id, cmd string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.running[id] {
		return
	}
	k.running[id] = true
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		defer func() {
			k.mu.Lock()
			delete(k.running, id)
			k.mu.Unlock()
		}()
		g := k.g // its own MQTT client id: serve's session stays up
		if g.clientID == "" {
			host, _ := os.Hostname()
			g.clientID = fmt.Sprintf("edgectl-%s-%d", host, os.Getpid())
		}
		g.clientID += "-carry-" + id
		c, _, _, closeLink, err := newController(k.ctx, &g, k.state)
		if err != nil {
			k.log.Warn().Err(err).Str("rollout", id).Msg("carrying out a command")
			return
		}
		defer closeLink()
		ctx, stop := context.WithCancel(k.ctx)
		defer stop()
		r, err := c.Run(ctx, id, func(*rollout.Record) {
			if cmd == rollout.CmdPause {
				stop()
			}
		})
		if err != nil {
			k.log.Warn().Err(err).Str("rollout", id).Msg("carrying out a command")
			return
		}
		k.log.Info().Str("rollout", id).Str("command", cmd).Str("phase", string(r.Phase)).Msg("command carried out")
	}()
}
