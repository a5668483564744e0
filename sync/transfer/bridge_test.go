package transfer

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/internal/testwait"
	"github.com/edgeai/edge-node/sync/brokertest"
	"github.com/edgeai/edge-node/sync/wire"
)

// siteBridge is the mosquitto bridge of a site broker to the fleet broker
// at address, as docs/operations.md ("A site broker bridged to the fleet
// broker") writes it, without its TLS lines and with a quick restart.
func siteBridge(address string) []string {
	r := topics.Root
	return []string{
		"connection fleet",
		"address " + address,
		"remote_clientid site-bridge-1",
		"cleansession false",
		"bridge_protocol_version mqttv311",
		"try_private true",
		"notifications false",
		"restart_timeout 1",
		"topic " + r + "/chunks/# in 1",
		"topic " + r + "/models/# in 1",
		"topic " + r + "/nodes/+/desired in 1",
		"topic " + r + "/groups/+/desired in 1",
		"topic " + r + "/nodes/+/status out 1",
		"topic " + r + "/nodes/+/presence out 1",
		"topic " + r + "/nodes/+/events out 1",
	}
}

// TestSiteBrokerBridgeCarriesAVersionOnce: ten nodes on a site broker that
// is bridged to the fleet broker all fetch and verify a version, and the
// bytes that cross the WAN (a byte-counting proxy between the bridge and the
// fleet broker) are within 1.2× of what one node fetching straight from the
// fleet broker through the same kind of proxy moves: the site broker
// receives each retained chunk once and serves the ten nodes itself.
func TestSiteBrokerBridgeCarriesAVersionOnce(t *testing.T) {
	const nodes = 10
	e := newEnv(t) // e.m is the fleet broker
	model := pseudoRandom(61, 8<<20)
	m, _ := e.publish("1", model, nil)
	want := map[string][]byte{"model.onnx": model}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// One node straight from the fleet broker, through a proxy: the WAN
	// cost of one fetch.
	direct := brokertest.NewProxy(t, e.m.Addr())
	one := e.bridgeNode(direct.URL(), "edge-node-direct")
	if _, err := one.fetcher.Fetch(ctx, m, nil); err != nil {
		t.Fatalf("direct fetch: %v", err)
	}
	checkFiles(t, one.store, m, want)
	one.stop()
	up, down := direct.Bytes()
	oneFetch := up + down

	// The site: its broker bridged to the fleet broker through a proxy,
	// ten nodes on it.
	wan := brokertest.NewProxy(t, e.m.Addr())
	site := brokertest.StartMosquitto(t, brokertest.Options{GlobalConf: siteBridge(strings.TrimPrefix(wan.URL(), "tcp://"))})
	var wg sync.WaitGroup
	errs := make([]error, nodes)
	ns := make([]*node, nodes)
	for i := range nodes {
		ns[i] = e.bridgeNode(site.URL(), fmt.Sprintf("edge-node-site-%d", i))
	}
	start := time.Now()
	for i, n := range ns {
		wg.Go(func() { _, errs[i] = n.fetcher.Fetch(ctx, m, nil) })
	}
	wg.Wait()
	took := time.Since(start)
	for i, n := range ns {
		if errs[i] != nil {
			t.Fatalf("site node %d: %v; site broker log:\n%s", i, errs[i], site.Log())
		}
		checkFiles(t, n.store, m, want)
	}
	up, down = wan.Bytes()
	bridged := up + down
	size := m.Files[0].Size + m.Files[1].Size
	t.Logf("version of %d bytes: one direct fetch moved %d bytes through its proxy; %d nodes behind the bridge moved %d bytes over the WAN (%.3f× one fetch, %.3f× the version) in %v",
		size, oneFetch, nodes, bridged, float64(bridged)/float64(oneFetch), float64(bridged)/float64(size), took.Round(time.Millisecond))
	if bridged < size {
		t.Fatalf("only %d bytes crossed the WAN proxy for a %d-byte version: the site nodes did not get it over the bridge", bridged, size)
	}
	if float64(bridged) > 1.2*float64(oneFetch) {
		t.Errorf("%d nodes behind the bridge moved %d WAN bytes, more than 1.2× one fetch (%d)", nodes, bridged, oneFetch)
	}
}

// TestSiteBridgePullsEveryRetainedChunk measures the bridge's cost: its
// subscription to {root}/chunks/# brings the site broker every retained
// chunk of the fleet broker, of every version, whether a node of the site
// wants it or not (mosquitto bridges subscribe their topic patterns when
// they connect; they cannot subscribe per demand).
func TestSiteBridgePullsEveryRetainedChunk(t *testing.T) {
	e := newEnv(t)
	wanted, other := pseudoRandom(71, 4<<20), pseudoRandom(72, 4<<20)
	m, _ := e.publish("1", wanted, nil)
	m2, _ := e.publish("2", other, nil)
	wan := brokertest.NewProxy(t, e.m.Addr())
	site := brokertest.StartMosquitto(t, brokertest.Options{GlobalConf: siteBridge(strings.TrimPrefix(wan.URL(), "tcp://"))})
	n := e.bridgeNode(site.URL(), "edge-node-site-0")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := n.fetcher.Fetch(ctx, m, nil); err != nil {
		t.Fatal(err)
	}
	checkFiles(t, n.store, m, map[string][]byte{"model.onnx": wanted})
	both := m.Files[0].Size + m.Files[1].Size + m2.Files[0].Size // the config.yaml is one chunk, shared
	testwait.For(t, "the bridge to bring version 2's chunks too", func() bool { _, d := wan.Bytes(); return d >= both }, 30*time.Second)
	up, down := wan.Bytes()
	t.Logf("one node fetched version 1 (%d bytes); the bridge brought %d bytes (%d up): both versions' chunks, %d bytes",
		m.Files[0].Size+m.Files[1].Size, down, up, both)
}

// bridgeNode is a node's side of a transfer under its own client id, with
// its own store in a temp dir.
func (e *env) bridgeNode(url, id string) *node {
	e.t.Helper()
	link, stop := runLink(e.t, url, id)
	st := openStore(e.t, e.t.TempDir())
	ss := NewStoreSink(st)
	e.t.Cleanup(func() { ss.Close() })
	rej, err := wire.NewRejecter(nil, zerolog.Nop())
	if err != nil {
		e.t.Fatal(err)
	}
	f, err := NewFetcher(Config{Topics: topics, StallTimeout: 10 * time.Second}, link, ss, rej, zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		e.t.Fatal(err)
	}
	return &node{link: link, stop: stop, store: st, fetcher: f, rej: rej}
}
