package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgeai/edge-node/inference/inferencetest"
	"github.com/edgeai/edge-node/internal/testwait"
	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/node/reconcile"
	"github.com/edgeai/edge-node/sync/brokertest"
	"github.com/edgeai/edge-node/sync/chunker"
	"github.com/edgeai/edge-node/sync/fleet"
	"github.com/edgeai/edge-node/sync/mqttlink"
	"github.com/edgeai/edge-node/sync/mqttlink/mqttlinktest"
	"github.com/edgeai/edge-node/sync/wire"
)

// The cloud tests run a real node (real ONNX Runtime, real store) against a
// real mosquitto, and drive it the way edgectl does: fleet.PublishModel
// (chunks + signed manifest, retained), fleet.DeployWith (desired state with the
// next generation). Waits have generous deadlines; nothing is timed.

const cloudDeadline = 3 * time.Minute

var cloudTopics = wire.Topics{Root: wire.DefaultRoot}

// cloudEnv is the cloud side: a broker, an edgectl-like link, a signing key
// and its PEM public key file.
type cloudEnv struct {
	t       *testing.T
	m       *brokertest.Mosquitto
	link    *mqttlink.Link
	key     ed25519.PrivateKey
	pubFile string
	src     string
	// lineage, if set, is signed into the manifests publish makes.
	lineage *models.Lineage
	// config, if set, is the config.yaml publish puts in the manifest
	// (default: intra_op_threads: 1).
	config string
}

func newCloudEnv(t *testing.T) *cloudEnv {
	t.Helper()
	m := brokertest.StartMosquitto(t, brokertest.Options{})
	e := newKeyedEnv(t)
	e.m = m
	e.link = mqttlinktest.Connect(t, m.URL(), "edgectl-test")
	return e
}

// newKeyedEnv is a cloudEnv with its signing key (release.pub) and no
// broker or link yet.
func newKeyedEnv(t *testing.T) *cloudEnv {
	t.Helper()
	e := &cloudEnv{t: t, src: t.TempDir()}
	e.key, e.pubFile = newKeyFile(t, e.src, "release")
	return e
}

// newKeyFile makes an ed25519 key pair and writes its public half to
// dir/name.pub (PEM, what edgectl keygen writes).
func newKeyFile(t *testing.T, dir, name string) (ed25519.PrivateKey, string) {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, pubPEM, err := wire.MarshalKeyPairPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name+".pub")
	if err := os.WriteFile(p, pubPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return key, p
}

// nodeConfig is testConfig with the cloud link on, to url, as node n1.
func (e *cloudEnv) nodeConfig(dataDir, repo, url string) Config {
	cfg := testConfig(e.t, dataDir, repo)
	cfg.Cloud.Disabled = false
	cfg.Cloud.Broker = url
	cfg.Cloud.NodeID = "n1"
	cfg.Cloud.TrustedKeyFiles = []string{e.pubFile}
	cfg.Cloud.StallTimeout = 2 * time.Second
	cfg.Cloud.BackoffMax = time.Second
	return cfg
}

// publish publishes model/version (with config.yaml in the manifest), signed
// with key; skip lists chunks not to send.
func (e *cloudEnv) publish(key ed25519.PrivateKey, model, version string, data []byte, skip map[string]bool) models.Manifest {
	e.t.Helper()
	p := filepath.Join(e.src, model+"-"+version+".onnx")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cloudDeadline)
	defer cancel()
	config := e.config
	if config == "" {
		config = "intra_op_threads: 1\n"
	}
	m, _, err := fleet.PublishModel(ctx, e.link, cloudTopics, model, version,
		[]fleet.FileSpec{{Path: p, Name: "model.onnx", Role: wire.RoleModel}}, key,
		fleet.PublishOptions{Skip: skip, Config: config, Lineage: e.lineage})
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

func (e *cloudEnv) deploy(model, version string) wire.DesiredState {
	e.t.Helper()
	return e.deploySpec(model, wire.ModelSpec{Version: version})
}

// deploySigned deploys model/version on n1 signed with key (nil:
// unsigned), with opts' other settings.
func (e *cloudEnv) deploySigned(key ed25519.PrivateKey, model, version string, opts fleet.DeployOptions) wire.DesiredState {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cloudDeadline)
	defer cancel()
	opts.Quiet, opts.Key = 300*time.Millisecond, key
	d, err := fleet.DeployWith(ctx, e.link, cloudTopics, fleet.Target{Node: "n1"}, model, wire.ModelSpec{Version: version}, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

// startServingCls starts node n1 on the broker serving ppocr_cls/1 from its
// model repository.
func (e *cloudEnv) startServingCls() *runningNode {
	e.t.Helper()
	repo := e.t.TempDir()
	addToRepo(e.t, repo, "ppocr_cls", "1", modelBytes(e.t, "ppocr_cls", ""))
	return startNode(e.t, e.nodeConfig(e.t.TempDir(), repo, e.m.URL()))
}

// status reads the node's retained status.
func (e *cloudEnv) status() (wire.Status, bool) {
	e.t.Helper()
	return e.statusOf("n1")
}

// statusOf reads node id's retained status.
func (e *cloudEnv) statusOf(id string) (wire.Status, bool) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cloudDeadline)
	defer cancel()
	got, err := fleet.ReadRetained(ctx, e.link, cloudTopics.Status(id), 200*time.Millisecond)
	if err != nil {
		e.t.Fatal(err)
	}
	b, ok := got[cloudTopics.Status(id)]
	if !ok {
		return wire.Status{}, false
	}
	st, err := wire.DecodeStatus(b)
	if err != nil {
		e.t.Fatalf("node published an invalid status: %v", err)
	}
	return st, true
}

// events collects the node's events as they arrive.
type events struct {
	mu  sync.Mutex
	got []wire.Event
}

// subscribeOrdered subscribes to topic with a plain paho client whose
// handler runs in arrival order (mqttlink runs handlers concurrently, which
// would shuffle them): handle sees the order the broker delivered.
func (e *cloudEnv) subscribeOrdered(clientID, topic string, handle func(payload []byte)) {
	e.t.Helper()
	o := paho.NewClientOptions().AddBroker(e.m.URL()).SetClientID(clientID).SetOrderMatters(true).SetAutoReconnect(true)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(cloudDeadline) || tok.Error() != nil {
		e.t.Fatalf("%s client: %v", clientID, tok.Error())
	}
	e.t.Cleanup(func() { c.Disconnect(100) })
	tok := c.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) { handle(m.Payload()) })
	if !tok.WaitTimeout(cloudDeadline) || tok.Error() != nil {
		e.t.Fatalf("subscribe %s: %v", topic, tok.Error())
	}
}

// subscribeEvents collects the node's events in the order the broker
// delivered them.
func (e *cloudEnv) subscribeEvents() *events {
	e.t.Helper()
	ev := &events{}
	e.subscribeOrdered("events-test", cloudTopics.Events("n1"), func(b []byte) {
		var x wire.Event
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		err := dec.Decode(&x)
		if err == nil {
			err = x.Validate()
		}
		if err != nil {
			e.t.Errorf("node published an invalid event: %v", err)
			return
		}
		ev.mu.Lock()
		ev.got = append(ev.got, x)
		ev.mu.Unlock()
	})
	return ev
}

func (ev *events) snapshot() []wire.Event {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return append([]wire.Event(nil), ev.got...)
}

// waitFor waits up to cloudDeadline until cond holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, what, cond, cloudDeadline)
}

// transferOf is where the bytes of model/version's transfer came from, as
// GET /admin/models/{model} reports it.
func transferOf(t *testing.T, url, model, version string) models.TransferStats {
	t.Helper()
	v, ok := versionOf(adminModel(t, url, model), version)
	if !ok || v.Transfer == nil {
		t.Fatalf("%s/%s: no transfer figures in %+v", model, version, v)
	}
	return *v.Transfer
}

func activeVersion(t *testing.T, url, model string) string {
	return adminModel(t, url, model).Active
}

// TestCloudDeployActivatesAndServes is issue 5's end-to-end path: publish
// with edgectl's library code → deploy → the node downloads, verifies,
// activates, and serves the new version over REST, while v1 served all
// along; status (retained) and events (in order) report it. Then a bad
// signature and a stale generation leave the Active version untouched.
func TestCloudDeployActivatesAndServes(t *testing.T) {
	e := newCloudEnv(t)
	repo := t.TempDir()
	addToRepo(t, repo, "ppocr_cls", "1", modelBytes(t, "ppocr_cls", ""))
	cfg := e.nodeConfig(t.TempDir(), repo, e.m.URL())
	cfg.Cloud.Groups = []string{"cams"}
	cfg.Cloud.Labels = map[string]string{"site": "lab-1"}
	rn := startNode(t, cfg)
	if got := inferAndCompare(t, rn.url, "ppocr_cls", "ppocr_cls", clsInput()); got != "1" {
		t.Fatalf("served version %q before the deploy, want 1", got)
	}
	ev := e.subscribeEvents()
	waitFor(t, "the node's first status", func() bool { _, ok := e.status(); return ok })
	// Fleet selection: the node reports its labels (configured and its own)
	// and its configured groups before any group desired state exists.
	if st, _ := e.status(); st.Labels["site"] != "lab-1" || st.Labels["arch"] != runtime.GOARCH {
		t.Errorf("status labels %v, want site=lab-1 and arch=%s", st.Labels, runtime.GOARCH)
	} else if g, ok := st.Desired.Groups["cams"]; !ok || g != 0 {
		t.Errorf("status groups %v, want cams at generation 0", st.Desired.Groups)
	}

	e.publish(e.key, "ppocr_cls", "2", modelBytes(t, "ppocr_cls", "v2"), nil)
	start := time.Now()
	d := e.deploy("ppocr_cls", "2")
	published := time.Since(start) // edgectl's read of the retained state (300 ms quiet) + publish
	waitFor(t, "version 2 active", func() bool { return activeVersion(t, rn.url, "ppocr_cls") == "2" })
	serving := time.Since(start)
	if got := inferAndCompare(t, rn.url, "ppocr_cls", "ppocr_cls", clsInput()); got != "2" {
		t.Fatalf("served version %q after the deploy, want 2", got)
	}
	t.Logf("FIGURE deploy→serving (ppocr_cls v2, %d bytes, loopback mosquitto): %v from the deploy call (%v of it in the deploy call itself), %v from its publish",
		len(modelBytes(t, "ppocr_cls", "v2")), serving, published, serving-published)
	mi := adminModel(t, rn.url, "ppocr_cls")
	if mi.Previous != "1" {
		t.Errorf("previous = %q, want 1 (the rollback target)", mi.Previous)
	}

	waitFor(t, "status: v2 Active at the deployed generation", func() bool {
		st, ok := e.status()
		ms := st.Models["ppocr_cls"]
		return ok && ms.Version == "2" && ms.State == "Active" && st.Desired.Node == d.Generation
	})
	want := []string{"Announced", "Downloading", "Verifying", "Ready", "Loading", "Warming", "Active"}
	waitFor(t, "events for v2 up to Active", func() bool {
		var states []string
		for _, x := range ev.snapshot() {
			if x.Model == "ppocr_cls" && x.Version == "2" {
				states = append(states, x.State)
			}
		}
		return strings.Join(states, ",") == strings.Join(want[1:], ",") || strings.Join(states, ",") == strings.Join(want, ",")
	})
	checkEventOrder(t, ev.snapshot())

	// A version signed by a key the node does not trust: recorded as
	// Failed(SignatureInvalid), reported, and v2 keeps serving.
	_, evil, _ := ed25519.GenerateKey(rand.Reader)
	e.publish(evil, "ppocr_cls", "3", modelBytes(t, "ppocr_cls", "v3"), nil)
	e.deploy("ppocr_cls", "3")
	waitFor(t, "status: v3 Failed(SignatureInvalid)", func() bool {
		st, _ := e.status()
		ms := st.Models["ppocr_cls"]
		return ms.Version == "3" && ms.State == "Failed" && ms.Reason == "SignatureInvalid"
	})
	if v, ok := versionOf(adminModel(t, rn.url, "ppocr_cls"), "3"); ok && (v.State != models.Failed || v.Reason != models.ReasonSignatureInvalid) {
		t.Errorf("v3 recorded as %s(%s)", v.State, v.Reason)
	}
	if got := inferAndCompare(t, rn.url, "ppocr_cls", "ppocr_cls", clsInput()); got != "2" {
		t.Fatalf("after a forged v3 the node serves %q, want 2", got)
	}
	if a := activeVersion(t, rn.url, "ppocr_cls"); a != "2" {
		t.Fatalf("active = %q after a forged v3", a)
	}

	// A stale generation (lower than the node accepted) is rejected and
	// counted; the Active version does not move.
	stale := wire.DesiredState{Protocol: 1, Generation: 1, Models: map[string]wire.ModelSpec{"ppocr_cls": {Version: "1"}}}
	b, err := stale.Encode()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cloudDeadline)
	defer cancel()
	if err := e.link.Publish(ctx, cloudTopics.NodeDesired("n1"), false, b); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the stale generation counted", func() bool {
		return metricValue(t, rn.url, `edge_link_rejected_total{kind="desired",reason="stale_generation"}`) >= 1
	})
	if a := activeVersion(t, rn.url, "ppocr_cls"); a != "2" {
		t.Fatalf("active = %q after a stale desired state", a)
	}
}

// checkEventOrder: after dropping QoS 1 redeliveries (a seq seen before,
// which the cloud deduplicates by (node, seq)), seq goes up by exactly one
// from each event to the next: the outbox flushes in order, losing nothing.
// It returns the deduplicated events.
func checkEventOrder(t *testing.T, evs []wire.Event) []wire.Event {
	t.Helper()
	seen := map[uint64]bool{}
	var out []wire.Event
	for _, x := range evs {
		if seen[x.Seq] {
			continue
		}
		seen[x.Seq] = true
		if n := len(out); n > 0 && x.Seq != out[n-1].Seq+1 {
			t.Fatalf("event seq %d after %d: out of order or lost", x.Seq, out[n-1].Seq)
		}
		out = append(out, x)
	}
	return out
}

// metricValue scrapes /metrics for one sample line (name with labels).
func metricValue(t *testing.T, url, sample string) float64 {
	t.Helper()
	code, _, body := call(t, "GET", url+"/metrics", nil, nil)
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, sample+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err == nil {
				return v
			}
		}
	}
	return 0
}

// TestCloudOfflineLandsOnLatestAndFlushesEventsInOrder: the node's network
// is cut (a proxy, so the broker stays up and sees the socket drop); while
// it is away, desired state changes twice (v2, then v3) and the node's
// state changes locally (admin activations: reports queue in the store's
// outbox). On reconnect the node lands on v3 (v2 never becomes Active),
// and every event reaches the cloud once, in order.
func TestCloudOfflineLandsOnLatestAndFlushesEventsInOrder(t *testing.T) {
	e := newCloudEnv(t)
	proxy := brokertest.NewProxy(t, e.m.Addr())
	repo := t.TempDir()
	addToRepo(t, repo, "ppocr_cls", "0", modelBytes(t, "ppocr_cls", "v0"))
	addToRepo(t, repo, "ppocr_cls", "1", modelBytes(t, "ppocr_cls", ""))
	rn := startNode(t, e.nodeConfig(t.TempDir(), repo, proxy.URL()))
	ev := e.subscribeEvents()
	waitFor(t, "the node online", func() bool { return metricValue(t, rn.url, "edge_link_connected") == 1 })
	e.publish(e.key, "ppocr_cls", "2", modelBytes(t, "ppocr_cls", "v2"), nil)
	e.publish(e.key, "ppocr_cls", "3", modelBytes(t, "ppocr_cls", "v3"), nil)
	// The boot's own reports (v1 imported and made Active) must be out
	// before the network goes down, or they would count as offline ones.
	waitFor(t, "the boot events flushed", func() bool {
		for _, x := range ev.snapshot() {
			if x.Version == "1" && x.State == "Active" {
				return true
			}
		}
		return false
	})

	proxy.SetDown(true)
	waitFor(t, "the node offline", func() bool { return metricValue(t, rn.url, "edge_link_connected") == 0 })
	e.deploy("ppocr_cls", "2")
	d := e.deploy("ppocr_cls", "3")
	for _, v := range []string{"0", "1"} { // local changes while offline: reports queue
		if code, _, body := call(t, "POST", rn.url+"/admin/models/ppocr_cls/versions/"+v+"/activate", nil, nil); code != http.StatusOK {
			t.Fatalf("activate %s offline: %d %s", v, code, body)
		}
	}
	offlineSeqs := len(ev.snapshot())
	proxy.SetDown(false)

	waitFor(t, "version 3 active", func() bool { return activeVersion(t, rn.url, "ppocr_cls") == "3" })
	if got := inferAndCompare(t, rn.url, "ppocr_cls", "ppocr_cls", clsInput()); got != "3" {
		t.Fatalf("serving %q, want 3", got)
	}
	if v, ok := versionOf(adminModel(t, rn.url, "ppocr_cls"), "2"); ok {
		for _, h := range v.History {
			if h.To == models.Active {
				t.Fatalf("v2 became Active on the way to v3: %+v", v.History)
			}
		}
	}
	waitFor(t, "status at the latest generation", func() bool {
		st, _ := e.status()
		return st.Desired.Node == d.Generation && st.Models["ppocr_cls"].State == "Active" && st.Models["ppocr_cls"].Version == "3"
	})
	waitFor(t, "the event of v3 becoming Active", func() bool {
		for _, x := range ev.snapshot() {
			if x.Version == "3" && x.State == "Active" {
				return true
			}
		}
		return false
	})
	evs := checkEventOrder(t, ev.snapshot())
	var offline []string
	for _, x := range evs[offlineSeqs:] {
		if x.Version == "0" && x.State == "Active" || x.Version == "1" && x.State == "Active" {
			offline = append(offline, x.Version)
		}
	}
	if strings.Join(offline, ",") != "0,1" && strings.Join(offline, ",") != "0,1,1" {
		t.Fatalf("the offline activations arrived as %v, want 0 then 1", offline)
	}
	t.Logf("%d events after reconnect, in order (seq %d..%d)", len(evs)-offlineSeqs, evs[offlineSeqs].Seq, evs[len(evs)-1].Seq)
}

// halfPublish publishes model/version with only its first half of chunks
// (by count) and returns the manifest it will have and the bytes of that
// half: a node fetching it stalls half-way, deterministically.
func (e *cloudEnv) halfPublish(model, version string, data []byte) (skip map[string]bool, halfBytes int64) {
	e.t.Helper()
	p := filepath.Join(e.src, model+"-"+version+"-chunks.onnx")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		e.t.Fatal(err)
	}
	ref, err := chunker.File(p, "model.onnx", wire.RoleModel, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	skip = map[string]bool{}
	first := map[string]bool{}
	for i, c := range ref.Chunks {
		if i < len(ref.Chunks)/2 {
			first[c.SHA256] = true
		}
	}
	for _, c := range ref.Chunks {
		if first[c.SHA256] {
			halfBytes += c.Size
		} else {
			skip[c.SHA256] = true
		}
	}
	e.publish(e.key, model, version, data, skip)
	return skip, halfBytes
}

// TestCloudBrokerKilledMidTransferResumes: the broker is SIGKILLed while
// the node is half-way through a version (the other half is not published
// yet) and restarted; once the rest is published, the transfer completes,
// the version is activated, and no chunk was fetched twice: each distinct
// missing chunk was written from the network exactly once.
func TestCloudBrokerKilledMidTransferResumes(t *testing.T) {
	e := newCloudEnv(t)
	rn := startNode(t, e.nodeConfig(t.TempDir(), "", e.m.URL()))
	data := modelBytes(t, "ppocr_det", "v2")
	skip, half := e.halfPublish("ppocr_det", "2", data)
	e.deploy("ppocr_det", "2")
	var before wire.ModelStatus
	waitFor(t, "half of the chunks stored", func() bool {
		st, _ := e.status()
		before = st.Models["ppocr_det"]
		return before.State == "Downloading" && before.BytesDone >= half
	})
	// Hostile input while the node waits: a payload that does not hash to
	// the chunk topic it is published on (a topic the node is subscribed
	// to). It is rejected and counted; nothing is written.
	pctx, pcancel := context.WithTimeout(context.Background(), cloudDeadline)
	defer pcancel()
	for sha := range skip {
		if err := e.link.Publish(pctx, cloudTopics.Chunk(sha), false, []byte("not the chunk")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the forged chunks counted", func() bool {
		return metricValue(t, rn.url, `edge_link_rejected_total{kind="chunk",reason="chunk_mismatch"}`) >= 1
	})
	e.m.Kill()
	e.m.Start()
	ctx, cancel := context.WithTimeout(context.Background(), cloudDeadline)
	defer cancel()
	if err := e.link.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	e.publish(e.key, "ppocr_det", "2", data, nil) // everything (the crash may have lost retained chunks)
	waitFor(t, "version 2 active", func() bool { return activeVersion(t, rn.url, "ppocr_det") == "2" })
	res := transferOf(t, rn.url, "ppocr_det", "2")
	if res.ChunksNetwork != res.UniqueMissing || res.BytesNetwork > res.BytesTotal {
		t.Fatalf("chunks written from the network %d, distinct missing %d: %+v", res.ChunksNetwork, res.UniqueMissing, res)
	}
	t.Logf("FIGURE broker SIGKILL mid-transfer: %d of %d bytes stored before the kill; after restart the fetch completed with %d distinct chunks each written once from the network (%d bytes of %d), %d duplicate deliveries ignored, %d window re-subscriptions",
		before.BytesDone, before.BytesTotal, res.ChunksNetwork, res.BytesNetwork, res.BytesTotal, res.Duplicates, res.Resubscribes)
}

// TestCloudFineTuneMovesFewBytes: the node serves ppocr_det v1 imported
// from its model repository (chunk-indexed at import); v2 differs from v1
// in one weight tensor (sync/transfer/testdata/finetune.py, Debian's
// python3 with onnx). Deploying v2 moves only the chunks of the changed
// tensor (the publisher and the import cut at tensor edges: at most 1.10×
// its bytes, issue 14); the rest is copied from v1's blob on the device.
func TestCloudFineTuneMovesFewBytes(t *testing.T) {
	const python = "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		t.Skipf("no %s", python)
	}
	e := newCloudEnv(t)
	v1 := modelBytes(t, "ppocr_det", "")
	repo := t.TempDir()
	addToRepo(t, repo, "ppocr_det", "1", v1)
	v2Path := filepath.Join(t.TempDir(), "v2.onnx")
	out, err := exec.Command(python, "../sync/transfer/testdata/finetune.py", filepath.Join(repo, "ppocr_det", "1", "model.onnx"), v2Path, "conv2d_421.w_0").CombinedOutput()
	if err != nil {
		if os.Getenv("EDGE_REQUIRE_PYONNX") != "" {
			t.Fatalf("finetune.py (needs python3-onnx: apt-get install python3-onnx, or make deps): %v\n%s", err, out)
		}
		t.Skipf("finetune.py (needs python3-onnx): %v\n%s", err, out)
	}
	v2, err := os.ReadFile(v2Path)
	if err != nil {
		t.Fatal(err)
	}
	rn := startNode(t, e.nodeConfig(t.TempDir(), repo, e.m.URL()))
	e.publish(e.key, "ppocr_det", "2", v2, nil)
	start := time.Now()
	e.deploy("ppocr_det", "2")
	waitFor(t, "version 2 active", func() bool { return activeVersion(t, rn.url, "ppocr_det") == "2" })
	took := time.Since(start)
	res := transferOf(t, rn.url, "ppocr_det", "2")
	frac := float64(res.BytesNetwork) / float64(res.BytesTotal)
	t.Logf("FIGURE fine-tune (%s): ppocr_det v2 = %d bytes; moved over the network %d bytes in %d chunks (%.1f%%), copied from v1 on the device %d bytes in %d chunks; deploy→serving %v",
		strings.TrimSpace(string(out)), res.BytesTotal, res.BytesNetwork, res.ChunksNetwork, 100*frac, res.BytesLocal, res.ChunksLocal, took)
	if res.BytesNetwork+res.BytesLocal+res.BytesResumed != res.BytesTotal || res.ChunksLocal == 0 || frac > 0.5 {
		t.Fatalf("fine-tune moved %.1f%% of the model: %+v", 100*frac, res)
	}
	// Issue 14: tensor-aligned chunks move little more than the tensor.
	var changed int64
	if _, err := fmt.Sscanf(strings.TrimSpace(string(out)), "changed conv2d_421.w_0: %d bytes", &changed); err != nil || changed <= 0 {
		t.Fatalf("finetune.py said %q: %v", out, err)
	}
	if ratio := float64(res.BytesNetwork) / float64(changed); ratio > 1.10 {
		t.Fatalf("moved %d bytes for a %d-byte tensor (%.2f×), want at most 1.10×", res.BytesNetwork, changed, ratio)
	}
}

// TestApplyDesiredFromAnotherSource is the entry point a KubeEdge bridge
// uses: a whole desired model map from a named source at a generation. It
// reconciles through the same path as MQTT; a generation that is not newer
// than the last one from that source is refused and changes nothing.
func TestApplyDesiredFromAnotherSource(t *testing.T) {
	e := newCloudEnv(t)
	rn := e.startServingCls()
	e.publish(e.key, "ppocr_cls", "2", modelBytes(t, "ppocr_cls", "v2"), nil)
	ctx, cancel := context.WithTimeout(context.Background(), cloudDeadline)
	defer cancel()
	if err := rn.ApplyDesired(ctx, "kubeedge", 5, map[string]wire.ModelSpec{"ppocr_cls": {Version: "2"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "version 2 active", func() bool { return activeVersion(t, rn.url, "ppocr_cls") == "2" })
	for _, gen := range []uint64{5, 4} {
		err := rn.ApplyDesired(ctx, "kubeedge", gen, map[string]wire.ModelSpec{"ppocr_cls": {Version: "1"}})
		if !errors.Is(err, reconcile.ErrStaleGeneration) {
			t.Fatalf("generation %d again: %v, want reconcile.ErrStaleGeneration", gen, err)
		}
	}
	for name, bad := range map[string]map[string]wire.ModelSpec{
		"bad model name": {"a/b": {Version: "1"}},
		"bad version":    {"ppocr_cls": {Version: "#"}},
	} {
		if err := rn.ApplyDesired(ctx, "kubeedge", 9, bad); !errors.Is(err, models.ErrInvalidArgument) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := rn.ApplyDesired(ctx, reconcile.SourceMQTT, 9, nil); !errors.Is(err, models.ErrInvalidArgument) {
		t.Errorf("the reserved mqtt source: %v", err)
	}
	if got := inferAndCompare(t, rn.url, "ppocr_cls", "ppocr_cls", clsInput()); got != "2" {
		t.Fatalf("serving %q, want 2", got)
	}
}

// TestCloudGenerationsSurviveRestart: the generations a node accepted are
// in its store, so after a restart a desired state older than them is
// still stale (MQTT and other sources alike), and the Active version
// does not move.
func TestCloudGenerationsSurviveRestart(t *testing.T) {
	e := newCloudEnv(t)
	repo, data := t.TempDir(), t.TempDir()
	addToRepo(t, repo, "ppocr_cls", "1", modelBytes(t, "ppocr_cls", ""))
	cfg := e.nodeConfig(data, repo, e.m.URL())
	rn := startNode(t, cfg)
	e.publish(e.key, "ppocr_cls", "2", modelBytes(t, "ppocr_cls", "v2"), nil)
	e.deploy("ppocr_cls", "1")
	d := e.deploy("ppocr_cls", "2")
	waitFor(t, "version 2 active", func() bool { return activeVersion(t, rn.url, "ppocr_cls") == "2" })
	ctx, cancel := context.WithTimeout(context.Background(), cloudDeadline)
	defer cancel()
	if err := rn.ApplyDesired(ctx, "kubeedge", 3, map[string]wire.ModelSpec{}); err != nil {
		t.Fatal(err)
	}
	rn.stop(t)

	rn = startNode(t, cfg)
	waitFor(t, "the restarted node online", func() bool { return metricValue(t, rn.url, "edge_link_connected") == 1 })
	if st, ok := e.status(); !ok || st.Desired.Node != d.Generation {
		t.Fatalf("status after the restart: %+v", st)
	}
	stale := wire.DesiredState{Protocol: 1, Generation: d.Generation - 1, Models: map[string]wire.ModelSpec{"ppocr_cls": {Version: "1"}}}
	b, err := stale.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := e.link.Publish(ctx, cloudTopics.NodeDesired("n1"), false, b); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the stale generation counted after the restart", func() bool {
		return metricValue(t, rn.url, `edge_link_rejected_total{kind="desired",reason="stale_generation"}`) >= 1
	})
	if err := rn.ApplyDesired(ctx, "kubeedge", 3, map[string]wire.ModelSpec{"ppocr_cls": {Version: "1"}}); !errors.Is(err, reconcile.ErrStaleGeneration) {
		t.Fatalf("kubeedge generation 3 after the restart: %v, want reconcile.ErrStaleGeneration", err)
	}
	if a := activeVersion(t, rn.url, "ppocr_cls"); a != "2" {
		t.Fatalf("active = %q after stale desired states", a)
	}
}

// TestCloudOverMutualTLSWithPassword: the node's link configuration
// (cloud.tls CA, client cert and key; username and password) against a
// mosquitto that requires all of them; a deploy goes through.
func TestCloudOverMutualTLSWithPassword(t *testing.T) {
	certs := brokertest.GenerateCerts(t)
	pwfile := filepath.Join(t.TempDir(), "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-b", "-c", pwfile, "n1", "s3cret").CombinedOutput(); err != nil {
		t.Skipf("mosquitto_passwd: %v %s", err, out)
	}
	if out, err := exec.Command("mosquitto_passwd", "-b", pwfile, "cloud", "cl0ud").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v %s", err, out)
	}
	m := brokertest.StartMosquitto(t, brokertest.Options{TLS: true,
		ListenerConf: append(certs.MosquittoTLS(true), "password_file "+pwfile, "allow_anonymous false")})
	e := newKeyedEnv(t)
	e.m = m
	lc := mqttlink.DefaultConfig()
	lc.BrokerURL, lc.ClientID, lc.Username, lc.Password = m.URL(), "edgectl-test", "cloud", "cl0ud"
	lc.TLS = mqttlink.TLSFiles{CAFile: certs.CA, CertFile: certs.ClientCert, KeyFile: certs.ClientKey}
	e.link, _ = mqttlinktest.Start(t, lc, mqttlinktest.Options{})
	mqttlinktest.WaitUp(t, e.link)

	repo := t.TempDir()
	addToRepo(t, repo, "ppocr_cls", "1", modelBytes(t, "ppocr_cls", ""))
	cfg := e.nodeConfig(t.TempDir(), repo, m.URL())
	cfg.Cloud.TLS = CloudTLS{CAFile: certs.CA, CertFile: certs.ClientCert, KeyFile: certs.ClientKey}
	cfg.Cloud.Username, cfg.Cloud.Password = "n1", "s3cret"
	rn := startNode(t, cfg)
	e.publish(e.key, "ppocr_cls", "2", modelBytes(t, "ppocr_cls", "v2"), nil)
	e.deploy("ppocr_cls", "2")
	waitFor(t, "version 2 active over mutual TLS", func() bool { return activeVersion(t, rn.url, "ppocr_cls") == "2" })
	if !strings.HasPrefix(m.URL(), "ssl://") {
		t.Fatalf("broker URL %s is not TLS", m.URL())
	}
}

// TestCloudEmbeddedBroker: with no broker configured the node starts the
// embedded broker (here on a free port instead of 127.0.0.1:1883) and
// connects to it; a publisher on the same device deploys through it.
func TestCloudEmbeddedBroker(t *testing.T) {
	e := newKeyedEnv(t)
	repo := t.TempDir()
	addToRepo(t, repo, "ppocr_cls", "1", modelBytes(t, "ppocr_cls", ""))
	cfg := e.nodeConfig(t.TempDir(), repo, "")
	cfg.Cloud.EmbeddedAddr = "127.0.0.1:0"
	rn := startNode(t, cfg)
	if rn.cloud == nil {
		t.Fatal("no embedded broker")
	}
	e.link = mqttlinktest.Connect(t, rn.cloud.URL(), "edgectl-test")
	e.publish(e.key, "ppocr_cls", "2", modelBytes(t, "ppocr_cls", "v2"), nil)
	e.deploy("ppocr_cls", "2")
	waitFor(t, "version 2 active through the embedded broker", func() bool { return activeVersion(t, rn.url, "ppocr_cls") == "2" })
	if got := inferAndCompare(t, rn.url, "ppocr_cls", "ppocr_cls", clsInput()); got != "2" {
		t.Fatalf("serving %q, want 2", got)
	}
}

// TestCloudFailedActivationKeepsServing: a version that downloads and
// verifies but does not load (not an ONNX model) ends Failed(LoadError),
// reported in status, and the previous version keeps serving.
func TestCloudFailedActivationKeepsServing(t *testing.T) {
	e := newCloudEnv(t)
	rn := e.startServingCls()
	e.publish(e.key, "ppocr_cls", "2", []byte(strings.Repeat("not an onnx model ", 20000)), nil)
	e.deploy("ppocr_cls", "2")
	waitFor(t, "status: v2 Failed(LoadError)", func() bool {
		st, _ := e.status()
		ms := st.Models["ppocr_cls"]
		return ms.Version == "2" && ms.State == "Failed" && ms.Reason == string(models.ReasonLoadError)
	})
	if a := activeVersion(t, rn.url, "ppocr_cls"); a != "1" {
		t.Fatalf("active = %q, want 1", a)
	}
	if got := inferAndCompare(t, rn.url, "ppocr_cls", "ppocr_cls", clsInput()); got != "1" {
		t.Fatalf("serving %q, want 1", got)
	}
}

// A canary strategy written in desired state is carried out by the node's
// own rollout: a candidate that fails on 20% of its inputs is rolled back by
// its error-rate gate, status reports Failed(HealthRegression), and v1 keeps
// serving; the same desired state does not start the failed canary again.
func TestCloudCanaryStrategyRollsBack(t *testing.T) {
	e := newCloudEnv(t)
	repo := t.TempDir()
	b, err := os.ReadFile(rolloutModel("rollout_base"))
	if err != nil {
		t.Fatal(err)
	}
	addToRepo(t, repo, "m", "1", b)
	cfg := e.nodeConfig(t.TempDir(), repo, e.m.URL())
	cfg.Rollout.EvalInterval = 10 * time.Millisecond
	rn := startNode(t, cfg)
	flaky, err := os.ReadFile(rolloutModel("rollout_flaky"))
	if err != nil {
		t.Fatal(err)
	}
	e.publish(e.key, "m", "2", flaky, nil)

	stop := make(chan struct{})
	results := load(t, rn.Node, 2, stop)
	s := strategy(t, `{"kind":"canary","canary_percent":50,"min_requests":50,"min_duration":"10ms","gates":{"max_error_rate":0.05,"max_p99_ratio":1000}}`)
	ctx, cancel := context.WithTimeout(context.Background(), cloudDeadline)
	defer cancel()
	if _, err := fleet.DeployWith(ctx, e.link, cloudTopics, fleet.Target{Node: "n1"}, "m", wire.ModelSpec{Version: "2", Strategy: &s}, fleet.DeployOptions{Quiet: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "status: m/2 Failed(HealthRegression)", func() bool {
		st, _ := e.status()
		ms := st.Models["m"]
		return ms.Version == "2" && ms.State == string(models.Failed) && ms.Reason == string(models.ReasonHealthRegression)
	})
	close(stop)
	res := results()
	served := map[string]int{}
	for _, x := range res {
		served[x.version]++
	}
	if served["2"] == 0 {
		t.Errorf("the canary never answered a request (%v): was the strategy applied?", served)
	}
	if a := activeVersion(t, rn.url, "m"); a != "1" {
		t.Fatalf("active = %q, want 1", a)
	}
	rs, err := rn.store.Rollouts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 || rs[0].Phase != models.RolloutRolledBack {
		t.Fatalf("rollouts %+v, want one, rolled back", rs)
	}
	t.Logf("requests by version during the canary: %v", served)
}

// TestCloudRetainedOversizeDesiredKeepsLink: a retained 8 MiB message on the
// node's desired topic (over cloud.max_message_bytes) is discarded unread and
// counted as rejected(desired, oversize); the node keeps its link and a
// deploy afterwards activates and serves.
func TestCloudRetainedOversizeDesiredKeepsLink(t *testing.T) {
	e := newCloudEnv(t)
	big := filepath.Join(t.TempDir(), "big.bin")
	if err := os.WriteFile(big, make([]byte, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", fmt.Sprint(e.m.Port),
		"-t", cloudTopics.NodeDesired("n1"), "-q", "1", "-r", "-f", big).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v %s", err, out)
	}
	rn := e.startServingCls()
	waitFor(t, "the oversize desired state counted", func() bool {
		return metricValue(t, rn.url, `edge_link_rejected_total{kind="desired",reason="oversize"}`) >= 1
	})
	e.publish(e.key, "ppocr_cls", "2", modelBytes(t, "ppocr_cls", "v2"), nil)
	e.deploy("ppocr_cls", "2")
	waitFor(t, "version 2 active", func() bool { return activeVersion(t, rn.url, "ppocr_cls") == "2" })
	if got := inferAndCompare(t, rn.url, "ppocr_cls", "ppocr_cls", clsInput()); got != "2" {
		t.Fatalf("served version %q after the deploy, want 2", got)
	}
	if n := metricValue(t, rn.url, "edge_link_connects_total"); n != 1 {
		t.Fatalf("%v connections, want 1", n)
	}
}

// TestCloudSignedDesiredState: a node with cloud.allow_unsigned_desired
// false refuses unsigned desired state and one signed by a key it does not
// trust, takes one signed by its manifest key, and treats a replay of an
// older signed state as stale.
func TestCloudSignedDesiredState(t *testing.T) {
	e := newCloudEnv(t)
	repo := t.TempDir()
	addToRepo(t, repo, "ppocr_cls", "1", modelBytes(t, "ppocr_cls", ""))
	cfg := e.nodeConfig(t.TempDir(), repo, e.m.URL())
	cfg.Cloud.AllowUnsignedDesired = false
	rn := startNode(t, cfg)
	e.publish(e.key, "ppocr_cls", "2", modelBytes(t, "ppocr_cls", "v2"), nil)
	ctx, cancel := context.WithTimeout(context.Background(), cloudDeadline)
	defer cancel()
	deploy := func(key ed25519.PrivateKey, opts fleet.DeployOptions) wire.DesiredState {
		t.Helper()
		return e.deploySigned(key, "ppocr_cls", "2", opts)
	}
	deploy(nil, fleet.DeployOptions{})
	waitFor(t, "the unsigned desired state refused", func() bool {
		return metricValue(t, rn.url, `edge_link_rejected_total{kind="desired",reason="unsigned"}`) >= 1
	})
	_, evil, _ := ed25519.GenerateKey(rand.Reader)
	deploy(evil, fleet.DeployOptions{ReplaceInvalid: true})
	waitFor(t, "the desired state signed by an untrusted key refused", func() bool {
		return metricValue(t, rn.url, `edge_link_rejected_total{kind="desired",reason="unknown_key"}`) >= 1
	})
	if a := activeVersion(t, rn.url, "ppocr_cls"); a != "1" {
		t.Fatalf("active = %q after refused desired states", a)
	}
	// The refused states are still retained; the signing writer replaces them.
	old, err := fleet.ReadRetained(ctx, e.link, cloudTopics.NodeDesired("n1"), 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	d := deploy(e.key, fleet.DeployOptions{ReplaceInvalid: true})
	waitFor(t, "signed version 2 active", func() bool { return activeVersion(t, rn.url, "ppocr_cls") == "2" })
	signed1, err := fleet.ReadRetained(ctx, e.link, cloudTopics.NodeDesired("n1"), 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	deploy(e.key, fleet.DeployOptions{})
	waitFor(t, "status at the next signed generation", func() bool {
		st, ok := e.status()
		return ok && st.Desired.Node == d.Generation+1
	})
	// A replay of the first signed state is stale; the evil one is still refused.
	for _, b := range []map[string][]byte{signed1, old} {
		if err := e.link.Publish(ctx, cloudTopics.NodeDesired("n1"), false, b[cloudTopics.NodeDesired("n1")]); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the replayed signed state stale", func() bool {
		return metricValue(t, rn.url, `edge_link_rejected_total{kind="desired",reason="stale_generation"}`) >= 1 &&
			metricValue(t, rn.url, `edge_link_rejected_total{kind="desired",reason="unknown_key"}`) >= 2
	})
}

// A node that must have signed desired state and trusts no key could never
// accept one: a configuration error, not a silent node.
func TestRequireSignedDesiredNeedsKeys(t *testing.T) {
	e := newCloudEnv(t)
	cfg := e.nodeConfig(t.TempDir(), t.TempDir(), e.m.URL())
	cfg.Cloud.TrustedKeyFiles = nil
	cfg.Cloud.AllowUnsignedDesired = false
	n, err := newNode(context.Background(), cfg, testLogger(t), inferencetest.Env(t))
	if err == nil {
		n.Close()
		t.Fatal("started a node that requires signed desired state and trusts no key")
	}
	if !strings.Contains(err.Error(), "cloud.allow_unsigned_desired") {
		t.Fatalf("error %v does not name cloud.allow_unsigned_desired", err)
	}
}

// TestCloudFetchWindowWaits: with cloud.fetch_window closed (it opens in
// six hours), a deployed version is announced and waits, reported as
// Downloading with reason OutsideFetchWindow and no bytes fetched. The
// pause and resume at the window's edges are tested on a simulated clock
// in sync/transfer (TestFetchWindowPausesAndResumes).
func TestCloudFetchWindowWaits(t *testing.T) {
	e := newCloudEnv(t)
	cfg := e.nodeConfig(t.TempDir(), "", e.m.URL())
	now := time.Now()
	cfg.Cloud.FetchWindow = now.Add(6*time.Hour).Format("15:04") + "-" + now.Add(7*time.Hour).Format("15:04")
	startNode(t, cfg)
	e.publish(e.key, "ppocr_cls", "1", modelBytes(t, "ppocr_cls", ""), nil)
	e.deploy("ppocr_cls", "1")
	var ms wire.ModelStatus
	waitFor(t, "ppocr_cls waiting for the fetch window", func() bool {
		st, _ := e.status()
		ms = st.Models["ppocr_cls"]
		return ms.State == string(models.Downloading) && ms.Reason == string(models.ReasonOutsideFetchWindow)
	})
	if ms.BytesDone != 0 || ms.BytesTotal == 0 {
		t.Errorf("outside the window %s: %d of %d bytes fetched, want none", cfg.Cloud.FetchWindow, ms.BytesDone, ms.BytesTotal)
	}
}
