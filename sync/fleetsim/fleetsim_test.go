package fleetsim

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/sync/brokertest"
	"github.com/edgeai/edge-node/sync/fleet"
	"github.com/edgeai/edge-node/sync/mqttlink"
	"github.com/edgeai/edge-node/sync/mqttlink/mqttlinktest"
	"github.com/edgeai/edge-node/sync/wire"
)

func TestGateFailsFraction(t *testing.T) {
	p := Profile{FailGate: map[string]float64{"bad": 0.3}}
	fails := 0
	for i := 0; i < 10000; i++ {
		id := fmt.Sprintf("sim-%05d", i)
		if p.GateFails(id, "bad") {
			fails++
		}
		if p.GateFails(id, "good") {
			t.Fatal("a version without a failure fraction failed")
		}
		if p.GateFails(id, "bad") != p.GateFails(id, "bad") {
			t.Fatal("not deterministic")
		}
	}
	if fails < 2700 || fails > 3300 {
		t.Fatalf("%d of 10000 failed, want about 3000", fails)
	}
}

// TestNodesReportInWireFormat: simulated nodes publish retained status and
// presence that the cloud-side decoders accept, with labels and groups, and
// follow a desired-state write through Downloading/Canary to Active or a
// failed gate.
func TestNodesReportInWireFormat(t *testing.T) {
	m := brokertest.StartMosquitto(t, brokertest.Options{})
	tp := wire.Topics{Root: wire.DefaultRoot}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f, err := Start(ctx, Config{BrokerURL: m.URL(), Topics: tp, Nodes: 4, Groups: []string{"cams"},
		Initial: map[string]string{"det": "1"}, Profile: Profile{Download: 20 * time.Millisecond, Gate: 20 * time.Millisecond,
			BaseP99Ms: 10, FailGate: map[string]float64{"2": 0.5}}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l := cloudLink(t, m.URL())
	views, err := fleet.ReadNodes(ctx, l, tp, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(views) != 4 {
		t.Fatalf("%d nodes reported", len(views))
	}
	for id, v := range views {
		if v.Err != nil || v.Status == nil || v.Presence == nil || !v.Presence.Online {
			t.Fatalf("node %s: %+v", id, v)
		}
		if v.Status.Labels["arch"] == "" || v.Status.Models["det"].Version != "1" || v.Status.Models["det"].State != "Active" {
			t.Fatalf("node %s status %+v", id, v.Status)
		}
		if _, ok := v.Status.Desired.Groups["cams"]; !ok {
			t.Fatalf("node %s does not list its group: %+v", id, v.Status.Desired)
		}
	}
	spec := wire.ModelSpec{Version: "2", Strategy: &wire.Strategy{Kind: wire.StrategyCanary, CanaryPercent: 10},
		Rollout: &wire.RolloutRef{ID: "r1", Wave: 1}}
	for _, id := range f.IDs() {
		if _, err := fleet.DeployWith(ctx, l, tp, fleet.Target{Node: id}, "det", spec, fleet.DeployOptions{Quiet: 200 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		views, err = fleet.ReadNodes(ctx, l, tp, 200*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		final := 0
		for id, v := range views {
			ms := v.Status.Models["det"]
			want := "Active"
			if f.cfg.Profile.GateFails(id, "2") {
				want = "Failed"
			}
			if ms.State == want && ms.Version == "2" && ms.Rollout != nil && *ms.Rollout == *spec.Rollout && v.Status.Desired.Node == 1 {
				final++
			}
		}
		if final == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nodes did not settle: %+v", views)
		}
	}
	for id, ds := range f.Downloads("det") {
		if fmt.Sprint(ds) != "[2]" {
			t.Fatalf("node %s downloads %v", id, ds)
		}
	}
	if st := f.Stats(); st.Published == 0 || st.Received < 4 {
		t.Fatalf("stats %+v", st)
	}
}

// cloudLink is a connected clean-session link on url, as the cloud side.
func cloudLink(t *testing.T, url string) *mqttlink.Link {
	t.Helper()
	cfg := mqttlink.DefaultConfig()
	cfg.BrokerURL, cfg.ClientID, cfg.CleanSession = url, "cloud", true
	l, _ := mqttlinktest.Start(t, cfg, mqttlinktest.Options{})
	mqttlinktest.WaitUp(t, l)
	return l
}
