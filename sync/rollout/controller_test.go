package rollout

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/internal/testwait"
	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/brokertest"
	"github.com/edgeai/edge-node/sync/fleet"
	"github.com/edgeai/edge-node/sync/fleetsim"
	"github.com/edgeai/edge-node/sync/mqttlink"
	"github.com/edgeai/edge-node/sync/mqttlink/mqttlinktest"
	"github.com/edgeai/edge-node/sync/wire"
)

// testLink is a cloud-side session (clean session: controllers keep no
// broker state) until the test ends.
func testLink(t testing.TB, url, id string) *mqttlink.Link {
	t.Helper()
	cfg := mqttlink.DefaultConfig()
	cfg.BrokerURL, cfg.ClientID, cfg.CleanSession = url, id, true
	l, _ := mqttlinktest.Start(t, cfg, mqttlinktest.Options{})
	mqttlinktest.WaitUp(t, l)
	return l
}

type env struct {
	broker *brokertest.Mosquitto
	fleet  *fleetsim.Fleet
	state  string
	tp     wire.Topics
}

func newEnv(t testing.TB, nodes int, prof fleetsim.Profile) *env {
	t.Helper()
	return newEnvConfig(t, fleetsim.Config{Nodes: nodes, Profile: prof})
}

// newEnvConfig is newEnv with more of the simulated fleet's config; the
// broker, topics, group (cams) and initial version (det 1) are the env's.
func newEnvConfig(t testing.TB, cfg fleetsim.Config) *env {
	t.Helper()
	m := brokertest.StartMosquitto(t, brokertest.Options{GlobalConf: []string{"max_inflight_messages 0", "max_queued_messages 100000"}})
	tp := wire.Topics{Root: wire.DefaultRoot}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	start := time.Now()
	cfg.BrokerURL, cfg.Topics, cfg.Groups, cfg.Initial = m.URL(), tp, []string{"cams"}, map[string]string{"det": "1"}
	f, err := fleetsim.Start(ctx, cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	nodes := cfg.Nodes
	t.Logf("%d simulated nodes connected in %s", nodes, time.Since(start).Round(time.Millisecond))
	return &env{broker: m, fleet: f, state: filepath.Join(t.TempDir(), "rollouts.db"), tp: tp}
}

func (e *env) controller(t testing.TB, owner string) *Controller {
	t.Helper()
	c, err := NewController(Config{Topics: e.tp, StatePath: e.state, Owner: owner, Tick: 100 * time.Millisecond,
		Quiet: 500 * time.Millisecond}, testLink(t, e.broker.URL(), "ctl-"+owner), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func testSpec(id, version string) Spec {
	return Spec{ID: id, Model: "det", Version: version, Group: "cams", Waves: []int{1, 10, 50, 100},
		Strategy:    &wire.Strategy{Kind: wire.StrategyCanary, CanaryPercent: 10},
		Abort:       Abort{MaxFailedPercent: 10, MinFinished: 3, MaxP99Ratio: 3},
		WaveTimeout: 60 * time.Second, OnAbort: OnAbortRollback}
}

// fleetSize is 100, or EDGE_FLEET_NODES (first entry) under
// EDGE_FLEET_SCALE=1: `EDGE_FLEET_SCALE=1 EDGE_FLEET_NODES=1000 go test
// -run TestRollout ./sync/rollout` runs every fleet test at 1,000 nodes.
func fleetSize(t testing.TB) int {
	if os.Getenv("EDGE_FLEET_SCALE") == "" || os.Getenv("EDGE_FLEET_NODES") == "" {
		return 100
	}
	n, err := strconv.Atoi(strings.Split(os.Getenv("EDGE_FLEET_NODES"), ",")[0])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

var quickProfile = fleetsim.Profile{Download: 150 * time.Millisecond, Gate: 200 * time.Millisecond, BaseP99Ms: 12,
	FailGate: map[string]float64{"bad": 0.3}}

// waveStarts returns the 1-based waves in the order the history started them.
func waveStarts(r *Record) []int {
	var out []int
	for _, h := range r.History {
		if strings.HasPrefix(h.Note, "wave ") && strings.Contains(h.Note, " started") {
			out = append(out, h.Wave)
		}
	}
	return out
}

// runRollout starts and drives a rollout to its end, and reports figures.
func runRollout(t testing.TB, e *env, c *Controller, spec Spec) (*Record, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := c.Start(ctx, spec); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r, err := c.Run(ctx, spec.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r, time.Since(start)
}

func checkAllActive(t testing.TB, e *env, version string) {
	t.Helper()
	for n, v := range e.fleet.Active("det") {
		if v != version {
			t.Fatalf("node %s runs %q, want %q", n, v, version)
		}
	}
}

func TestRolloutCompletes(t *testing.T) {
	n := fleetSize(t)
	e := newEnv(t, n, quickProfile)
	c := e.controller(t, "a")
	r, took := runRollout(t, e, c, testSpec("r-good", "2"))
	if r.Phase != PhaseCompleted {
		t.Fatalf("phase %s (%s)", r.Phase, r.Reason)
	}
	if got := waveStarts(r); fmt.Sprint(got) != "[1 2 3 4]" {
		t.Fatalf("wave starts %v", got)
	}
	for w, cnt := range r.Counts {
		if cnt.Active != len(r.Members[w]) {
			t.Fatalf("wave %d counts %+v", w+1, cnt)
		}
	}
	checkAllActive(t, e, "2")
	for n, d := range e.fleet.Downloads("det") {
		if fmt.Sprint(d) != "[2]" {
			t.Fatalf("node %s downloaded %v, want [2] once", n, d)
		}
	}
	t.Logf("%d nodes, 4 waves: completed in %s", n, took.Round(time.Millisecond))
}

func TestRolloutBadVersionAbortsAndRollsBack(t *testing.T) {
	e := newEnv(t, fleetSize(t), quickProfile)
	c := e.controller(t, "a")
	r, _ := runRollout(t, e, c, testSpec("r-bad", "bad"))
	if r.Phase != PhaseRolledBack {
		t.Fatalf("phase %s, want rolled_back", r.Phase)
	}
	if r.Wave > 1 {
		t.Fatalf("aborted in wave %d, want 1 or 2 (%s)", r.Wave+1, r.Reason)
	}
	if !strings.Contains(r.Reason, "failed, rolled back or timed out") {
		t.Fatalf("reason %q", r.Reason)
	}
	started := map[string]bool{}
	for w := 0; w <= r.Wave; w++ {
		for _, n := range r.Members[w] {
			started[n] = true
		}
	}
	dl := e.fleet.Downloads("det")
	for w := r.Wave + 1; w < len(r.Members); w++ {
		for _, n := range r.Members[w] {
			if len(dl[n]) != 0 {
				t.Fatalf("node %s of wave %d (not started) downloaded %v", n, w+1, dl[n])
			}
		}
	}
	// The rollback lands: every node runs version 1 again.
	testwait.For(t, "every node on version 1 again", func() bool {
		for _, v := range e.fleet.Active("det") {
			if v != "1" {
				return false
			}
		}
		return true
	}, time.Minute)
	t.Logf("aborted in wave %d: %s; %d nodes had started", r.Wave+1, r.Reason, len(started))
}

func TestRolloutControllerRestartResumes(t *testing.T) {
	e := newEnv(t, fleetSize(t), quickProfile)
	spec := testSpec("r-restart", "2")
	c1 := e.controller(t, "first")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := c1.Start(ctx, spec); err != nil {
		t.Fatal(err)
	}
	// Stop the first controller as soon as wave 2 is written.
	r1, err := runUntil(ctx, c1, spec.ID, func(r *Record) bool { return r.WavesWritten >= 2 })
	if err != nil || r1.Phase != PhaseRunning || r1.WavesWritten != 2 {
		t.Fatalf("first controller stopped with %v, phase %s, waves written %d", err, r1.Phase, r1.WavesWritten)
	}
	// While the first holds the lease, a second is refused: shown with
	// the store directly (the first released it on return).
	st := NewStore(e.state)
	if err := st.AcquireLease(spec.ID, "first", time.Minute, time.Now()); err != nil {
		t.Fatal(err)
	}
	c2 := e.controller(t, "second")
	if _, err := c2.Run(ctx, spec.ID, nil); !errors.Is(err, ErrLeaseHeld) || !strings.Contains(err.Error(), `"first"`) {
		t.Fatalf("second controller: %v, want ErrLeaseHeld naming the holder", err)
	}
	if err := st.ReleaseLease(spec.ID, "first"); err != nil {
		t.Fatal(err)
	}
	r, err := c2.Run(ctx, spec.ID, nil)
	if err != nil || r.Phase != PhaseCompleted {
		t.Fatalf("resumed controller: %v, phase %v", err, r)
	}
	if got := waveStarts(r); fmt.Sprint(got) != "[1 2 3 4]" {
		t.Fatalf("wave starts %v: a wave was repeated or skipped", got)
	}
	checkAllActive(t, e, "2")
	for n, d := range e.fleet.Downloads("det") {
		if fmt.Sprint(d) != "[2]" {
			t.Fatalf("node %s downloaded %v, want [2] once", n, d)
		}
	}
	for n, g := range e.fleet.NodeGenerations() {
		if g != 1 {
			t.Fatalf("node %s at desired generation %d, want exactly one write", n, g)
		}
	}
}

// failingLink fails every publish after the first n, like a controller
// that dies part-way through a wave's writes.
type failingLink struct {
	Link
	n int
}

func (f *failingLink) PublishAsync(topic string, retained bool, b []byte) func(context.Context) error {
	if f.n <= 0 {
		return func(context.Context) error { return errors.New("controller crashed") }
	}
	f.n--
	return f.Link.PublishAsync(topic, retained, b)
}

// TestRolloutCrashMidWave: a controller that dies after publishing part of
// wave 3 (its intent committed, waves_written not) is resumed by another;
// every node gets exactly one desired-state write (generation 1) and
// downloads once.
func TestRolloutCrashMidWave(t *testing.T) {
	e := newEnv(t, fleetSize(t), quickProfile)
	spec := testSpec("r-crash", "2")
	good := e.controller(t, "first")
	fl := &failingLink{Link: good.link}
	c1, err := NewController(good.cfg, fl, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := c1.Start(ctx, spec); err != nil {
		t.Fatal(err)
	}
	r0, _ := c1.store.Get(context.Background(), spec.ID)
	fl.n = len(r0.Members[0]) + len(r0.Members[1]) + len(r0.Members[2])/2 // half of wave 3
	r1, err := c1.Run(ctx, spec.ID, nil)
	if err == nil {
		t.Fatalf("first controller did not fail: %+v", r1)
	}
	r1, _ = c1.store.Get(context.Background(), spec.ID)
	if r1.Wave != 2 || r1.WavesWritten != 2 {
		t.Fatalf("crashed at wave %d with %d written, want wave 3 started and 2 written", r1.Wave+1, r1.WavesWritten)
	}
	r, err := e.controller(t, "second").Run(ctx, spec.ID, nil)
	if err != nil || r.Phase != PhaseCompleted {
		t.Fatalf("resumed: %v, %+v", err, r)
	}
	if got := waveStarts(r); fmt.Sprint(got) != "[1 2 3 4]" {
		t.Fatalf("wave starts %v", got)
	}
	checkAllActive(t, e, "2")
	for n, g := range e.fleet.NodeGenerations() {
		if g != 1 {
			t.Fatalf("node %s at desired generation %d, want exactly one write", n, g)
		}
	}
	for n, d := range e.fleet.Downloads("det") {
		if fmt.Sprint(d) != "[2]" {
			t.Fatalf("node %s downloaded %v, want [2] once", n, d)
		}
	}
}

// A rollback whose publishes fail is not taken as written: the
// controller's view of the nodes' desired state goes back to what the
// broker holds, so the next tick writes the previous version again and the
// nodes get it (before, the next tick skipped every node as already
// written and called the rollout rolled back).
func TestRolloutRollbackRewrittenAfterFailedPublish(t *testing.T) {
	e := newEnv(t, 10, quickProfile)
	spec := testSpec("r-rb-fail", "2")
	spec.Waves, spec.Strategy = []int{100}, nil
	good := e.controller(t, "first")
	fl := &failingLink{Link: good.link, n: 1 << 30}
	c, err := NewController(good.cfg, fl, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if r, _ := runRollout(t, e, c, spec); r.Phase != PhaseCompleted {
		t.Fatalf("rollout %s", r.Phase)
	}
	checkAllActive(t, e, "2")
	if _, err := Command(ctx, c.store, spec.ID, CmdRollback); err != nil {
		t.Fatal(err)
	}
	fl.n = 0
	if r, err := c.Step(ctx, spec.ID); err == nil || r.Phase != PhaseRollingBack {
		t.Fatalf("rollback with failing publishes: %v, phase %s", err, r.Phase)
	}
	fl.n = 1 << 30
	if r := mustStep(t, ctx, c, spec.ID); r.Phase != PhaseRolledBack {
		t.Fatalf("phase %s after the second rollback tick", r.Phase)
	}
	testwait.For(t, "every node back on version 1", func() bool {
		for _, v := range e.fleet.Active("det") {
			if v != "1" {
				return false
			}
		}
		return true
	}, time.Minute)
}

func TestRolloutPauseResumeAbort(t *testing.T) {
	e := newEnv(t, 20, quickProfile)
	spec := testSpec("r-ops", "2")
	spec.Waves = []int{10, 100}
	c := e.controller(t, "a")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := c.Start(ctx, spec); err != nil {
		t.Fatal(err)
	}
	st := NewStore(e.state)
	if _, err := st.Command(spec.ID, CmdPause); err != nil {
		t.Fatal(err)
	}
	paused := 0
	r, err := runUntil(ctx, c, spec.ID, func(r *Record) bool {
		if r.Phase == PhasePaused {
			paused++
		}
		return paused == 5
	})
	if err != nil || r.Phase != PhasePaused {
		t.Fatalf("after pause: %v, %v", err, r)
	}
	// Paused before any wave: nothing was written.
	for n, d := range e.fleet.Downloads("det") {
		if len(d) != 0 {
			t.Fatalf("paused rollout reached node %s", n)
		}
	}
	if _, err := st.Command(spec.ID, CmdPause); !errors.Is(err, ErrBadState) {
		t.Fatalf("pause twice: %v", err)
	}
	if _, err := st.Command(spec.ID, CmdResume); err != nil {
		t.Fatal(err)
	}
	ctxRun, stop := context.WithCancel(ctx)
	r, err = c.Run(ctxRun, spec.ID, func(r *Record) {
		if r.Phase == PhaseRunning && r.WavesWritten == 1 && r.Command == "" {
			if _, err := st.Command(spec.ID, CmdAbort); err != nil {
				t.Error(err)
			}
		}
	})
	stop()
	if err != nil || r.Phase != PhaseHeld || r.Wave != 0 {
		t.Fatalf("after abort: %v, %+v", err, r)
	}
	if _, err := st.Command(spec.ID, CmdRollback); err != nil {
		t.Fatal(err)
	}
	r, err = c.Run(ctx, spec.ID, nil)
	if err != nil || r.Phase != PhaseRolledBack {
		t.Fatalf("after rollback: %v, %+v", err, r)
	}
	testwait.For(t, "every node on version 1 again", func() bool {
		for _, v := range e.fleet.Active("det") {
			if v != "1" {
				return false
			}
		}
		return true
	}, time.Minute)
}

// TestRolloutScale runs the scale figures of docs/performance.md; it needs
// EDGE_FLEET_SCALE=1 (make test-fleet-scale). EDGE_FLEET_NODES picks the
// sizes (default 1000); EDGE_FLEET_DOWNLOAD=real makes the nodes fetch a
// published version from the broker for real (realDownloadEnv); EDGE_FLEET_RATE
// sets the rollout's max_per_minute and the figures give the pace achieved.
func TestRolloutScale(t *testing.T) {
	if os.Getenv("EDGE_FLEET_SCALE") == "" {
		t.Skip("set EDGE_FLEET_SCALE=1 (make test-fleet-scale)")
	}
	sizes := os.Getenv("EDGE_FLEET_NODES")
	if sizes == "" {
		sizes = "1000"
	}
	real := os.Getenv("EDGE_FLEET_DOWNLOAD") == "real"
	rate := 0 // EDGE_FLEET_RATE: the rollout's max_per_minute
	if v := os.Getenv("EDGE_FLEET_RATE"); v != "" {
		var err error
		if rate, err = strconv.Atoi(v); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(fmt.Sprintf("nodes=%d", n), func(t *testing.T) {
			var e *env
			if real {
				e = realDownloadEnv(t, n)
			} else {
				e = newEnv(t, n, quickProfile)
			}
			c := e.controller(t, "a")
			before := e.fleet.Stats()
			var ru0 syscallRusage
			ru0.read()
			broker0 := procCPU(t, e.broker.PID())
			spec := testSpec("r-scale", "2")
			spec.MaxPerMinute = rate
			r, took := runRollout(t, e, c, spec)
			var ru1 syscallRusage
			ru1.read()
			brokerCPU := procCPU(t, e.broker.PID()) - broker0
			if r.Phase != PhaseCompleted {
				t.Fatalf("phase %s (%s)", r.Phase, r.Reason)
			}
			checkAllActive(t, e, "2")
			after := e.fleet.Stats()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			msgs := (after.Published - before.Published) + (after.Received - before.Received)
			bytes := (after.PublishedBytes - before.PublishedBytes) + (after.ReceivedBytes - before.ReceivedBytes)
			t.Logf("FIGURES nodes=%d max_per_minute=%d started_per_minute=%.0f download=%s time_to_100=%s node_msgs_per_node=%.1f node_bytes_per_node=%.0f downloaded_bytes_per_node=%.0f process_cpu=%s broker_cpu=%s heap_inuse_MiB=%.1f",
				n, rate, startedPerMinute(e.fleet.FirstDownloads("det")), map[bool]string{false: "sleep", true: "real"}[real], took.Round(time.Millisecond), float64(msgs)/float64(n), float64(bytes)/float64(n),
				float64(after.DownloadedBytes-before.DownloadedBytes)/float64(n), ru1.cpu-ru0.cpu, brokerCPU, float64(ms.HeapInuse)/(1<<20))
		})
	}
}

// TestRolloutSmallFleetAllFailAborts: 4 of 4 nodes fail with the default
// --min-finished 5; the first wave (1 node) must stop the rollout and roll
// it back instead of advancing and completing.
func TestRolloutSmallFleetAllFailAborts(t *testing.T) {
	prof := quickProfile
	prof.FailGate = map[string]float64{"bad": 1}
	e := newEnv(t, 4, prof)
	spec := testSpec("r-small", "bad")
	spec.Abort.MinFinished = 5
	r, _ := runRollout(t, e, e.controller(t, "a"), spec)
	if r.Phase != PhaseRolledBack || r.Wave != 0 {
		t.Fatalf("phase %s in wave %d (%s), want rolled_back in wave 1", r.Phase, r.Wave+1, r.Reason)
	}
	n := 0
	for _, d := range e.fleet.Downloads("det") {
		n += len(d)
	}
	if n != len(r.Members[0]) {
		t.Fatalf("%d downloads, want only wave 1's %d", n, len(r.Members[0]))
	}
}

// mustStep runs one tick of rollout id and returns its record.
func mustStep(t *testing.T, ctx context.Context, c *Controller, id string) *Record {
	t.Helper()
	r, err := c.Step(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// runUntil drives rollout id with c until done holds for a tick's record
// (or the rollout ends), and returns the last record.
func runUntil(ctx context.Context, c *Controller, id string, done func(*Record) bool) (*Record, error) {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	return c.Run(ctx, id, func(r *Record) {
		if done(r) {
			stop()
		}
	})
}

// writtenFor counts the nodes whose desired state, as c last read or wrote
// it, carries rollout id for model det.
func writtenFor(c *Controller, id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, d := range c.desired {
		if ms, ok := d.Models["det"]; ok && ms.Rollout != nil && ms.Rollout.ID == id {
			n++
		}
	}
	return n
}

// frozenController is a controller on e whose clock stands still until
// advance moves it.
func frozenController(t *testing.T, e *env) (*Controller, func(time.Duration)) {
	t.Helper()
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	c, err := NewController(Config{Topics: e.tp, StatePath: e.state, Owner: "paced", Quiet: 300 * time.Millisecond, Now: clock},
		testLink(t, e.broker.URL(), "ctl-paced"), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return c, advance
}

// MaxPerMinute paces a wave's writes: on a frozen clock only the first
// burst (one second's worth plus one node) is written however many ticks
// run; each second of clock writes one second's worth more, until the
// wave is written and the rollout decides again. A rollback is not paced.
func TestRolloutPacedWrites(t *testing.T) {
	e := newEnv(t, 30, quickProfile)
	c, advance := frozenController(t, e)
	spec := testSpec("r-paced", "2")
	spec.Waves, spec.MaxPerMinute = []int{100}, 600 // 10 a second, a burst of 11
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := c.Start(ctx, spec); err != nil {
		t.Fatal(err)
	}
	written := func() int { return writtenFor(c, spec.ID) }
	step := func() *Record { t.Helper(); return mustStep(t, ctx, c, spec.ID) }
	for range 3 {
		step()
	}
	if got := written(); got != 11 {
		t.Fatalf("%d nodes written on a frozen clock, want the burst of 11", got)
	}
	advance(time.Second)
	if r := step(); written() != 21 || r.WavesWritten != 0 {
		t.Fatalf("after 1 s: %d written, waves written %d; want 21 and 0", written(), r.WavesWritten)
	}
	advance(10 * time.Second) // the bucket holds at most 11
	if r := step(); written() != 30 || r.WavesWritten != 1 {
		t.Fatalf("after 11 s: %d written, waves written %d; want 30 and 1", written(), r.WavesWritten)
	}
	// An operator rollback goes out at once, whatever the pace.
	if _, err := Command(ctx, c.store, spec.ID, CmdRollback); err != nil {
		t.Fatal(err)
	}
	if r := step(); r.Phase != PhaseRolledBack {
		t.Fatalf("after the rollback tick: %s", r.Phase)
	}
	if got := written(); got != 0 {
		t.Errorf("%d nodes still carry the rollout after the rollback", got)
	}
}

// Spec.Ramp raises the pace as nodes succeed: on a frozen clock each
// second writes Pace/60 more, and Pace doubles for every 2 nodes Active
// (base 60 a minute: 2, then 4, 8, 20 written, where 60 a minute flat
// would give 2, 3, 4, 5).
func TestRolloutRampedWrites(t *testing.T) {
	e := newEnv(t, 20, quickProfile)
	c, advance := frozenController(t, e)
	spec := testSpec("r-ramp", "2")
	spec.Waves, spec.Ramp = []int{100}, &Ramp{BasePerMinute: 60, Factor: 2, EverySucceeded: 2}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := c.Start(ctx, spec); err != nil {
		t.Fatal(err)
	}
	written := func() int { return writtenFor(c, spec.ID) }
	// stepUntilActive ticks on the frozen clock (no credit comes) until
	// every written node is Active.
	stepUntilActive := func(want int) {
		t.Helper()
		testwait.For(t, fmt.Sprintf("%d nodes active", want), func() bool {
			return mustStep(t, ctx, c, spec.ID).Counts[0].Active == want
		}, time.Minute)
	}
	for i, want := range []int{2, 4, 8, 20} {
		if i > 0 {
			advance(time.Second)
		}
		mustStep(t, ctx, c, spec.ID)
		if got := written(); got != want {
			t.Fatalf("step %d: %d nodes written, want %d", i, got, want)
		}
		stepUntilActive(want)
	}
}

// realDownloadEnv is an env of n simulated nodes that download for real
// (fleetsim Profile.RealDownload: manifest and chunks from the broker,
// verified) a published det version 2 of EDGE_FLEET_MODEL_BYTES random
// bytes (default 600,000: about ppocr_cls's 0.6 MB, which the fleet
// figures of docs/performance.md stand for).
func realDownloadEnv(t *testing.T, n int) *env {
	size := 600_000
	if s := os.Getenv("EDGE_FLEET_MODEL_BYTES"); s != "" {
		var err error
		if size, err = strconv.Atoi(s); err != nil {
			t.Fatal(err)
		}
	}
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	keys := models.KeySet{}
	keys.Add(pub)
	prof := quickProfile
	prof.RealDownload = true
	e := newEnvConfig(t, fleetsim.Config{Nodes: n, Profile: prof, Keys: keys})
	file := filepath.Join(t.TempDir(), "model.onnx")
	data := make([]byte, size)
	rand.Read(data)
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, _, err := fleet.PublishModel(ctx, testLink(t, e.broker.URL(), "publisher"), e.tp, "det", "2",
		[]fleet.FileSpec{{Path: file, Name: "model.onnx", Role: wire.RoleModel}}, key, fleet.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	return e
}

// procCPU is the user+system CPU time of process pid so far (/proc; 0
// where there is none).
func procCPU(t *testing.T, pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	// Fields after the command: state is [0], utime [11], stime [12], in clock ticks (100 Hz on Linux).
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// startedPerMinute is the pace at which nodes started downloading: the
// nodes after the first over the time from the first start to the last.
func startedPerMinute(starts map[string]time.Time) float64 {
	var first, last time.Time
	for _, t := range starts {
		if first.IsZero() || t.Before(first) {
			first = t
		}
		if t.After(last) {
			last = t
		}
	}
	if len(starts) < 2 || !last.After(first) {
		return 0
	}
	return float64(len(starts)-1) / last.Sub(first).Minutes()
}
