package eventbus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/inference/inferencetest"
	"github.com/edgeai/edge-node/sync/kubeedge"
	"github.com/edgeai/edge-node/sync/kubeedge/eventbus"
	"github.com/edgeai/edge-node/sync/kubeedge/kubeedgetest"
)

const mosquittoPath = "/usr/sbin/mosquitto"

// startMosquitto runs mosquitto on a free 127.0.0.1 port with a generated
// config and returns its URL; it is stopped at the end of the test.
func startMosquitto(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(mosquittoPath); err != nil {
		t.Skipf("mosquitto not installed (apt-get install mosquitto): %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n", port)), 0o644)
	cmd := exec.Command(mosquittoPath, "-c", conf)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return "tcp://" + addr
		}
		select {
		case <-ctx.Done():
			t.Fatalf("mosquitto did not open %s", addr)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// fakeEdgeCore is EdgeCore's side of the EventBus: it answers twin/get with
// the expected values it holds and collects the node's twin/update reports.
type fakeEdgeCore struct {
	c        mqtt.Client
	prefix   string
	expected map[string]string
	updates  chan map[string]any
	// reported merges the twin/update reports read so far, as EdgeCore's
	// DeviceStatus does (reports carry only what changed); read and written
	// by the test's goroutine.
	reported map[string]string
}

func newFakeEdgeCore(t *testing.T, broker string, expected map[string]string) *fakeEdgeCore {
	t.Helper()
	e := &fakeEdgeCore{prefix: "$hw/events/device/edge/node-1", expected: expected, updates: make(chan map[string]any, 64), reported: map[string]string{}}
	e.c = mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker).SetClientID("edgecore"))
	if tok := e.c.Connect(); tok.Wait() && tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	t.Cleanup(func() { e.c.Disconnect(100) })
	sub := func(topic string, h mqtt.MessageHandler) {
		if tok := e.c.Subscribe(topic, 1, h); tok.Wait() && tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	sub(e.prefix+"/twin/get", func(c mqtt.Client, m mqtt.Message) {
		var base struct {
			EventID string `json:"event_id"`
		}
		json.Unmarshal(m.Payload(), &base)
		c.Publish(e.prefix+"/twin/get/result", 1, false, e.document(base.EventID))
	})
	sub(e.prefix+"/twin/update", func(_ mqtt.Client, m mqtt.Message) {
		var u map[string]any
		if err := json.Unmarshal(m.Payload(), &u); err != nil {
			t.Errorf("twin/update is not JSON: %v: %s", err, m.Payload())
			return
		}
		e.updates <- u
	})
	return e
}

// document is a twin/get/result in KubeEdge's format, written by hand (not
// with the package's structs) so that the test checks the wire format.
func (e *fakeEdgeCore) document(eventID string) []byte {
	var parts []string
	for name, v := range e.expected {
		parts = append(parts, fmt.Sprintf(`%q:{"expected":{"value":%q,"metadata":{"timestamp":1718000000000}},"optional":false,"metadata":{"type":"string"},"expected_version":{"cloud":3,"edge":0}}`, name, v))
	}
	return []byte(fmt.Sprintf(`{"event_id":%q,"timestamp":1718000000123,"twin":{%s}}`, eventID, strings.Join(parts, ",")))
}

// delta publishes a twin/update/delta in KubeEdge's format: every twin with
// its expected (and actual, where one was reported) value, and the values
// that differ in "delta".
func (e *fakeEdgeCore) delta(t *testing.T, expected map[string]string, raw ...string) {
	t.Helper()
	var payload string
	if len(raw) > 0 {
		payload = raw[0]
	} else {
		var twins, deltas []string
		for name, v := range expected {
			twins = append(twins, fmt.Sprintf(`%q:{"expected":{"value":%q,"metadata":{"timestamp":1718000000000}},"actual":{"value":"1","metadata":{"timestamp":1718000000000}},"optional":false,"metadata":{"type":"string"}}`, name, v))
			deltas = append(deltas, fmt.Sprintf(`%q:%q`, name, v))
		}
		payload = fmt.Sprintf(`{"event_id":"ev-%d","timestamp":1718000000456,"twin":{%s},"delta":{%s}}`, time.Now().UnixNano(), strings.Join(twins, ","), strings.Join(deltas, ","))
	}
	if tok := e.c.Publish(e.prefix+"/twin/update/delta", 1, false, payload); tok.Wait() && tok.Error() != nil {
		t.Fatal(tok.Error())
	}
}

// actual returns name → actual value of a twin/update report, checking the
// message shape against KubeEdge's.
func actual(t *testing.T, u map[string]any) map[string]string {
	t.Helper()
	if id, _ := u["event_id"].(string); id == "" {
		t.Fatalf("twin/update without event_id: %v", u)
	}
	if ts, _ := u["timestamp"].(float64); ts < 1e12 {
		t.Fatalf("twin/update timestamp %v is not in milliseconds", u["timestamp"])
	}
	out := map[string]string{}
	twin, _ := u["twin"].(map[string]any)
	for name, v := range twin {
		tw := v.(map[string]any)
		act, ok := tw["actual"].(map[string]any)
		if !ok {
			t.Fatalf("twin %s has no actual: %v", name, tw)
		}
		if _, ok := tw["expected"]; ok {
			t.Fatalf("twin %s: a device must not send expected values: %v", name, tw)
		}
		if md, _ := tw["metadata"].(map[string]any); md["type"] != kubeedge.ValueType(name) {
			t.Fatalf("twin %s metadata: %v, want type %s", name, tw["metadata"], kubeedge.ValueType(name))
		}
		out[name], _ = act["value"].(string)
	}
	return out
}

// waitUpdate reads reports until the merged reported values hold want, and
// returns them.
func waitUpdate(t *testing.T, e *fakeEdgeCore, want map[string]string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		ok := true
		for k, v := range want {
			if e.reported[k] != v {
				ok = false
			}
		}
		if ok {
			return maps.Clone(e.reported)
		}
		select {
		case u := <-e.updates:
			maps.Copy(e.reported, actual(t, u))
		case <-ctx.Done():
			t.Fatalf("no twin/update with %v; reported: %v", want, e.reported)
		}
	}
}

// TestBridgeAgainstMosquitto drives the bridge through the EventBus twin
// topics on a real broker with messages in KubeEdge's format: the desired
// state comes from twin/get/result at connect, then from deltas; versions
// are downloaded and activated in a real store; bad values and bad
// payloads are refused and the serving version stays.
func TestBridgeAgainstMosquitto(t *testing.T) {
	broker := startMosquitto(t)
	vad := inferencetest.ModelPath(t, "silero_vad")
	app := kubeedgetest.NewStoreApplier(t)
	app.Publish("silero_vad", "1", vad)
	app.Publish("silero_vad", "2", vad)

	ec := newFakeEdgeCore(t, broker, map[string]string{"silero_vad.version": "1"})
	cfg := eventbus.DefaultConfig()
	cfg.Broker = broker
	cfg.DeviceNamespace, cfg.DeviceName = "edge", "node-1"
	cfg.ReportInterval = time.Hour
	b, err := eventbus.New(cfg, app, zerolog.New(zerolog.NewTestWriter(t)), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
		b.Close()
		b.Close()
	})

	waitUpdate(t, ec, map[string]string{"silero_vad.version": "1", "silero_vad.state": "Active"})
	if call, _ := app.LastCall(); call.Source != eventbus.SourceName {
		t.Fatalf("source %q", call.Source)
	}

	ec.delta(t, map[string]string{"silero_vad.version": "2", "silero_vad.rollout": "shadow:50"})
	got := waitUpdate(t, ec, map[string]string{"silero_vad.version": "2", "silero_vad.state": "Active"})
	if got["silero_vad.rollout"] != "shadow:50" {
		t.Fatalf("report: %v", got)
	}
	if mi, err := app.Store.Model(ctx, "silero_vad"); err != nil || mi.Active != "2" || mi.Previous != "1" {
		t.Fatalf("store: %+v %v", mi, err)
	}

	// Bad values: refused with a reported reason, version 2 keeps serving.
	for _, tc := range []struct {
		name   string
		value  string
		reason string
	}{
		{"malformed version", "..", "InvalidVersion"},
		{"outside the alphabet", "2;rm", "InvalidValue"},
		{"unknown version", "77", "UnknownVersion"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ec.delta(t, map[string]string{"silero_vad.version": tc.value})
			got := waitUpdate(t, ec, map[string]string{"silero_vad.state": "Rejected", "silero_vad.reason": tc.reason})
			if got["silero_vad.version"] != "2" {
				t.Fatalf("report: %v", got)
			}
			ec.delta(t, map[string]string{"silero_vad.version": "2"})
			waitUpdate(t, ec, map[string]string{"silero_vad.state": "Active", "silero_vad.reason": "none"})
		})
	}

	// Payloads that do not decode change nothing; the next good delta
	// still works.
	_, n := app.CallsFrom(0)
	for _, raw := range []string{`not json`, `[1,2]`, `{"twin":{"silero_vad.version":{"expected":{"value":3}}}}`} {
		ec.delta(t, nil, raw)
	}
	ec.delta(t, map[string]string{"silero_vad.version": "1"})
	waitUpdate(t, ec, map[string]string{"silero_vad.version": "1", "silero_vad.state": "Active"})
	calls, _ := app.CallsFrom(n)
	for _, c := range calls {
		if v := c.Models["silero_vad"].Version; v != "1" && v != "2" {
			t.Fatalf("a bad payload was applied: %+v", c)
		}
	}
}

// startBridge runs a bridge for edge/node-1 on broker until the test ends.
func startBridge(t *testing.T, broker string, app kubeedge.Applier, edit func(*eventbus.Config)) {
	t.Helper()
	cfg := eventbus.DefaultConfig()
	cfg.Broker = broker
	cfg.DeviceNamespace, cfg.DeviceName = "edge", "node-1"
	edit(&cfg)
	b, err := eventbus.New(cfg, app, zerolog.New(zerolog.NewTestWriter(t)), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
		b.Close()
	})
}

// drain empties e.updates and returns how many there were.
func (e *fakeEdgeCore) drain() int {
	for n := 0; ; n++ {
		select {
		case <-e.updates:
		default:
			return n
		}
	}
}

// TestBridgeReportsOnlyChanges: at steady state the bridge sends no
// twin/update between heartbeats (EdgeCore turns each twin of each update
// into a DeviceStatus write); after a change, a report carries only the
// twins that changed; the heartbeat sends every twin.
func TestBridgeReportsOnlyChanges(t *testing.T) {
	broker := startMosquitto(t)
	vad := inferencetest.ModelPath(t, "silero_vad")
	app := kubeedgetest.NewStoreApplier(t)
	app.Publish("silero_vad", "1", vad)
	app.Publish("silero_vad", "2", vad)
	ec := newFakeEdgeCore(t, broker, map[string]string{"silero_vad.version": "1"})
	const interval = 50 * time.Millisecond
	startBridge(t, broker, app, func(c *eventbus.Config) { c.ReportInterval = interval; c.HeartbeatInterval = time.Hour })

	// Every twin goes out twice after connecting (the second time one
	// report_interval after the first), then only what changes.
	want := map[string]string{"silero_vad.version": "1", "silero_vad.state": "Active"}
	deadline := time.After(60 * time.Second)
	for full := 0; ; {
		select {
		case u := <-ec.updates:
			got := actual(t, u)
			if len(got) == len(kubeedge.Fields) {
				full++
			}
			maps.Copy(ec.reported, got)
		case <-deadline:
			t.Fatalf("%d reports of every twin, want 2; reported %v", full, ec.reported)
		}
		settled := full >= 2
		for k, v := range want {
			settled = settled && ec.reported[k] == v
		}
		if settled {
			break
		}
	}
	const window = time.Second
	time.Sleep(window) // twenty report cycles
	if n := ec.drain(); n != 0 {
		t.Fatalf("%d twin/update messages in %v at steady state (report_interval %v), want none", n, window, interval)
	}

	ec.delta(t, map[string]string{"silero_vad.version": "2"})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		var got map[string]string
		select {
		case u := <-ec.updates:
			got = actual(t, u)
		case <-ctx.Done():
			t.Fatalf("no report of version 2 Active; reported: %v", ec.reported)
		}
		for _, unchanged := range []string{"silero_vad.p99_ms", "silero_vad.error_rate", "silero_vad.reason", "silero_vad.canary"} {
			if _, ok := got[unchanged]; ok {
				t.Fatalf("a report after the change carries the unchanged %s: %v", unchanged, got)
			}
		}
		maps.Copy(ec.reported, got)
		if ec.reported["silero_vad.version"] == "2" && ec.reported["silero_vad.state"] == "Active" {
			break
		}
	}
}

// TestBridgeHeartbeat: every twin goes out once per heartbeat_interval even
// when nothing changed, so a lost update heals.
func TestBridgeHeartbeat(t *testing.T) {
	broker := startMosquitto(t)
	app := kubeedgetest.NewStoreApplier(t)
	app.Publish("silero_vad", "1", inferencetest.ModelPath(t, "silero_vad"))
	ec := newFakeEdgeCore(t, broker, map[string]string{"silero_vad.version": "1"})
	startBridge(t, broker, app, func(c *eventbus.Config) {
		c.ReportInterval = 50 * time.Millisecond
		c.HeartbeatInterval = 300 * time.Millisecond
	})
	waitUpdate(t, ec, map[string]string{"silero_vad.state": "Active"})
	ec.drain()
	for range 2 {
		select {
		case u := <-ec.updates:
			if got := actual(t, u); len(got) != len(kubeedge.Fields) {
				t.Fatalf("heartbeat carries %d twins, want %d: %v", len(got), len(kubeedge.Fields), got)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no heartbeat")
		}
	}
}
