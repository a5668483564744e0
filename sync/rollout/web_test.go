package rollout

import (
	"math"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/internal/testwait"
	"github.com/edgeai/edge-node/sync/fleet"
	"github.com/edgeai/edge-node/sync/wire"
)

// knownFleet is a fixed fleet and rollout state for the page tests.
func knownFleet(t *testing.T) (*Store, map[string]*fleet.NodeView) {
	st := NewStore(filepath.Join(t.TempDir(), "r.db"))
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	r := &Record{Spec: Spec{ID: "r-demo-42", Model: "det", Version: "7", Waves: []int{10, 50, 100}, OnAbort: OnAbortRollback},
		Phase: PhaseRunning, Wave: 1, WavesWritten: 2, Created: t0, Updated: t0,
		Members:  [][]string{make([]string, 3), make([]string, 12), make([]string, 15)},
		Counts:   []Counts{{Total: 3, Active: 3, P99Ms: 11.5}, {Total: 12, Pending: 1, Downloading: 3, Canary: 2, Active: 5, Failed: 1}, {Total: 15, Pending: 15}},
		BadNodes: map[string]NodeState{"cam-02": StateFailed, "gw-01": StateTimedOut}, BadReasons: map[string]string{"cam-02": "ChecksumMismatch", "gw-01": "NodeTimeout"}}
	if err := st.Create(r); err != nil {
		t.Fatal(err)
	}
	nodes := map[string]*fleet.NodeView{}
	for i, id := range []string{"cam-01", "cam-02", "gw-01"} {
		nodes[id] = &fleet.NodeView{Node: id, Presence: &wire.Presence{Protocol: 1, Node: id, Online: i != 2},
			Status: &wire.Status{Protocol: 1, Node: id, Labels: map[string]string{"arch": "arm64", "site": "north"},
				Models: map[string]wire.ModelStatus{"det": {Version: "7", State: "Active"}}}}
	}
	return st, nodes
}

// TestPageInChromium loads the served page in headless Chromium (Debian's
// chromium package), checks the DOM the page's script built and that the
// screenshot is a non-blank PNG of the requested size. Skipped when
// chromium is missing, unless EDGE_REQUIRE_BROWSER=1.
func TestPageInChromium(t *testing.T) {
	st, nodes := knownFleet(t)
	srv := httptest.NewServer(Handler(WebConfig{Store: st, Nodes: staticNodes(nodes), Changes: NewChanges()}, zerolog.Nop()))
	t.Cleanup(srv.Close) // after the browser: its event stream ends first
	b := startBrowser(t, 1200, 800)
	b.navigate(srv.URL + "/")
	testwait.For(t, "the page's script to draw the rollout and the nodes", func() bool {
		return strings.Contains(b.evalString(`document.body.textContent`), "timed-out nodes (2)") &&
			b.evalString(`document.getElementById("nodes-total").textContent`) == "3"
	}, time.Minute)
	dom := b.evalString(`document.documentElement.outerHTML`)
	for _, want := range []string{`live (0 updates)`, `id="rollout-r-demo-42"`, "wave 2 of 3", `<b id="nodes-total">3</b>`, `<b id="nodes-online">2</b>`,
		"criteria: abort over ", "det@7:Active", "arch=arm64, site=north", "1 pending, 3 downloading, 2 canary, 5 active, 1 failed",
		`id="bad-r-demo-42"`, "failed, rolled back and timed-out nodes (2)", "<td>cam-02</td><td>0</td><td>failed</td><td>ChecksumMismatch</td>",
		"<td>gw-01</td><td>0</td><td>timed_out</td><td>NodeTimeout</td>", "read-only (served without a token)"} {
		if !strings.Contains(dom, want) {
			t.Errorf("DOM lacks %q", want)
		}
	}
	shot := filepath.Join(t.TempDir(), "page.png")
	img := b.screenshot(shot)
	if b := img.Bounds(); b.Dx() != 1200 || b.Dy() != 800 {
		t.Fatalf("screenshot %v, want 1200x800", b)
	}
	// Not blank: the luminance varies.
	var sum, sq, n float64
	bounds := img.Bounds()
	for y := bounds.Min.Y; y < bounds.Max.Y; y += 2 {
		for x := bounds.Min.X; x < bounds.Max.X; x += 2 {
			r, g, bl, _ := img.At(x, y).RGBA()
			l := (0.299*float64(r) + 0.587*float64(g) + 0.114*float64(bl)) / 257
			sum += l
			sq += l * l
			n++
		}
	}
	sd := math.Sqrt(sq/n - (sum/n)*(sum/n))
	if sd < 5 {
		t.Fatalf("screenshot looks blank (luminance sd %.2f)", sd)
	}
	t.Logf("screenshot %s: 1200x800, luminance sd %.1f", shot, sd)
	if d := os.Getenv("EDGE_SCREENSHOT_DIR"); d != "" {
		png, _ := os.ReadFile(shot)
		_ = os.WriteFile(filepath.Join(d, "fleet-page.png"), png, 0o644)
	}
}
