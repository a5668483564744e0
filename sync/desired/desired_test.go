package desired

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/internal/testwait"
	"github.com/edgeai/edge-node/sync/brokertest"
	"github.com/edgeai/edge-node/sync/fleet"
	"github.com/edgeai/edge-node/sync/mqttlink"
	"github.com/edgeai/edge-node/sync/mqttlink/mqttlinktest"
	"github.com/edgeai/edge-node/sync/wire"
)

const deadline = 30 * time.Second

var tp = wire.Topics{Root: wire.DefaultRoot}

// recorder is the node's reconciler as far as this test cares: it records
// what it was asked to apply.
type recorder struct {
	mu    sync.Mutex // guards snaps
	snaps []Snapshot
}

func (r *recorder) Apply(_ context.Context, s Snapshot) error {
	r.mu.Lock()
	r.snaps = append(r.snaps, s)
	r.mu.Unlock()
	return nil
}

// waitFor waits until ok holds on the last snapshot applied and returns it.
func (r *recorder) waitFor(t *testing.T, what string, ok func(Snapshot) bool) Snapshot {
	t.Helper()
	var last *Snapshot
	defer func() {
		if t.Failed() {
			t.Logf("last snapshot: %+v", last)
		}
	}()
	testwait.For(t, what, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		last = nil
		if n := len(r.snaps); n > 0 {
			s := r.snaps[n-1]
			last = &s
		}
		return last != nil && ok(*last)
	}, deadline)
	return *last
}

func deploy(t *testing.T, l *mqttlink.Link, target fleet.Target, model, version string) wire.DesiredState {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if err := l.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	d, err := fleet.DeployWith(ctx, l, tp, target, model, wire.ModelSpec{Version: version}, fleet.DeployOptions{Quiet: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestOfflineChangesLandOnLatestGeneration(t *testing.T) {
	m := brokertest.StartMosquitto(t, brokertest.Options{})
	proxy := brokertest.NewProxy(t, m.Addr())
	cloud := mqttlinktest.Connect(t, m.URL(), "edgectl")
	deploy(t, cloud, fleet.Target{Group: "cams"}, "det", "1")
	deploy(t, cloud, fleet.Target{Group: "cams"}, "vad", "1")
	d1 := deploy(t, cloud, fleet.Target{Node: "n1"}, "det", "1")

	nodeCfg := mqttlink.DefaultConfig()
	nodeCfg.BrokerURL, nodeCfg.ClientID = proxy.URL(), "edge-node-n1"
	node, _ := mqttlinktest.Start(t, nodeCfg, mqttlinktest.Options{})
	rej, _ := wire.NewRejecter(nil, zerolog.Nop())
	rec := &recorder{}
	w, err := New(Config{Topics: tp, Node: "n1", Groups: []string{"cams"}}, node, rec, rej, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	rec.waitFor(t, "first state", func(s Snapshot) bool {
		return s.Generations.Node == d1.Generation && s.Models["vad"].Version == "1"
	})

	proxy.SetDown(true) // the node goes offline; the desired state changes twice
	deploy(t, cloud, fleet.Target{Node: "n1"}, "det", "2")
	d3 := deploy(t, cloud, fleet.Target{Node: "n1"}, "det", "3")
	proxy.SetDown(false)

	s := rec.waitFor(t, "latest generation", func(s Snapshot) bool { return s.Generations.Node == d3.Generation })
	if s.Models["det"].Version != "3" || s.Models["vad"].Version != "1" || s.Generations.Groups["cams"] != 2 {
		t.Fatalf("merged state %+v", s)
	}

	// A stale generation published later (a delayed or replayed message) is rejected.
	stale, _ := wire.DesiredState{Protocol: 1, Generation: 1, Models: map[string]wire.ModelSpec{"det": {Version: "0"}}}.Encode()
	if err := cloud.Publish(context.Background(), tp.NodeDesired("n1"), false, stale); err != nil {
		t.Fatal(err)
	}
	// And hostile payloads are rejected.
	for _, bad := range []string{`{`, `{"protocol":1,"generation":9,"models":{},"x":1}`, `{"protocol":1,"generation":"9","models":{}}`} {
		if err := cloud.Publish(context.Background(), tp.NodeDesired("n1"), false, []byte(bad)); err != nil {
			t.Fatal(err)
		}
	}
	testwait.For(t, "the stale and hostile messages rejected", func() bool {
		return rej.Count(wire.KindDesired, wire.ReasonStaleGeneration) >= 1 && rej.Count(wire.KindDesired, wire.ReasonBadJSON) >= 3
	}, deadline)
	if got := w.Snapshot(); got.Models["det"].Version != "3" {
		t.Fatalf("state moved after stale message: %+v", got)
	}
}

func TestNewRejectsBadNames(t *testing.T) {
	if _, err := New(Config{Node: "a/b"}, nil, nil, nil, zerolog.Nop()); err == nil {
		t.Fatal("bad node accepted")
	}
	if _, err := New(Config{Node: "n", Groups: []string{"#"}}, nil, nil, nil, zerolog.Nop()); err == nil {
		t.Fatal("bad group accepted")
	}
}

// TestGenerationPoisonRejected is issue 14's finding: a desired state with
// generation 2^64-1 on a group topic was accepted and persisted, and
// afterwards nothing could be written there (edgectl's next generation
// wrapped to 0). It is rejected now (over 2^53-1); edgectl refuses to build
// on it, and with DeployOptions.ReplaceInvalid writes the generation after the highest one
// the nodes report, which the node accepts.
func TestGenerationPoisonRejected(t *testing.T) {
	m := brokertest.StartMosquitto(t, brokertest.Options{})
	cloud := mqttlinktest.Connect(t, m.URL(), "edgectl")
	deploy(t, cloud, fleet.Target{Group: "cams"}, "det", "1")
	d2 := deploy(t, cloud, fleet.Target{Group: "cams"}, "det", "2")

	node := mqttlinktest.Connect(t, m.URL(), "edge-node-n1")
	rej, _ := wire.NewRejecter(nil, zerolog.Nop())
	rec := &recorder{}
	w, err := New(Config{Topics: tp, Node: "n1", Groups: []string{"cams"}}, node, rec, rej, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	rec.waitFor(t, "generation 2", func(s Snapshot) bool { return s.Generations.Groups["cams"] == d2.Generation })
	// What the node reports (its reconciler publishes this).
	st, err := wire.Status{Protocol: 1, Node: "n1", Time: time.Now().UTC().Format(time.RFC3339),
		Desired: wire.AppliedGenerations{Groups: map[string]uint64{"cams": d2.Generation}}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := cloud.Publish(context.Background(), tp.Status("n1"), true, st); err != nil {
		t.Fatal(err)
	}

	poison := []byte(`{"protocol":1,"generation":18446744073709551615,"models":{}}`)
	if err := cloud.Publish(context.Background(), tp.GroupDesired("cams"), true, poison); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the poisoned generation rejected", func() bool {
		return rej.Count(wire.KindDesired, wire.ReasonBadField) >= 1
	}, deadline)
	if g := w.Snapshot().Generations.Groups["cams"]; g != d2.Generation {
		t.Fatalf("group generation %d after the poison, want %d", g, d2.Generation)
	}

	dctx, dcancel := context.WithTimeout(context.Background(), deadline)
	defer dcancel()
	spec := wire.ModelSpec{Version: "3"}
	if d, err := fleet.DeployWith(dctx, cloud, tp, fleet.Target{Group: "cams"}, "det", spec, fleet.DeployOptions{Quiet: 300 * time.Millisecond}); err == nil {
		t.Fatalf("deploy over the poisoned state published generation %d", d.Generation)
	}
	d3, err := fleet.DeployWith(dctx, cloud, tp, fleet.Target{Group: "cams"}, "det", spec, fleet.DeployOptions{Quiet: 300 * time.Millisecond, ReplaceInvalid: true})
	if err != nil {
		t.Fatal(err)
	}
	if d3.Generation != d2.Generation+1 {
		t.Fatalf("replacing generation %d, want %d (after the nodes' highest)", d3.Generation, d2.Generation+1)
	}
	rec.waitFor(t, "the replacing generation", func(s Snapshot) bool {
		return s.Generations.Groups["cams"] == d3.Generation && s.Models["det"].Version == "3"
	})
}
