package rollout

import (
	"bytes"
	"context"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/errdefs"
	"github.com/edgeai/edge-node/internal/changes"
	"github.com/edgeai/edge-node/sync/fleet"
)

// The operator page: static HTML and JS (web/, embedded) that reads the
// JSON API below, follows /api/events, and sends commands with a bearer
// token.
//
//	GET  /                                  the page
//	GET  /static/{file}                     its script and style sheet
//	GET  /api/rollouts                      every rollout, newest first (APIRollout)
//	GET  /api/rollouts/{id}                 one, with its failed and timed-out nodes (APIRolloutDetail)
//	GET  /api/nodes?q=&state=&limit=&offset= search and filter the nodes (APINodePage)
//	GET  /api/nodes/{id}                    one node (APINodeDetail)
//	GET  /api/events                        Server-Sent Events: "change" {"nodes":bool,"rollouts":bool}
//	POST /api/rollouts/{id}/{command}       pause, resume, abort or rollback (Store.Command); needs the token
//
// Errors are JSON {"error": "..."} with the status errdefs.HTTPStatus maps.

//go:embed web
var webFiles embed.FS

// WebConfig configures Handler.
type WebConfig struct {
	Store *Store
	// Nodes returns the nodes' views (a copy the handler may keep).
	Nodes func() map[string]*fleet.NodeView
	// Token allows commands: POSTs need "Authorization: Bearer <Token>".
	// Empty: the page is read-only and every command is refused (403).
	Token string
	// Changes feeds /api/events; nil: /api/events answers 501.
	Changes *Changes
	// Carry, when set, is called after a command was recorded for a
	// rollout that no controller holds a live lease on, to carry it out
	// (edgectl serve runs a controller, as `edgectl rollout CMD` does).
	Carry func(id, cmd string)
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// MaxCommandBody bounds a command's body (empty, or a JSON object without
// fields: the command is in the path).
const MaxCommandBody = 1 << 10

// maxEventClients bounds the /api/events streams open at once.
const maxEventClients = 64

// eventGap is the least time between two change events to one client: a
// busy fleet's status messages are coalesced into one event per gap.
const eventGap = 250 * time.Millisecond

type web struct {
	cfg WebConfig
	log zerolog.Logger
}

// Handler serves the operator page and its API.
func Handler(cfg WebConfig, log zerolog.Logger) http.Handler {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Nodes == nil {
		cfg.Nodes = func() map[string]*fleet.NodeView { return nil }
	}
	h := &web{cfg: cfg, log: log.With().Str("component", "rollout-web").Logger()}
	static, err := fs.Sub(webFiles, "web")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, static, "index.html")
	})
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /api/rollouts", h.listRollouts)
	mux.HandleFunc("GET /api/rollouts/{id}", h.getRollout)
	mux.HandleFunc("POST /api/rollouts/{id}/{cmd}", h.command)
	mux.HandleFunc("GET /api/nodes", h.listNodes)
	mux.HandleFunc("GET /api/nodes/{id}", h.getNode)
	mux.HandleFunc("GET /api/events", h.events)
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		apiError(w, http.StatusNotFound, fmt.Errorf("no API route for %s %s", r.Method, r.URL.Path))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The page loads only its own script and style, and calls only
		// this origin.
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		mux.ServeHTTP(w, r)
	})
}

func apiError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, map[string]string{"error": err.Error()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(v); err != nil {
		status, b = http.StatusInternalServerError, bytes.Buffer{}
		fmt.Fprintf(&b, "{\"error\":%q}\n", err.Error())
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

func (h *web) fail(w http.ResponseWriter, err error) {
	status := errdefs.HTTPStatus(err)
	if status >= 500 {
		h.log.Warn().Err(err).Msg("api")
	}
	apiError(w, status, err)
}

func (h *web) listRollouts(w http.ResponseWriter, _ *http.Request) {
	recs, err := h.cfg.Store.List()
	if err != nil {
		h.fail(w, err)
		return
	}
	leases, err := h.cfg.Store.Leases()
	if err != nil {
		h.fail(w, err)
		return
	}
	nodes, now := h.cfg.Nodes(), h.cfg.Now()
	out := struct {
		Now      time.Time    `json:"now"`
		Token    bool         `json:"commands_allowed"`
		Rollouts []APIRollout `json:"rollouts"`
	}{Now: now, Token: h.cfg.Token != "", Rollouts: []APIRollout{}}
	for _, r := range recs {
		var lp *Lease
		if l, ok := leases[r.Spec.ID]; ok {
			lp = &l
		}
		out.Rollouts = append(out.Rollouts, apiRollout(r, nodes, lp, now))
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *web) getRollout(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := checkID("rollout", id); err != nil {
		h.fail(w, err)
		return
	}
	rec, err := h.cfg.Store.Get(id)
	if err != nil {
		h.fail(w, err)
		return
	}
	l, ok, err := h.cfg.Store.LeaseOf(id)
	if err != nil {
		h.fail(w, err)
		return
	}
	var lp *Lease
	if ok {
		lp = &l
	}
	writeJSON(w, http.StatusOK, apiRolloutDetail(rec, h.cfg.Nodes(), lp, h.cfg.Now()))
}

func (h *web) listNodes(w http.ResponseWriter, r *http.Request) {
	q, err := parseNodeQuery(r.URL.Query())
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, apiNodePage(h.cfg.Nodes(), q))
}

func (h *web) getNode(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := checkID("node", id); err != nil {
		h.fail(w, err)
		return
	}
	nodes := h.cfg.Nodes()
	v := nodes[id]
	if v == nil {
		h.fail(w, fmt.Errorf("node %s: no status or presence seen: %w", id, errdefs.ErrNotFound))
		return
	}
	recs, err := h.cfg.Store.List()
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, apiNodeDetail(v, recs, nodes))
}

// errReadOnly refuses a command on a page served without a token.
var errReadOnly = errors.New("read-only: this page was served without a token (edgectl serve --token-file FILE or $EDGECTL_SERVE_TOKEN), so it takes no commands")

// authorize checks a command's bearer token. The token travels in the
// Authorization header only (never a cookie or the URL): a page of
// another origin cannot send it, so a command cannot be forged across
// sites.
func (h *web) authorize(w http.ResponseWriter, r *http.Request) bool {
	if h.cfg.Token == "" {
		apiError(w, http.StatusForbidden, errReadOnly)
		return false
	}
	got := []byte(r.Header.Get("Authorization"))
	want := []byte("Bearer " + h.cfg.Token)
	if subtle.ConstantTimeCompare(got, want) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="edgectl serve"`)
		apiError(w, http.StatusUnauthorized, errors.New("commands need Authorization: Bearer <token> (the token edgectl serve was given)"))
		return false
	}
	return true
}

// decodeCommandBody checks a command's body: empty, or a JSON object with
// no fields, at most MaxCommandBody bytes.
func decodeCommandBody(body io.Reader) error {
	b, err := io.ReadAll(body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("command body over %d bytes: %w", MaxCommandBody, err)
		}
		return fmt.Errorf("command body: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil
	}
	if b[0] != '{' {
		return fmt.Errorf("command body: want nothing or {} (the command is in the path): %w", errdefs.ErrInvalidArgument)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var v struct{}
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("command body: want nothing or {} (the command is in the path): %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if len(bytes.TrimSpace(b[dec.InputOffset():])) != 0 {
		return fmt.Errorf("command body: data after the JSON object: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}

// CommandResult is what POST /api/rollouts/{id}/{command} answers.
type CommandResult struct {
	Command string     `json:"command"`
	Rollout APIRollout `json:"rollout"`
	// CarriedBy says who carries the command out: the controller holding
	// the rollout's lease, edgectl serve itself, or nobody yet.
	CarriedBy string `json:"carried_by"`
	Message   string `json:"message"`
}

func (h *web) command(w http.ResponseWriter, r *http.Request) {
	if !h.authorize(w, r) {
		return
	}
	id, cmd := r.PathValue("id"), r.PathValue("cmd")
	if err := checkID("rollout", id); err != nil {
		h.fail(w, err)
		return
	}
	switch cmd {
	case CmdPause, CmdResume, CmdAbort, CmdRollback:
	default:
		h.fail(w, fmt.Errorf("command %.40q: want pause, resume, abort or rollback: %w", cmd, errdefs.ErrInvalidArgument))
		return
	}
	if err := decodeCommandBody(http.MaxBytesReader(w, r.Body, MaxCommandBody)); err != nil {
		h.fail(w, err)
		return
	}
	rec, err := h.cfg.Store.Command(id, cmd)
	if err != nil {
		h.fail(w, err)
		return
	}
	now := h.cfg.Now()
	l, held, err := h.cfg.Store.LeaseOf(id)
	if err != nil {
		h.fail(w, err)
		return
	}
	res := CommandResult{Command: cmd}
	var lp *Lease
	switch {
	case held && now.Before(l.Expires):
		lp = &l
		res.CarriedBy = l.Owner
		res.Message = fmt.Sprintf("%s recorded; controller %s carries it out on its next tick", cmd, l.Owner)
	case h.cfg.Carry != nil:
		h.cfg.Carry(id, cmd)
		res.CarriedBy = "edgectl serve"
		res.Message = fmt.Sprintf("%s recorded; no controller was driving the rollout, so edgectl serve carries it out", cmd)
	default:
		res.Message = fmt.Sprintf("%s recorded; no controller drives the rollout: edgectl rollout run %s carries it out", cmd, id)
	}
	h.log.Info().Str("rollout", id).Str("command", cmd).Str("carried_by", res.CarriedBy).Msg("command from the page")
	if h.cfg.Changes != nil {
		h.cfg.Changes.Rollouts.Notify()
	}
	res.Rollout = apiRollout(rec, h.cfg.Nodes(), lp, now)
	writeJSON(w, http.StatusOK, res)
}

// Changes feeds the /api/events streams: Nodes when node views change,
// Rollouts when rollout records do (internal/changes feeds: Notify never
// blocks, a slow stream gets one notice for many changes).
type Changes struct {
	Nodes, Rollouts changes.Feed
	streams         atomic.Int32 // open /api/events streams
}

// NewChanges returns feeds with no streams.
func NewChanges() *Changes { return &Changes{} }

// WatchStore notifies ch.Rollouts whenever st's records change,
// until ctx ends. The state file is written by other processes (edgectl
// rollout run, edgectl rollout CMD) that cannot tell this one, so it reads
// the records every interval and compares a digest of what the page shows.
func WatchStore(ctx context.Context, st *Store, every time.Duration, ch *Changes, log zerolog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	var last uint64
	warned := false
	for {
		recs, err := st.List()
		switch {
		case err != nil && !warned:
			log.Warn().Err(err).Msg("reading rollouts")
			warned = true
		case err == nil:
			warned = false
			h := fnv.New64a()
			for _, r := range recs {
				fmt.Fprintf(h, "%s %s %s %d %d %d %s|", r.Spec.ID, r.Phase, r.Command, r.Wave, r.WavesWritten, len(r.History), r.Updated.Format(time.RFC3339Nano))
			}
			if d := h.Sum64(); d != last {
				last = d
				ch.Rollouts.Notify()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// events streams change notifications (text/event-stream): an event
// "change" with data {"nodes":bool,"rollouts":bool} each time something
// the page shows changed (at most one every eventGap), a comment every
// 15 s to keep proxies from closing the stream.
func (h *web) events(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Changes == nil {
		h.fail(w, fmt.Errorf("live updates are not configured: %w", errdefs.ErrUnsupported))
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		h.fail(w, fmt.Errorf("streaming: %w", errdefs.ErrUnsupported))
		return
	}
	c := h.cfg.Changes
	if c.streams.Add(1) > maxEventClients {
		c.streams.Add(-1)
		h.fail(w, fmt.Errorf("%d event streams open already: %w", maxEventClients, errdefs.ErrUnavailable))
		return
	}
	defer c.streams.Add(-1)
	nodes, rollouts := c.Nodes.Subscribe(r.Context()), c.Rollouts.Subscribe(r.Context())
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	var sb strings.Builder
	send := func(s string) bool {
		if _, err := io.WriteString(w, s); err != nil {
			return false
		}
		fl.Flush()
		return true
	}
	if !send("retry: 2000\nevent: hello\ndata: {}\n\n") {
		return
	}
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		var nodesChanged, rolloutsChanged bool
		select {
		case <-r.Context().Done():
			return
		case <-ping.C:
			if !send(": ping\n\n") {
				return
			}
			continue
		case <-nodes:
			nodesChanged = true
		case <-rollouts:
			rolloutsChanged = true
		}
		// What changed too by now goes in the same event.
		select {
		case <-nodes:
			nodesChanged = true
		default:
		}
		select {
		case <-rollouts:
			rolloutsChanged = true
		default:
		}
		sb.Reset()
		fmt.Fprintf(&sb, "event: change\ndata: {\"nodes\":%t,\"rollouts\":%t}\n\n", nodesChanged, rolloutsChanged)
		if !send(sb.String()) {
			return
		}
		gap := time.NewTimer(eventGap)
		select {
		case <-r.Context().Done():
			gap.Stop()
			return
		case <-gap.C:
		}
	}
}
