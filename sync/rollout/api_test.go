package rollout

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/edgeai/edge-node/sync/fleet"
	"github.com/edgeai/edge-node/sync/wire"
)

// apiServer serves Handler(cfg) on loopback until the test ends.
func apiServer(t *testing.T, cfg WebConfig) string {
	t.Helper()
	srv := httptest.NewServer(Handler(cfg, zerolog.Nop()))
	t.Cleanup(srv.Close)
	return srv.URL
}

// call sends one request and returns the status and body.
func call(t *testing.T, method, u, auth, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, b
}

func getInto(t *testing.T, u string, v any) {
	t.Helper()
	code, b := call(t, "GET", u, "", "")
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", u, code, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v: %s", u, err, b)
	}
}

func staticNodes(n map[string]*fleet.NodeView) func() map[string]*fleet.NodeView {
	return func() map[string]*fleet.NodeView { return n }
}

func TestAPIRollouts(t *testing.T) {
	st, nodes := knownFleet(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, r := range []*Record{
		{Spec: Spec{ID: "r-cont", Model: "det", Version: "7", Waves: []int{100}, Continuous: true, Retries: 2, OnAbort: OnAbortHold},
			Phase: PhaseWatching, Members: [][]string{{"a", "b", "c"}}, Counts: []Counts{{Total: 3, Active: 3}}, WaveStarted: []time.Time{t0},
			Joined: 2, Runs: map[string]NodeRun{"b": {Joined: t0}, "c": {Joined: t0, Retries: 1}}, Created: t0.Add(-time.Hour), Updated: t0},
		{Spec: Spec{ID: "r-once", Model: "seg", Version: "3", Waves: []int{100}, OnAbort: OnAbortRollback},
			Phase: PhaseCompleted, Members: [][]string{{"a"}}, Counts: []Counts{{Total: 1, Active: 1}}, Outside: 4, Created: t0.Add(-2 * time.Hour), Updated: t0},
	} {
		if err := st.Create(r); err != nil {
			t.Fatal(err)
		}
	}
	base := apiServer(t, WebConfig{Store: st, Nodes: staticNodes(nodes)})
	var got struct {
		Commands bool         `json:"commands_allowed"`
		Rollouts []APIRollout `json:"rollouts"`
	}
	getInto(t, base+"/api/rollouts", &got)
	if got.Commands || len(got.Rollouts) != 3 {
		t.Fatalf("commands %v, %d rollouts", got.Commands, len(got.Rollouts))
	}
	r := got.Rollouts[0]
	if r.ID != "r-demo-42" || r.Phase != PhaseRunning || r.Wave != 2 || len(r.Waves) != 3 || r.Nodes != 30 || r.Bad != 1 ||
		!strings.HasPrefix(r.Criteria, "abort over ") || r.Rollback != nil || r.Hold != nil {
		t.Fatalf("first rollout %+v", r)
	}
	if w := r.Waves[1]; w.Percent != 50 || w.Recorded != (Counts{Total: 12, Pending: 1, Downloading: 3, Canary: 2, Active: 5, Failed: 1}) {
		t.Errorf("wave 2 %+v", w)
	}
	// The members of knownFleet are "" (no node reports): live is pending.
	if w := r.Waves[0]; w.Live.Total != 3 || w.Live.Pending != 3 {
		t.Errorf("wave 1 live %+v", w.Live)
	}
	if c := got.Rollouts[1]; c.ID != "r-cont" || c.Joined != 2 || c.Retried != 1 || c.Retries != 2 || !c.Continuous || c.OnAbort != OnAbortHold {
		t.Errorf("continuous rollout %+v", c)
	}
	if o := got.Rollouts[2]; o.ID != "r-once" || o.Outside != 4 || o.Phase != PhaseCompleted {
		t.Errorf("completed rollout %+v", o)
	}
}

// rollbackFleet is a rolled-back rollout of det 1 → 2 over n1..n4 (wave 1:
// n1, n2; wave 2, not started: n3, n4) and views in which n1 is back on 1
// and n2 still on 2.
func rollbackFleet(t *testing.T) (*Store, map[string]*fleet.NodeView) {
	st := NewStore(filepath.Join(t.TempDir(), "r.db"))
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	r := &Record{Spec: Spec{ID: "r-back", Model: "det", Version: "2", Waves: []int{50, 100}, OnAbort: OnAbortRollback},
		Phase: PhaseRolledBack, RollbackWritten: true, Reason: "rollback by operator", Wave: 0, WavesWritten: 1, WaveStarted: []time.Time{t0},
		Members: [][]string{{"n1", "n2"}, {"n3", "n4"}}, Previous: map[string]string{"n1": "1", "n2": "1", "n3": "1", "n4": "1"},
		Counts:   []Counts{{Total: 2, Active: 1, Failed: 1}, {Total: 2, Pending: 2}},
		BadNodes: map[string]NodeState{"n2": StateFailed}, BadReasons: map[string]string{"n2": "ChecksumMismatch"}, Created: t0, Updated: t0}
	if err := st.Create(r); err != nil {
		t.Fatal(err)
	}
	nodes := map[string]*fleet.NodeView{}
	for id, ms := range map[string]wire.ModelStatus{"n1": {Version: "1", State: "Active"}, "n2": {Version: "2", State: "Failed", Reason: "ChecksumMismatch"},
		"n3": {Version: "1", State: "Active"}, "n4": {Version: "1", State: "Active"}} {
		nodes[id] = &fleet.NodeView{Node: id, Presence: &wire.Presence{Protocol: 1, Node: id, Online: true, Time: "2026-01-02T03:04:06Z"},
			Status: &wire.Status{Protocol: 1, Node: id, Time: "2026-01-02T03:04:07Z", Models: map[string]wire.ModelStatus{"det": ms},
				Desired: wire.AppliedGenerations{Node: 3, Groups: map[string]uint64{"cams": 2}}}}
	}
	return st, nodes
}

// TestAPIRollbackConfirmedByNodeStatus: a rolled-back record is not a
// confirmed rollback until every node of the started waves reports its
// previous version.
func TestAPIRollbackConfirmedByNodeStatus(t *testing.T) {
	st, nodes := rollbackFleet(t)
	var mu sync.Mutex
	base := apiServer(t, WebConfig{Store: st, Nodes: func() map[string]*fleet.NodeView {
		mu.Lock()
		defer mu.Unlock()
		return nodes
	}})
	var d APIRolloutDetail
	getInto(t, base+"/api/rollouts/r-back", &d)
	if b := d.Rollback; b == nil || !b.Written || b.Reverted != 1 || b.Of != 2 || b.Confirmed || strings.Join(b.Waiting, ",") != "n2" {
		t.Fatalf("rollback before n2 reverted: %+v", d.Rollback)
	}
	if d.Waves[0].Reverted != 1 || d.Waves[1].Reverted != 0 || d.Waves[0].Live.Failed != 1 {
		t.Errorf("waves %+v", d.Waves)
	}
	if d.BadTotal != 1 || len(d.BadNodes) != 1 || d.BadNodes[0] != (APIBadNode{Node: "n2", Wave: 1, State: StateFailed, Reason: "ChecksumMismatch",
		Attempts: 1, Reports: "2 Failed (ChecksumMismatch)"}) {
		t.Errorf("bad nodes %+v", d.BadNodes)
	}
	mu.Lock()
	nodes["n2"].Status.Models["det"] = wire.ModelStatus{Version: "1", State: "Active"}
	mu.Unlock()
	d = APIRolloutDetail{}
	getInto(t, base+"/api/rollouts/r-back", &d)
	if b := d.Rollback; !b.Confirmed || b.Reverted != 2 || len(b.Waiting) != 0 {
		t.Fatalf("rollback after n2 reverted: %+v", b)
	}
	// The record alone (no node status) confirms nothing.
	base2 := apiServer(t, WebConfig{Store: st})
	d = APIRolloutDetail{}
	getInto(t, base2+"/api/rollouts/r-back", &d)
	if b := d.Rollback; b.Confirmed || b.Reverted != 0 {
		t.Fatalf("rollback without node status: %+v", b)
	}
}

func TestAPIHoldSettles(t *testing.T) {
	st, nodes := rollbackFleet(t)
	if _, err := st.Update("r-back", func(r *Record) error {
		r.Phase, r.RollbackWritten = PhaseHeld, false
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	nodes["n1"].Status.Models["det"] = wire.ModelStatus{Version: "2", State: "Downloading"}
	base := apiServer(t, WebConfig{Store: st, Nodes: staticNodes(nodes)})
	var d APIRolloutDetail
	getInto(t, base+"/api/rollouts/r-back", &d)
	if d.Rollback != nil || d.Hold == nil || d.Hold.InFlight != 1 || d.Hold.Settled {
		t.Fatalf("held with n1 downloading: rollback %+v hold %+v", d.Rollback, d.Hold)
	}
	nodes["n1"].Status.Models["det"] = wire.ModelStatus{Version: "2", State: "Active"}
	getInto(t, base+"/api/rollouts/r-back", &d)
	if !d.Hold.Settled || d.Waves[0].Live.Active != 1 {
		t.Fatalf("held with n1 active: hold %+v, wave 1 %+v", d.Hold, d.Waves[0])
	}
}

func TestAPINodes(t *testing.T) {
	st, nodes := rollbackFleet(t)
	nodes["n4"].Presence.Online = false
	nodes["n3"].Presence = nil
	nodes["n3"].Status.Labels = map[string]string{"site": "North"}
	nodes["bad"] = &fleet.NodeView{Node: "bad", Err: wire.Reject(wire.KindStatus, wire.ReasonBadField, "broken")}
	base := apiServer(t, WebConfig{Store: st, Nodes: staticNodes(nodes)})
	ids := func(q string) string {
		var p APINodePage
		getInto(t, base+"/api/nodes?"+q, &p)
		var out []string
		for _, n := range p.Nodes {
			out = append(out, n.ID)
		}
		return strings.Join(out, ",") + "/" + strconv.Itoa(p.Total)
	}
	for q, want := range map[string]string{
		"":                          "bad,n1,n2,n3,n4/5",
		"q=n":                       "n1,n2,n3,n4/4",
		"q=SITE%3Dnorth":            "n3/1",
		"q=det%402":                 "n2/1",
		"q=cams":                    "n1,n2,n3,n4/4",
		"state=online":              "n1,n2/2",
		"state=offline":             "n4/1",
		"state=unknown":             "bad,n3/2",
		"state=failed":              "n2/1",
		"state=error":               "bad/1",
		"state=updating":            "/0",
		"limit=2":                   "bad,n1/5",
		"limit=2&offset=2":          "n2,n3/5",
		"offset=9":                  "/5",
		"q=n&state=online&offset=1": "n2/2",
	} {
		if got := ids(q); got != want {
			t.Errorf("nodes?%s: %s, want %s", q, got, want)
		}
	}
	var d APINodeDetail
	getInto(t, base+"/api/nodes/n2", &d)
	if d.Online == nil || !*d.Online || !d.LastSeen.Equal(time.Date(2026, 1, 2, 3, 4, 7, 0, time.UTC)) || len(d.Models) != 1 ||
		d.Models[0].State != "Failed" || d.Desired.Node != 3 || strings.Join(d.Groups, ",") != "cams" {
		t.Fatalf("node n2 %+v", d)
	}
	if len(d.Rollouts) != 1 || d.Rollouts[0] != (APINodeRollout{ID: "r-back", Version: "2", Phase: PhaseRolledBack, Wave: 1, Live: StateFailed,
		Previous: "1", Recorded: StateFailed, Reason: "ChecksumMismatch"}) {
		t.Errorf("node n2 rollouts %+v", d.Rollouts)
	}
}

// TestAPIBadInputs: every decoder of the API refuses bad input with a JSON
// error and the status errdefs.HTTPStatus gives.
func TestAPIBadInputs(t *testing.T) {
	st, nodes := rollbackFleet(t)
	if err := st.Create(&Record{Spec: Spec{ID: "r-run", Model: "det", Version: "2", Waves: []int{100}, OnAbort: OnAbortHold},
		Phase: PhaseRunning, Members: [][]string{{"n1"}}}); err != nil {
		t.Fatal(err)
	}
	const tok = "s3cret-token"
	base := apiServer(t, WebConfig{Store: st, Nodes: staticNodes(nodes), Token: tok})
	ro := apiServer(t, WebConfig{Store: st, Nodes: staticNodes(nodes)})
	good := "Bearer " + tok
	for _, c := range []struct {
		name, base, method, path, auth, body string
		want                                 int
		says                                 string
	}{
		{"rollout id bad", base, "GET", "/api/rollouts/-x", "", "", 400, "invalid name"},
		{"rollout id too long", base, "GET", "/api/rollouts/" + strings.Repeat("a", 65), "", "", 400, "invalid name"},
		{"rollout id escaped slash", base, "GET", "/api/rollouts/a%2Fb", "", "", 400, "invalid name"},
		{"rollout unknown", base, "GET", "/api/rollouts/nope", "", "", 404, "not found"},
		{"node id bad", base, "GET", "/api/nodes/a%20b", "", "", 400, "invalid name"},
		{"node unknown", base, "GET", "/api/nodes/nope", "", "", 404, "no status"},
		{"limit zero", base, "GET", "/api/nodes?limit=0", "", "", 400, "limit"},
		{"limit over", base, "GET", "/api/nodes?limit=501", "", "", 400, "limit"},
		{"limit text", base, "GET", "/api/nodes?limit=ten", "", "", 400, "limit"},
		{"offset negative", base, "GET", "/api/nodes?offset=-1", "", "", 400, "offset"},
		{"offset huge", base, "GET", "/api/nodes?offset=99999999999999999999", "", "", 400, "offset"},
		{"state unknown", base, "GET", "/api/nodes?state=sleepy", "", "", 400, "state"},
		{"param unknown", base, "GET", "/api/nodes?sort=id", "", "", 400, "unknown parameter"},
		{"param twice", base, "GET", "/api/nodes?q=a&q=b", "", "", 400, "2 times"},
		{"q too long", base, "GET", "/api/nodes?q=" + strings.Repeat("a", 129), "", "", 400, "q:"},
		{"q control", base, "GET", "/api/nodes?q=a%00b", "", "", 400, "q:"},
		{"q not utf-8", base, "GET", "/api/nodes?q=%ff", "", "", 400, "q:"},
		{"no route", base, "GET", "/api/nothing", "", "", 404, "no API route"},
		{"get on command", base, "GET", "/api/rollouts/r-run/pause/x", "", "", 404, "no API route"},
		{"read-only", ro, "POST", "/api/rollouts/r-run/pause", good, "", 403, "read-only"},
		{"no token", base, "POST", "/api/rollouts/r-run/pause", "", "", 401, "Bearer"},
		{"wrong token", base, "POST", "/api/rollouts/r-run/pause", "Bearer wrong", "", 401, "Bearer"},
		{"token prefix", base, "POST", "/api/rollouts/r-run/pause", "Bearer s3cret", "", 401, "Bearer"},
		{"token no scheme", base, "POST", "/api/rollouts/r-run/pause", tok, "", 401, "Bearer"},
		{"token basic", base, "POST", "/api/rollouts/r-run/pause", "Basic " + tok, "", 401, "Bearer"},
		{"unknown command", base, "POST", "/api/rollouts/r-run/explode", good, "", 400, "want pause"},
		{"command bad id", base, "POST", "/api/rollouts/..%2f/pause", good, "", 400, "invalid name"},
		{"command unknown rollout", base, "POST", "/api/rollouts/nope/pause", good, "", 404, "not found"},
		{"command wrong phase", base, "POST", "/api/rollouts/r-run/resume", good, "", 409, "cannot resume"},
		{"command final", base, "POST", "/api/rollouts/r-back/rollback", good, "", 409, "cannot rollback"},
		{"body fields", base, "POST", "/api/rollouts/r-run/pause", good, `{"cmd":"x"}`, 400, "want nothing or {}"},
		{"body not json", base, "POST", "/api/rollouts/r-run/pause", good, `pause`, 400, "want nothing or {}"},
		{"body null", base, "POST", "/api/rollouts/r-run/pause", good, `null`, 400, "want nothing or {}"},
		{"body array", base, "POST", "/api/rollouts/r-run/pause", good, `[]`, 400, "want nothing or {}"},
		{"body trailing brace", base, "POST", "/api/rollouts/r-run/pause", good, `{}}`, 400, "after the JSON"},
		{"body trailing", base, "POST", "/api/rollouts/r-run/pause", good, `{} {}`, 400, "after the JSON"},
		{"body over limit", base, "POST", "/api/rollouts/r-run/pause", good, "{" + strings.Repeat(" ", MaxCommandBody) + "}", 413, "over 1024"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, b := call(t, c.method, c.base+c.path, c.auth, c.body)
			var e struct{ Error string }
			if err := json.Unmarshal(b, &e); err != nil || e.Error == "" {
				t.Fatalf("%d, not a JSON error: %s", code, b)
			}
			if code != c.want || !strings.Contains(e.Error, c.says) {
				t.Fatalf("%d %q, want %d saying %q", code, e.Error, c.want, c.says)
			}
		})
	}
	// None of them reached the record.
	r, err := st.Get("r-run")
	if err != nil || r.Command != "" {
		t.Fatalf("r-run after bad commands: %v, command %q", err, r.Command)
	}
}

// TestAPICommands: a command with the token is recorded in the store, and
// said to be carried out by the lease holder, or handed to Carry when no
// controller holds a live lease.
func TestAPICommands(t *testing.T) {
	st, nodes := rollbackFleet(t)
	if err := st.Create(&Record{Spec: Spec{ID: "r-run", Model: "det", Version: "2", Waves: []int{100}, OnAbort: OnAbortHold},
		Phase: PhaseRunning, Members: [][]string{{"n1"}}}); err != nil {
		t.Fatal(err)
	}
	var carried []string
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	changes := NewChanges()
	base := apiServer(t, WebConfig{Store: st, Nodes: staticNodes(nodes), Token: "tok", Changes: changes,
		Carry: func(id, cmd string) { carried = append(carried, id+" "+cmd) }, Now: func() time.Time { return now }})
	post := func(cmd, body string) CommandResult {
		t.Helper()
		code, b := call(t, "POST", base+"/api/rollouts/r-run/"+cmd, "Bearer tok", body)
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", cmd, code, b)
		}
		var res CommandResult
		if err := json.Unmarshal(b, &res); err != nil {
			t.Fatal(err)
		}
		return res
	}
	if err := st.AcquireLease("r-run", "ctl-1", time.Minute, now); err != nil {
		t.Fatal(err)
	}
	res := post(CmdPause, "{}")
	if res.CarriedBy != "ctl-1" || res.Rollout.Command != CmdPause || res.Rollout.Controller == nil || !res.Rollout.Controller.Live || len(carried) != 0 {
		t.Fatalf("pause under a live lease: %+v, carried %v", res, carried)
	}
	if r, _ := st.Get("r-run"); r.Command != CmdPause {
		t.Fatalf("stored command %q", r.Command)
	}
	now = now.Add(2 * time.Minute) // the lease expired: serve carries it out
	res = post(CmdAbort, " \n")
	if res.CarriedBy != "edgectl serve" || strings.Join(carried, ";") != "r-run abort" {
		t.Fatalf("abort without a live lease: %+v, carried %v", res, carried)
	}
}

// TestAPIEvents: /api/events streams a change event after Notify, and
// WatchStore notices a record written by someone else.
func TestAPIEvents(t *testing.T) {
	st, nodes := rollbackFleet(t)
	changes := NewChanges()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		WatchStore(ctx, st, 20*time.Millisecond, changes, zerolog.Nop())
	}()
	defer func() { cancel(); <-done }()
	base := apiServer(t, WebConfig{Store: st, Nodes: staticNodes(nodes), Changes: changes})
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/events", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	events := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				events <- d
			}
		}
		close(events)
	}()
	next := func(want string) {
		t.Helper()
		for {
			select {
			case d, ok := <-events:
				if !ok {
					t.Fatalf("stream ended waiting for %s", want)
				}
				if d == want {
					return
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("no event %s", want)
			}
		}
	}
	next("{}") // hello
	changes.Nodes.Notify()
	next(`{"nodes":true,"rollouts":false}`)
	// Another process writes the state file.
	if _, err := NewStore(st.path).Update("r-back", func(r *Record) error {
		r.Reason = "changed elsewhere"
		r.Updated = r.Updated.Add(time.Second)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	next(`{"nodes":false,"rollouts":true}`)
}

func TestAPIEventsBounded(t *testing.T) {
	changes := NewChanges()
	changes.streams.Store(maxEventClients) // as many streams open as allowed
	base := apiServer(t, WebConfig{Store: NewStore(filepath.Join(t.TempDir(), "none.db")), Changes: changes})
	if code, b := call(t, "GET", base+"/api/events", "", ""); code != http.StatusServiceUnavailable {
		t.Fatalf("stream over the bound: %d %s", code, b)
	}
	if n := changes.streams.Load(); n != maxEventClients {
		t.Fatalf("a refused stream left the count at %d, want %d", n, maxEventClients)
	}
	changes.streams.Store(maxEventClients - 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/events", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("the last stream within the bound: %d", res.StatusCode)
	}
	if code, b := call(t, "GET", apiServer(t, WebConfig{Store: NewStore("x")})+"/api/events", "", ""); code != http.StatusNotImplemented {
		t.Fatalf("events unconfigured: %d %s", code, b)
	}
}

// TestAPIStatic: the page and its files are served, with a CSP that
// allows only this origin; an empty state file lists no rollouts.
func TestAPIStatic(t *testing.T) {
	base := apiServer(t, WebConfig{Store: NewStore(filepath.Join(t.TempDir(), "none.db"))})
	for path, want := range map[string]string{"/": "<title>edge fleet</title>", "/static/app.js": "EventSource", "/static/app.css": ".bar"} {
		res, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !strings.Contains(string(b), want) || !strings.Contains(res.Header.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Errorf("%s: %d, CSP %q, has %q: %v", path, res.StatusCode, res.Header.Get("Content-Security-Policy"), want, strings.Contains(string(b), want))
		}
	}
	var got struct{ Rollouts []APIRollout }
	getInto(t, base+"/api/rollouts", &got)
	if got.Rollouts == nil || len(got.Rollouts) != 0 {
		t.Fatalf("rollouts %v", got.Rollouts)
	}
}

func FuzzNodeQuery(f *testing.F) {
	for _, s := range []string{"", "q=cam&state=online&limit=10&offset=5", "limit=0", "q=%ff", "state=x&state=y", "offset=-1", "q=" + strings.Repeat("a", 200)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := parseNodeQuery(v)
		if err != nil {
			return
		}
		if q.Limit < 1 || q.Limit > MaxNodeLimit || q.Offset < 0 || q.Offset > MaxNodeOffset || len(q.Q) > MaxQueryBytes {
			t.Fatalf("%q accepted as %+v", raw, q)
		}
		p := apiNodePage(map[string]*fleet.NodeView{"a": {Node: "a"}, "b": {Node: "b", Status: &wire.Status{Labels: map[string]string{"k": "v"}}}}, q)
		if len(p.Nodes) > q.Limit || p.Total > 2 {
			t.Fatalf("%q: page %+v", raw, p)
		}
	})
}

func FuzzCommandBody(f *testing.F) {
	for _, s := range []string{"", "{}", " {} ", `{"a":1}`, "[]", "{} {}", "null", "{}x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		err := decodeCommandBody(strings.NewReader(body))
		if trimmed := strings.TrimSpace(body); err == nil && trimmed != "" && (!strings.HasPrefix(trimmed, "{") || !strings.HasSuffix(trimmed, "}")) {
			t.Fatalf("%q accepted", body)
		}
	})
}

func FuzzCheckID(f *testing.F) {
	for _, s := range []string{"r-1", "-x", "", "a/b", strings.Repeat("a", 65)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if checkID("rollout", id) == nil && (id == "" || len(id) > 64 || strings.ContainsAny(id, "/ %\x00")) {
			t.Fatalf("%q accepted", id)
		}
	})
}

// TestAPIStateFileLocked: while another process holds the state file's
// lock past the store's timeout, the API answers 503 saying so (ErrLocked).
func TestAPIStateFileLocked(t *testing.T) {
	st, nodes := rollbackFleet(t)
	db, err := bolt.Open(st.path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st.timeout = 50 * time.Millisecond
	base := apiServer(t, WebConfig{Store: st, Nodes: staticNodes(nodes), Token: "tok"})
	for _, c := range []struct{ method, path, auth string }{
		{"GET", "/api/rollouts", ""}, {"GET", "/api/rollouts/r-back", ""}, {"GET", "/api/nodes/n1", ""}, {"POST", "/api/rollouts/r-back/pause", "Bearer tok"},
	} {
		code, b := call(t, c.method, base+c.path, c.auth, "")
		if code != http.StatusServiceUnavailable || !strings.Contains(string(b), "no lock after") {
			t.Errorf("%s %s with the file locked: %d %s", c.method, c.path, code, b)
		}
	}
}
