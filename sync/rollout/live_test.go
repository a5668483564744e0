package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/internal/testwait"
	"github.com/edgeai/edge-node/sync/fleet"
	"github.com/edgeai/edge-node/sync/fleetsim"
)

// TestPageLiveRolloutAbortAndRollback runs a real rollout (mosquitto, 20
// simulated nodes, a controller) with the operator page open in headless
// Chromium: the page follows the waves live, an operator clicks abort
// (the page asks for the token) and then rollback, and the page shows the
// rollback confirmed by the nodes' status, all without a reload. It saves
// four screenshots (under EDGE_SCREENSHOT_DIR when set).
func TestPageLiveRolloutAbortAndRollback(t *testing.T) {
	requireChromium(t)
	prof := fleetsim.Profile{Download: 700 * time.Millisecond, Gate: 1500 * time.Millisecond, BaseP99Ms: 12}
	e := newEnv(t, 20, prof)
	c := e.controller(t, "ctl")
	spec := testSpec("r-live", "2")
	spec.Waves = []int{10, 50, 100}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if _, err := c.Start(ctx, spec); err != nil {
		t.Fatal(err)
	}
	// The controller process (edgectl rollout run), and the page's carrier
	// for a command given when none runs (edgectl serve's).
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	phases := make(chan Phase, 4)
	drive := func() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := c.Run(ctx, spec.ID, nil)
			if err != nil {
				t.Errorf("controller: %v", err)
				return
			}
			phases <- r.Phase
		}()
	}
	drive()
	var carried []string
	var carriedMu sync.Mutex
	// edgectl serve's wiring: live node views from the broker, the state
	// file watched, the page's commands behind a token.
	changes := NewChanges()
	views := fleet.NewLiveViews(e.tp, func(string) { changes.Nodes.Notify() })
	if err := testLink(t, e.broker.URL(), "page").Subscribe(ctx, views.Handle, e.tp.AllStatus(), e.tp.AllPresence()); err != nil {
		t.Fatal(err)
	}
	st := NewStore(e.state)
	wg.Add(1)
	go func() {
		defer wg.Done()
		WatchStore(ctx, st, 200*time.Millisecond, changes, zerolog.Nop())
	}()
	const token = "live-test-token"
	srv := httptest.NewServer(Handler(WebConfig{Store: st, Nodes: views.Snapshot, Token: token, Changes: changes,
		Carry: func(id, cmd string) {
			carriedMu.Lock()
			carried = append(carried, cmd)
			carriedMu.Unlock()
			drive()
		}}, zerolog.Nop()))
	// Closed after the browser (cleanups run last first): the page's
	// event stream ends when the browser does.
	t.Cleanup(srv.Close)

	dir := os.Getenv("EDGE_SCREENSHOT_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	shots := map[string]string{}
	b := startBrowser(t, 1300, 900)
	shoot := func(name string) {
		p := filepath.Join(dir, "live-"+name+".png")
		img := b.screenshot(p)
		if img.Bounds().Dx() != 1300 || img.Bounds().Dy() < 900 {
			t.Fatalf("screenshot %s is %v", name, img.Bounds())
		}
		shots[name] = p
	}
	text := func(sel string) string {
		return b.evalString(`(document.querySelector(` + js(sel) + `) || {textContent: ""}).textContent`)
	}
	waitText := func(what, sel, want string) {
		t.Helper()
		testwait.For(t, what, func() bool { return strings.Contains(text(sel), want) }, 2*time.Minute)
	}
	b.navigate(srv.URL + "/")
	b.eval(`window.loadMarker = "first load"`)
	// Live: the page follows the waves until the second one runs.
	waitText("the page showing wave 2 running", "#rollout-r-live", "wave 2 of 3")
	waitText("node count", "#nodes-total", "20")
	// The bars are drawn: wave 1's active segment has a width.
	barWidth := func(wave int, seg string) float64 {
		var w float64
		_ = json.Unmarshal(b.eval(`document.querySelectorAll("#rollout-r-live tr.wave")[`+strconv.Itoa(wave-1)+`].querySelector(".bar ."+`+js(seg)+`).getBoundingClientRect().width`), &w)
		return w
	}
	testwait.For(t, "wave 1's bar showing active nodes", func() bool { return barWidth(1, "a") > 0 }, time.Minute)
	shoot("1-running")

	// Abort: the page asks for the token, then for confirmation.
	b.setPrompt(token)
	b.eval(`document.getElementById("abort-r-live").click()`)
	waitText("the page showing the rollout held", "#phase-r-live", "held")
	waitText("the hold settled by node status", "#confirm-r-live", "settled")
	if res := text("#result-r-live"); !strings.Contains(res, "abort recorded; controller ctl carries it out") {
		t.Fatalf("abort result on the page: %q", res)
	}
	if p := <-phases; p != PhaseHeld {
		t.Fatalf("controller ended %s after the abort", p)
	}
	shoot("2-held")

	// Rollback: the token is kept in sessionStorage; no controller runs
	// now, so the page's server carries the command out.
	b.eval(`document.getElementById("rollback-r-live").click()`)
	waitText("the page showing the rollback confirmed", "#confirm-r-live", "rollback confirmed by node status")
	if got := text("#phase-r-live"); got != "rolled_back" {
		t.Fatalf("phase on the page %q", got)
	}
	if p := <-phases; p != PhaseRolledBack {
		t.Fatalf("controller ended %s after the rollback", p)
	}
	for n, v := range e.fleet.Active("det") {
		if v != "1" {
			t.Fatalf("the page says confirmed, but node %s runs det %s", n, v)
		}
	}
	if w := barWidth(2, "r"); w < 235 {
		t.Errorf("wave 2's bar: back-on-previous segment %.0f px wide, want the whole bar", w)
	}
	shoot("3-rolled-back")

	// Node search and detail.
	b.eval(`(() => { const q = document.getElementById("q"); q.value = "sim-00003"; q.dispatchEvent(new Event("input")); })()`)
	waitText("the search narrowed to one node", "#page-info", "1–1 of 1")
	b.eval(`document.querySelector("#nodes tbody tr").click()`)
	waitText("the node detail", "#node-detail", "r-live")
	shoot("4-node")

	var marker string
	_ = json.Unmarshal(b.eval(`window.loadMarker`), &marker)
	if marker != "first load" {
		t.Fatalf("the page reloaded (marker %q)", marker)
	}
	rec, err := st.Get(spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	started := 0
	for w := 0; w <= rec.Wave; w++ {
		started += len(rec.Members[w])
	}
	dom := b.evalString(`document.documentElement.outerHTML`)
	for _, want := range []string{`id="phase-r-live">rolled_back<`, "rollback confirmed by node status", fmt.Sprintf("%d of %d nodes report their previous version", started, started),
		"live (", "node sim-00003", "p99 ms"} {
		if !strings.Contains(dom, want) {
			t.Errorf("DOM lacks %q", want)
		}
	}
	if d := b.dialogSeen(); len(d) != 3 || !strings.HasPrefix(d[0], "prompt: Token") || !strings.HasPrefix(d[1], "confirm: abort") || !strings.HasPrefix(d[2], "confirm: rollback") {
		t.Errorf("dialogs %q, want the token prompt, then abort and rollback confirmations", d)
	}
	carriedMu.Lock()
	if strings.Join(carried, ",") != "rollback" {
		t.Errorf("carried by the page's server: %v, want only the rollback", carried)
	}
	carriedMu.Unlock()
	t.Logf("screenshots: %v; page: %s", shots, text("#live"))
}
