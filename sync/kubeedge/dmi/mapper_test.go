package dmi_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dmiapi "github.com/kubeedge/api/apis/dmi/v1beta1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/edgeai/edge-node/inference/inferencetest"
	"github.com/edgeai/edge-node/internal/buildinfo"
	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/kubeedge"
	"github.com/edgeai/edge-node/sync/kubeedge/dmi"
	"github.com/edgeai/edge-node/sync/kubeedge/kubeedgetest"
)

func device(name string, props map[string]string) *dmiapi.Device {
	return kubeedgetest.Device("edge", name, props)
}

func waitReport(t *testing.T, ec *kubeedgetest.EdgeCore, want map[string]string) map[string]string {
	t.Helper()
	return ec.WaitReport(t, "edge", "node-1", want)
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// TestMapperAgainstEdgeCore runs the mapper against the stand-in EdgeCore:
// it registers, applies the Device from the registration answer, receives
// UpdateDevice, downloads (imports from the stand-in cloud) and activates
// the version in a real store with real ONNX Runtime sessions, and reports
// it; bad desired values are refused with a reported reason while the good
// version keeps serving.
func TestMapperAgainstEdgeCore(t *testing.T) {
	dir := kubeedgetest.ShortTempDir(t)
	vad := inferencetest.ModelPath(t, "silero_vad")
	cls := inferencetest.ModelPath(t, "ppocr_cls")
	app := kubeedgetest.NewStoreApplier(t)
	app.Publish("silero_vad", "1", vad)
	app.Publish("silero_vad", "2", vad)
	app.Publish("ppocr_cls", "7", cls)

	ec := kubeedgetest.StartEdgeCore(t, filepath.Join(dir, "dmi.sock"),
		device("other-node", map[string]string{"silero_vad.version": "9"}),
		device("node-1", map[string]string{"silero_vad.version": "1", "silero_vad.state": ""}))

	reg := prometheus.NewRegistry()
	startMapper(t, dir, app, reg, func(c *dmi.Config) { c.ReportInterval = time.Hour }) // reports come from changes in this test
	ctx, socket := context.Background(), filepath.Join(dir, "mapper.sock")

	// Registration, then the Device from the answer applied and reported.
	got := waitReport(t, ec, map[string]string{"silero_vad.version": "1", "silero_vad.state": "Active"})
	reg0 := ec.Registered()[0]
	if mi := reg0.GetMapper(); !reg0.GetWithData() || mi.GetProtocol() != "edge-node" || string(mi.GetAddress()) != socket || mi.GetApiVersion() != "v1beta1" || mi.GetVersion() != buildinfo.Version() {
		t.Fatalf("MapperRegister request: %v", reg0)
	}
	if got["silero_vad.sha256"] != sha256File(t, vad) || got["silero_vad.canary"] != "none" || got["silero_vad.reason"] != "none" {
		t.Fatalf("first report: %v", got)
	}
	if call, _ := app.LastCall(); call.Source != dmi.SourceName || len(call.Models) != 1 {
		t.Fatalf("applied %+v, want only node-1's device from source %s", call, dmi.SourceName)
	}

	// EdgeCore's side of the mapper socket.
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	mapper := dmiapi.NewDeviceMapperServiceClient(conn)
	update := func(props map[string]string) {
		t.Helper()
		if _, err := mapper.UpdateDevice(ctx, &dmiapi.UpdateDeviceRequest{Device: device("node-1", props)}); err != nil {
			t.Fatalf("UpdateDevice(%v): %v", props, err)
		}
	}

	// A new version: downloaded, activated, reported; the strategy and
	// the generation reach the reconciler.
	first, _ := app.LastCall()
	update(map[string]string{"silero_vad.version": "2", "silero_vad.rollout": "canary:10", "ppocr_cls.version": "7"})
	got = waitReport(t, ec, map[string]string{"silero_vad.version": "2", "silero_vad.state": "Active", "ppocr_cls.version": "7"})
	if got["silero_vad.rollout"] != "canary:10" || got["ppocr_cls.rollout"] != "immediate" || got["ppocr_cls.sha256"] != sha256File(t, cls) {
		t.Fatalf("report after update: %v", got)
	}
	call, _ := app.LastCall()
	if call.Generation <= first.Generation || call.Models["silero_vad"].Strategy != (kubeedge.Strategy{Kind: kubeedge.StrategyCanary, CanaryPercent: 10}) {
		t.Fatalf("applied %+v after %+v", call, first)
	}
	mi, err := app.Store.Model(ctx, "silero_vad")
	if err != nil || mi.Active != "2" || mi.Previous != "1" {
		t.Fatalf("store: %+v, %v; want Active 2, Previous 1", mi, err)
	}

	good := map[string]string{"silero_vad.version": "2", "silero_vad.rollout": "canary:10", "ppocr_cls.version": "7"}
	bad := []struct {
		name   string
		props  map[string]string
		model  string
		reason kubeedge.RejectReason
	}{
		{"unknown model", map[string]string{"yolo.version": "3"}, "yolo", kubeedge.ReasonUnknownModel},
		{"unknown version", map[string]string{"ppocr_cls.version": "99"}, "ppocr_cls", kubeedge.ReasonUnknownVersion},
		{"malformed version", map[string]string{"silero_vad.version": "-3"}, "silero_vad", kubeedge.ReasonInvalidVersion},
		{"version outside the alphabet", map[string]string{"silero_vad.version": "3 beta"}, "silero_vad", kubeedge.ReasonInvalidValue},
		{"version too long", map[string]string{"silero_vad.version": strings.Repeat("1", 65)}, "silero_vad", kubeedge.ReasonInvalidVersion},
		{"unknown strategy", map[string]string{"silero_vad.rollout": "bluegreen"}, "silero_vad", kubeedge.ReasonInvalidRollout},
		{"canary 0 percent", map[string]string{"silero_vad.rollout": "canary:0"}, "silero_vad", kubeedge.ReasonInvalidRollout},
		{"canary 100 percent", map[string]string{"silero_vad.rollout": "canary:100"}, "silero_vad", kubeedge.ReasonInvalidRollout},
		{"strategy as JSON", map[string]string{"silero_vad.rollout": `{"kind":"canary"}`}, "silero_vad", kubeedge.ReasonInvalidValue},
		{"bad sha256", map[string]string{"silero_vad.sha256": "ABC"}, "silero_vad", kubeedge.ReasonInvalidSHA256},
		{"desired on a read-only property", map[string]string{"silero_vad.state": "Active"}, "silero_vad", kubeedge.ReasonReadOnlyProperty},
		// Several bad at once: each property's own reason reaches the cloud.
		{"bad version and bad rollout", map[string]string{"silero_vad.version": "-3", "silero_vad.rollout": "bluegreen"}, "silero_vad",
			"version:InvalidVersion,rollout:InvalidRollout"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			props := map[string]string{}
			for k, v := range good {
				props[k] = v
			}
			for k, v := range tc.props {
				props[k] = v
			}
			update(props)
			got := waitReport(t, ec, map[string]string{tc.model + ".state": "Rejected", tc.model + ".reason": string(tc.reason)})
			// What served keeps serving.
			if got["silero_vad.version"] != "2" || got["ppocr_cls.version"] != "7" {
				t.Fatalf("report: %v", got)
			}
			mi, err := app.Store.Model(ctx, "silero_vad")
			if err != nil || mi.Active != "2" {
				t.Fatalf("store after refusal: %+v, %v", mi, err)
			}
			// And fixing the values clears the refusal.
			update(good)
			waitReport(t, ec, afterFix(tc.model))
		})
	}
	if n := counterSum(t, reg, "edge_kubeedge_rejected_values_total"); n < float64(len(bad)) {
		t.Fatalf("rejected values counted %v, want ≥ %d", n, len(bad))
	}

	// Requests for another device are refused, not applied.
	_, err = mapper.UpdateDevice(ctx, &dmiapi.UpdateDeviceRequest{Device: device("other-node", map[string]string{"silero_vad.version": "1"})})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("UpdateDevice for another device: %v, want NotFound", err)
	}
	if _, err := mapper.UpdateDevice(ctx, &dmiapi.UpdateDeviceRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("UpdateDevice without a device: %v, want InvalidArgument", err)
	}
	gd, err := mapper.GetDevice(ctx, &dmiapi.GetDeviceRequest{DeviceName: "node-1", DeviceNamespace: "edge"})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, tw := range gd.GetDevice().GetStatus().GetTwins() {
		if tw.GetPropertyName() == "silero_vad.version" {
			found = tw.GetReported().GetValue() == "2" && tw.GetObservedDesired().GetValue() == "2"
		}
	}
	if !found {
		t.Fatalf("GetDevice: %v", gd)
	}
	mi, _ = app.Store.Model(ctx, "silero_vad")
	if mi.Active != "2" {
		t.Fatalf("silero_vad Active %s after all, want 2", mi.Active)
	}
}

// afterFix is the report expected once the good values are back.
func afterFix(model string) map[string]string {
	if model == "yolo" {
		// No longer named by the Device: reported cleared once, not left
		// stale at Rejected.
		return map[string]string{"yolo.state": "none", "yolo.reason": "none", "yolo.p99_ms": "0"}
	}
	return map[string]string{model + ".state": string(models.Active), model + ".reason": "none"}
}

// counterSum sums every series of a counter in reg.
func counterSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestNewRefusesBadConfig checks the configuration errors.
func TestNewRefusesBadConfig(t *testing.T) {
	dir := kubeedgetest.ShortTempDir(t)
	notSocket := filepath.Join(dir, "file")
	os.WriteFile(notSocket, nil, 0o644)
	for _, tc := range []struct {
		name string
		edit func(*dmi.Config)
	}{
		{"no device name", func(c *dmi.Config) { c.DeviceName = "" }},
		{"same sockets", func(c *dmi.Config) { c.Socket = c.EdgeCoreSocket }},
		{"zero report interval", func(c *dmi.Config) { c.ReportInterval = 0 }},
		{"socket path is a file", func(c *dmi.Config) { c.Socket = notSocket }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := dmi.DefaultConfig()
			cfg.DeviceName = "n"
			cfg.Socket = filepath.Join(dir, "m.sock")
			cfg.EdgeCoreSocket = filepath.Join(dir, "e.sock")
			tc.edit(&cfg)
			if m, err := dmi.New(cfg, nil, zerolog.Nop(), nil); err == nil {
				m.Close()
				t.Fatal("New succeeded")
			} else {
				t.Log(err)
			}
		})
	}
}

// startMapper runs a mapper for node-1 against the EdgeCore socket in dir
// until the end of the test (metrics in reg, if not nil), then checks that
// Run ends with the context and that Close is idempotent.
func startMapper(t *testing.T, dir string, app kubeedge.Applier, reg prometheus.Registerer, edit func(*dmi.Config)) {
	t.Helper()
	cfg := dmi.DefaultConfig()
	cfg.EdgeCoreSocket = filepath.Join(dir, "dmi.sock")
	cfg.Socket = filepath.Join(dir, "mapper.sock")
	cfg.DeviceNamespace, cfg.DeviceName = "edge", "node-1"
	edit(&cfg)
	m, err := dmi.New(cfg, app, zerolog.New(zerolog.NewTestWriter(t)), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
		if err := m.Close(); err != nil {
			t.Error(err)
		}
		if err := m.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
}

// TestMapperNoDeviceNoReport: with no Device bound to the node, the
// mapper registers and sends nothing (the real EdgeCore refuses a report
// without twins; the stand-in fails the test on one). Before the fix it
// reported zero twins every cycle.
func TestMapperNoDeviceNoReport(t *testing.T) {
	dir := kubeedgetest.ShortTempDir(t)
	ec := kubeedgetest.StartEdgeCore(t, filepath.Join(dir, "dmi.sock"))
	startMapper(t, dir, kubeedgetest.NewStoreApplier(t), nil, func(c *dmi.Config) { c.ReportInterval = 50 * time.Millisecond })
	deadline := time.Now().Add(30 * time.Second)
	for len(ec.Registered()) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // ten report cycles
	if n, _ := ec.Counts(); n != 0 || len(ec.Registered()) != 1 {
		t.Fatalf("%d reports, %d registrations; want none and 1", n, len(ec.Registered()))
	}
}

// TestMapperQuietAndReregisters: at steady state (2 models, no change) the
// mapper sends nothing between heartbeats; the DeviceStatus updates per
// minute are logged (each twin is one update in the real EdgeCore). When
// EdgeCore restarts and forgets the mapper, the mapper registers again and
// reports every twin.
func TestMapperQuietAndReregisters(t *testing.T) {
	dir := kubeedgetest.ShortTempDir(t)
	app := kubeedgetest.NewStoreApplier(t)
	app.Publish("silero_vad", "1", inferencetest.ModelPath(t, "silero_vad"))
	app.Publish("ppocr_cls", "7", inferencetest.ModelPath(t, "ppocr_cls"))
	ec := kubeedgetest.StartEdgeCore(t, filepath.Join(dir, "dmi.sock"),
		device("node-1", map[string]string{"silero_vad.version": "1", "ppocr_cls.version": "7"}))
	const interval = 100 * time.Millisecond
	startMapper(t, dir, app, nil, func(c *dmi.Config) { c.ReportInterval = interval; c.HeartbeatInterval = time.Hour })
	// Every twin goes out twice after the registration (the second time
	// one report_interval after the first: a real CloudCore was seen to
	// lose some of the first burst), then only what changes.
	want := map[string]string{"silero_vad.state": "Active", "ppocr_cls.state": "Active", "ppocr_cls.p99_ms": "0", "silero_vad.error_rate": "0"}
	deadline := time.Now().Add(60 * time.Second)
	for full := 0; ; {
		select {
		case r := <-ec.Reports:
			if len(kubeedgetest.Twins(r)) == 16 {
				full++
			}
		case <-time.After(time.Until(deadline)):
			t.Fatalf("%d reports of every twin, want 2; status %v", full, ec.Status())
		}
		st := ec.Status()
		settled := full >= 2
		for k, v := range want {
			settled = settled && st[k] == v
		}
		if settled {
			break
		}
	}

	r0, tw0 := ec.Counts()
	const window = 2 * time.Second
	time.Sleep(window)
	r1, tw1 := ec.Counts()
	perMin := func(n int) float64 { return float64(n) * float64(time.Minute) / float64(window) }
	cycles := float64(time.Minute) / float64(interval)
	t.Logf("steady state, 2 models, report_interval %v: %d reports, %d twins in %v = %.0f reports/min, %.0f DeviceStatus updates/min (every twin every cycle, as before: %.0f reports/min, %.0f updates/min)",
		interval, r1-r0, tw1-tw0, window, perMin(r1-r0), perMin(tw1-tw0), cycles, cycles*float64(len(ec.Status())))
	if r1 != r0 {
		t.Fatalf("%d reports at steady state, want none", r1-r0)
	}

	ec.Restart()
	deadline = time.Now().Add(60 * time.Second)
	for len(ec.Registered()) < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := len(ec.Registered()); n < 2 {
		t.Fatalf("%d registrations after the restart, want 2", n)
	}
	for time.Now().Before(deadline) {
		if _, tw := ec.Counts(); tw >= tw1+16 {
			return // every twin of both models again
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, tw := ec.Counts()
	t.Fatalf("%d twins reported after the re-registration, want all 16", tw-tw1)
}
