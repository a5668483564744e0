package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	dmiapi "github.com/kubeedge/api/apis/dmi/v1beta1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/edgeai/edge-node/sync/brokertest"
	"github.com/edgeai/edge-node/sync/kubeedge/kubeedgetest"
)

// The KubeEdge tests run the real node (real store, real ONNX Runtime, the
// cloud link to a real mosquitto where edgectl's library publishes) with
// its DMI mapper registered to the stand-in EdgeCore over a unix socket,
// or its EventBus bridge on a second mosquitto standing in for EdgeCore's.

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// withDMI turns the DMI mapper on in cfg, with both sockets in dir.
func withDMI(cfg Config, dir string) Config {
	cfg.KubeEdge.DMI.Enabled = true
	cfg.KubeEdge.DMI.EdgeCoreSocket = filepath.Join(dir, "dmi.sock")
	cfg.KubeEdge.DMI.Socket = filepath.Join(dir, "mapper.sock")
	cfg.KubeEdge.DMI.DeviceNamespace, cfg.KubeEdge.DMI.DeviceName = "edge", "node-1"
	cfg.KubeEdge.DMI.ReportInterval = time.Hour // reports come from changes
	return cfg
}

// mapperClient is EdgeCore's side of the mapper socket.
func mapperClient(t *testing.T, sock string) dmiapi.DeviceMapperServiceClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return dmiapi.NewDeviceMapperServiceClient(conn)
}

func updateDevice(t *testing.T, c dmiapi.DeviceMapperServiceClient, props map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cloudDeadline)
	defer cancel()
	if _, err := c.UpdateDevice(ctx, &dmiapi.UpdateDeviceRequest{Device: kubeedgetest.Device("edge", "node-1", props)}); err != nil {
		t.Fatalf("UpdateDevice: %v", err)
	}
}

// TestKubeEdgeDMIDrivesNode: a Device's desired version reaches the real
// node through the DMI mapper; the node downloads it over its cloud link
// (real chunk transfer from mosquitto), activates it and reports it back
// with ReportDeviceStatus. Bad desired values are refused with a reported
// reason, and a sha256 that does not match is reported Failed
// (ChecksumMismatch), while version 2 keeps serving.
func TestKubeEdgeDMIDrivesNode(t *testing.T) {
	e := newCloudEnv(t)
	repo := t.TempDir()
	v1 := modelBytes(t, "ppocr_cls", "")
	v2 := modelBytes(t, "ppocr_cls", "v2")
	addToRepo(t, repo, "ppocr_cls", "1", v1)
	e.publish(e.key, "ppocr_cls", "2", v2, nil)
	dir := kubeedgetest.ShortTempDir(t)
	ec := kubeedgetest.StartEdgeCore(t, filepath.Join(dir, "dmi.sock"),
		kubeedgetest.Device("edge", "node-1", map[string]string{"ppocr_cls.version": "1"}))
	cfg := withDMI(e.nodeConfig(t.TempDir(), repo, e.m.URL()), dir)
	rn := startNode(t, cfg)

	got := ec.WaitReport(t, "edge", "node-1", map[string]string{"ppocr_cls.version": "1", "ppocr_cls.state": "Active"})
	if got["ppocr_cls.sha256"] != sha256Hex(v1) {
		t.Fatalf("first report: %v", got)
	}
	if r := ec.Registered(); len(r) == 0 || string(r[0].GetMapper().GetAddress()) != cfg.KubeEdge.DMI.Socket {
		t.Fatalf("MapperRegister: %v", r)
	}

	mc := mapperClient(t, cfg.KubeEdge.DMI.Socket)
	updateDevice(t, mc, map[string]string{"ppocr_cls.version": "2"})
	got = ec.WaitReport(t, "edge", "node-1", map[string]string{"ppocr_cls.version": "2", "ppocr_cls.state": "Active"})
	if got["ppocr_cls.sha256"] != sha256Hex(v2) || got["ppocr_cls.reason"] != "none" {
		t.Fatalf("report after the update: %v", got)
	}
	if v := activeVersion(t, rn.url, "ppocr_cls"); v != "2" {
		t.Fatalf("active %s, want 2", v)
	}

	for _, tc := range []struct {
		name          string
		props         map[string]string
		state, reason string
	}{
		{"malformed version", map[string]string{"ppocr_cls.version": ".."}, "Rejected", "InvalidVersion"},
		{"outside the alphabet", map[string]string{"ppocr_cls.version": "2;rm"}, "Rejected", "InvalidValue"},
		{"sha256 mismatch", map[string]string{"ppocr_cls.version": "2", "ppocr_cls.sha256": strings.Repeat("0", 64)}, "Failed", "ChecksumMismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			updateDevice(t, mc, tc.props)
			got := ec.WaitReport(t, "edge", "node-1", map[string]string{"ppocr_cls.state": tc.state, "ppocr_cls.reason": tc.reason})
			if got["ppocr_cls.version"] != "2" {
				t.Fatalf("report: %v", got)
			}
			if v := activeVersion(t, rn.url, "ppocr_cls"); v != "2" {
				t.Fatalf("active %s, want 2", v)
			}
			updateDevice(t, mc, map[string]string{"ppocr_cls.version": "2", "ppocr_cls.sha256": sha256Hex(v2)})
			ec.WaitReport(t, "edge", "node-1", map[string]string{"ppocr_cls.state": "Active", "ppocr_cls.reason": "none"})
		})
	}
}

// TestKubeEdgeDMIWithoutCloud: with the cloud link disabled, a version the
// store has is activated directly; a model or version the store does not
// have cannot be had and is refused, while the Active version serves on.
func TestKubeEdgeDMIWithoutCloud(t *testing.T) {
	repo := t.TempDir()
	addToRepo(t, repo, "ppocr_cls", "1", modelBytes(t, "ppocr_cls", ""))
	addToRepo(t, repo, "ppocr_cls", "2", modelBytes(t, "ppocr_cls", "v2"))
	dir := kubeedgetest.ShortTempDir(t)
	ec := kubeedgetest.StartEdgeCore(t, filepath.Join(dir, "dmi.sock"),
		kubeedgetest.Device("edge", "node-1", map[string]string{"ppocr_cls.version": "1"}))
	cfg := withDMI(testConfig(t, t.TempDir(), repo), dir)
	rn := startNode(t, cfg)

	// The repository activates its newest version (2) at boot; the Device
	// asks for 1, which the store has.
	ec.WaitReport(t, "edge", "node-1", map[string]string{"ppocr_cls.version": "1", "ppocr_cls.state": "Active"})
	if v := activeVersion(t, rn.url, "ppocr_cls"); v != "1" {
		t.Fatalf("active %s, want 1", v)
	}
	mc := mapperClient(t, cfg.KubeEdge.DMI.Socket)
	for _, tc := range []struct {
		name, model, value, reason string
	}{
		{"unknown model", "yolo", "1", "UnknownModel"},
		{"unknown version", "ppocr_cls", "9", "UnknownVersion"},
		{"malformed version", "ppocr_cls", "..", "InvalidVersion"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			props := map[string]string{"ppocr_cls.version": "1", tc.model + ".version": tc.value}
			updateDevice(t, mc, props)
			got := ec.WaitReport(t, "edge", "node-1", map[string]string{tc.model + ".state": "Rejected", tc.model + ".reason": tc.reason})
			if got["ppocr_cls.version"] != "1" {
				t.Fatalf("report: %v", got)
			}
			if v := activeVersion(t, rn.url, "ppocr_cls"); v != "1" {
				t.Fatalf("active %s, want 1", v)
			}
		})
	}
}

// TestKubeEdgeEventBusDrivesNode: the node as a device on a second
// mosquitto standing in for EdgeCore's broker reads twin/update/delta in
// KubeEdge's format, fetches the version over its cloud link, activates
// it, and reports actual values on twin/update.
func TestKubeEdgeEventBusDrivesNode(t *testing.T) {
	e := newCloudEnv(t)
	repo := t.TempDir()
	addToRepo(t, repo, "ppocr_cls", "1", modelBytes(t, "ppocr_cls", ""))
	v2 := modelBytes(t, "ppocr_cls", "v2")
	e.publish(e.key, "ppocr_cls", "2", v2, nil)
	edgeBroker := brokertest.StartMosquitto(t, brokertest.Options{})

	// EdgeCore's side: it keeps the expected values, answers twin/get with
	// them (the node asks on every connect) and publishes a delta when they
	// change, as EdgeCore does; messages are written by hand in KubeEdge's
	// format.
	prefix := "$hw/events/device/edge/node-1"
	updates := make(chan map[string]any, 64)
	var mu sync.Mutex
	expected := "1"
	twinJSON := func(v string) string {
		return fmt.Sprintf(`{"ppocr_cls.version":{"expected":{"value":%q,"metadata":{"timestamp":1718000000000}},"optional":false,"metadata":{"type":"string"}}}`, v)
	}
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(edgeBroker.URL()).SetClientID("edgecore"))
	if tok := c.Connect(); tok.Wait() && tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	sub := func(topic string, h mqtt.MessageHandler) {
		if tok := c.Subscribe(topic, 1, h); tok.Wait() && tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	sub(prefix+"/twin/get", func(c mqtt.Client, m mqtt.Message) {
		var base struct {
			EventID string `json:"event_id"`
		}
		json.Unmarshal(m.Payload(), &base)
		mu.Lock()
		v := expected
		mu.Unlock()
		c.Publish(prefix+"/twin/get/result", 1, false, fmt.Sprintf(`{"event_id":%q,"timestamp":1718000000123,"twin":%s}`, base.EventID, twinJSON(v)))
	})
	sub(prefix+"/twin/update", func(_ mqtt.Client, m mqtt.Message) {
		var u map[string]any
		if err := json.Unmarshal(m.Payload(), &u); err != nil {
			t.Errorf("twin/update is not JSON: %v: %s", err, m.Payload())
			return
		}
		updates <- u
	})
	delta := func(version string) {
		t.Helper()
		mu.Lock()
		expected = version
		mu.Unlock()
		p := fmt.Sprintf(`{"event_id":"ev-%d","timestamp":1718000000456,"twin":%s,"delta":{"ppocr_cls.version":%q}}`,
			time.Now().UnixNano(), twinJSON(version), version)
		if tok := c.Publish(prefix+"/twin/update/delta", 1, false, p); tok.Wait() && tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	// Reports carry only what changed: last merges them, as EdgeCore's
	// DeviceStatus does.
	last := map[string]string{}
	waitUpdate := func(want map[string]string) map[string]string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), cloudDeadline)
		defer cancel()
		for {
			select {
			case u := <-updates:
				twin, _ := u["twin"].(map[string]any)
				for name, v := range twin {
					tw, _ := v.(map[string]any)
					act, _ := tw["actual"].(map[string]any)
					last[name], _ = act["value"].(string)
				}
				ok := true
				for k, v := range want {
					ok = ok && last[k] == v
				}
				if ok {
					return maps.Clone(last)
				}
			case <-ctx.Done():
				t.Fatalf("no twin/update with %v; reported: %v", want, last)
			}
		}
	}

	cfg := e.nodeConfig(t.TempDir(), repo, e.m.URL())
	cfg.KubeEdge.EventBus.Enabled = true
	cfg.KubeEdge.EventBus.Broker = edgeBroker.URL()
	cfg.KubeEdge.EventBus.DeviceNamespace, cfg.KubeEdge.EventBus.DeviceName = "edge", "node-1"
	cfg.KubeEdge.EventBus.ReportInterval = time.Hour
	rn := startNode(t, cfg)

	// The node reads the twin document on connect (version 1, Active);
	// then the version changes.
	waitUpdate(map[string]string{"ppocr_cls.version": "1", "ppocr_cls.state": "Active"})
	delta("2")
	got := waitUpdate(map[string]string{"ppocr_cls.version": "2", "ppocr_cls.state": "Active"})
	if got["ppocr_cls.sha256"] != sha256Hex(v2) {
		t.Fatalf("report: %v", got)
	}
	if v := activeVersion(t, rn.url, "ppocr_cls"); v != "2" {
		t.Fatalf("active %s, want 2", v)
	}
	delta("2;rm")
	got = waitUpdate(map[string]string{"ppocr_cls.state": "Rejected", "ppocr_cls.reason": "InvalidValue"})
	if got["ppocr_cls.version"] != "2" || activeVersion(t, rn.url, "ppocr_cls") != "2" {
		t.Fatalf("report after a bad value: %v", got)
	}
}

// TestKubeEdgeDMISwitchTimes measures the node's part of a `kubectl patch`
// of a desired version: from EdgeCore's UpdateDevice call to the first
// inference answered by the new version, and to the ReportDeviceStatus that
// shows it Active. Six switches between two versions the store has (cloud
// link disabled; after the first switch both stay loaded, so this is the
// reconcile-and-route path, not a session load). The figures are logged
// (docs/performance.md); the test asserts only that every switch is served
// and reported.
func TestKubeEdgeDMISwitchTimes(t *testing.T) {
	repo := t.TempDir()
	addToRepo(t, repo, "ppocr_cls", "1", modelBytes(t, "ppocr_cls", ""))
	addToRepo(t, repo, "ppocr_cls", "2", modelBytes(t, "ppocr_cls", "v2"))
	dir := kubeedgetest.ShortTempDir(t)
	ec := kubeedgetest.StartEdgeCore(t, filepath.Join(dir, "dmi.sock"),
		kubeedgetest.Device("edge", "node-1", map[string]string{"ppocr_cls.version": "1"}))
	cfg := withDMI(testConfig(t, t.TempDir(), repo), dir)
	rn := startNode(t, cfg)
	ec.WaitReport(t, "edge", "node-1", map[string]string{"ppocr_cls.version": "1", "ppocr_cls.state": "Active"})
	mc := mapperClient(t, cfg.KubeEdge.DMI.Socket)

	body, n := binaryRequest(t, "switch", clsInput(), true)
	served := func() string {
		code, hdr, got := call(t, "POST", rn.url+"/v2/models/ppocr_cls/infer", http.Header{headerContentLength: {strconv.Itoa(n)}}, body)
		if code != http.StatusOK {
			t.Fatalf("infer: %d %s", code, got)
		}
		return parseResponse(t, hdr, got).ModelVersion
	}
	var toServe, toReport []time.Duration
	for i := range 6 {
		want := []string{"2", "1"}[i%2]
		start := time.Now()
		updateDevice(t, mc, map[string]string{"ppocr_cls.version": want})
		for served() != want {
			if time.Since(start) > cloudDeadline {
				t.Fatalf("switch %d: version %s never served", i, want)
			}
		}
		toServe = append(toServe, time.Since(start))
		ec.WaitReport(t, "edge", "node-1", map[string]string{"ppocr_cls.version": want, "ppocr_cls.state": "Active"})
		toReport = append(toReport, time.Since(start))
	}
	med := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2]
	}
	t.Logf("UpdateDevice → served by the new version: median %v %v; → ReportDeviceStatus shows it Active: median %v %v",
		med(toServe), toServe, med(toReport), toReport)
}
