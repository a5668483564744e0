package rollout

import (
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/edgeai/edge-node/errdefs"
	"github.com/edgeai/edge-node/sync/fleet"
	"github.com/edgeai/edge-node/sync/wire"
)

// This file is the operator page's JSON: what GET /api/... answers, built
// from the records and the nodes' views. web.go serves it.

// APIWave is one wave of a rollout as the page draws it.
type APIWave struct {
	N       int  `json:"n"` // 1-based
	Percent int  `json:"percent"`
	Started bool `json:"started"`
	// Recorded is the controller's tally at its last tick (timed-out nodes
	// and retries counted); it stops when the rollout ends.
	Recorded Counts `json:"recorded"`
	// Live is the wave's nodes as their reported status says now,
	// classified against the rollout's version (Classify); a wave not
	// started is all pending. It follows the nodes after the rollout
	// ended: through a hold, and through a rollback (nodes back on their
	// previous version count pending here, and in Reverted).
	Live Counts `json:"live"`
	// Reverted counts, once a rollback was asked for, the wave's nodes
	// that report their previous version again (Record.Previous).
	Reverted int `json:"reverted"`
}

// APIRollback says how far a rollback got, by node status.
type APIRollback struct {
	// Written: the controller wrote the previous version back (phase
	// rolled_back).
	Written bool `json:"written"`
	// Reverted of Of nodes of the started waves report their previous
	// version Active again (or, where the model was not there before, no
	// longer serve it).
	Reverted int `json:"reverted"`
	Of       int `json:"of"`
	// Confirmed: Written, and every one of them reverted.
	Confirmed bool `json:"confirmed"`
	// Waiting are the first nodes not reverted yet (at most 20).
	Waiting []string `json:"waiting,omitempty"`
}

// APIHold says how far a hold (abort) got, by node status: nodes already
// written keep going to what they were given; the hold is settled when
// none is still downloading or in its canary.
type APIHold struct {
	InFlight int  `json:"in_flight"`
	Settled  bool `json:"settled"`
}

// APIController is the controller driving a rollout (its lease).
type APIController struct {
	Owner   string    `json:"owner"`
	Expires time.Time `json:"expires"`
	Live    bool      `json:"live"`
}

// APIRollout is one rollout in GET /api/rollouts.
type APIRollout struct {
	ID       string            `json:"id"`
	Model    string            `json:"model"`
	Version  string            `json:"version"`
	Group    string            `json:"group,omitempty"`
	Selector map[string]string `json:"selector,omitempty"`
	Phase    Phase             `json:"phase"`
	Reason   string            `json:"reason,omitempty"`
	// Command is an operator command recorded and not carried out yet.
	Command    string         `json:"command,omitempty"`
	Wave       int            `json:"wave"` // 1-based latest started wave, 0 before the first
	Nodes      int            `json:"nodes"`
	Criteria   string         `json:"criteria"`
	OnAbort    string         `json:"on_abort"`
	Continuous bool           `json:"continuous,omitempty"`
	Retries    int            `json:"retries,omitempty"`
	Joined     int            `json:"joined,omitempty"`
	Outside    int            `json:"outside,omitempty"`
	Retried    int            `json:"retried,omitempty"`
	Bad        int            `json:"bad"` // failed, rolled back or timed out (recorded)
	Waves      []APIWave      `json:"waves"`
	Rollback   *APIRollback   `json:"rollback,omitempty"`
	Hold       *APIHold       `json:"hold,omitempty"`
	Controller *APIController `json:"controller,omitempty"`
	Created    time.Time      `json:"created"`
	Updated    time.Time      `json:"updated"`
}

// APIBadNode is a node that failed, rolled back or timed out in a rollout.
type APIBadNode struct {
	Node     string    `json:"node"`
	Wave     int       `json:"wave"` // 1-based
	State    NodeState `json:"state"`
	Reason   string    `json:"reason"`
	Attempts int       `json:"attempts"`
	// Reports is the node's reported version and state of the model now.
	Reports string `json:"reports,omitempty"`
}

// MaxBadNodes bounds the bad nodes GET /api/rollouts/{id} lists (BadTotal
// counts them all).
const MaxBadNodes = 1000

// APIRolloutDetail is GET /api/rollouts/{id}.
type APIRolloutDetail struct {
	APIRollout
	BadNodes []APIBadNode `json:"bad_nodes"`
	BadTotal int          `json:"bad_total"`
	History  []Transition `json:"history"`
}

// APINodeModel is one model on a node.
type APINodeModel struct {
	Model      string           `json:"model"`
	Version    string           `json:"version"`
	State      string           `json:"state"`
	Reason     string           `json:"reason,omitempty"`
	Serving    string           `json:"serving,omitempty"`
	P99Ms      float64          `json:"p99_ms,omitempty"`
	BytesDone  int64            `json:"bytes_done,omitempty"`
	BytesTotal int64            `json:"bytes_total,omitempty"`
	Rollout    *wire.RolloutRef `json:"rollout,omitempty"`
}

// APINode is one node in GET /api/nodes. The status message carries no
// error rate (a node's gates judge it on the device), so neither does this.
type APINode struct {
	ID string `json:"id"`
	// Online is the node's presence; nil when it published none.
	Online *bool `json:"online"`
	// LastSeen is the later of its status and presence times.
	LastSeen     time.Time         `json:"last_seen,omitzero"`
	StatusTime   string            `json:"status_time,omitempty"`
	PresenceTime string            `json:"presence_time,omitempty"`
	Agent        string            `json:"agent,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	Groups       []string          `json:"groups,omitempty"`
	Models       []APINodeModel    `json:"models"`
	// Error is why the node's latest status or presence did not decode.
	Error string `json:"error,omitempty"`
}

// APINodeRollout is a rollout a node is a member of.
type APINodeRollout struct {
	ID       string    `json:"id"`
	Version  string    `json:"version"`
	Phase    Phase     `json:"phase"`
	Wave     int       `json:"wave"` // 1-based
	Live     NodeState `json:"live"`
	Previous string    `json:"previous"`
	Recorded NodeState `json:"recorded,omitempty"` // a bad state the controller tallied
	Reason   string    `json:"reason,omitempty"`
}

// APINodeDetail is GET /api/nodes/{id}.
type APINodeDetail struct {
	APINode
	Desired  wire.AppliedGenerations `json:"desired"`
	Rollouts []APINodeRollout        `json:"rollouts"`
}

// APINodePage is GET /api/nodes.
type APINodePage struct {
	Total  int       `json:"total"` // nodes matching the query
	All    int       `json:"all"`   // every node known
	Online int       `json:"online"`
	Offset int       `json:"offset"`
	Limit  int       `json:"limit"`
	Nodes  []APINode `json:"nodes"`
}

// Node filters of GET /api/nodes?state=.
const (
	FilterOnline   = "online"   // presence online
	FilterOffline  = "offline"  // presence offline (Last Will)
	FilterUnknown  = "unknown"  // no presence published
	FilterFailed   = "failed"   // a model Failed, RolledBack or Retired by its gates
	FilterUpdating = "updating" // a model downloading, loading, warming or in its canary
	FilterError    = "error"    // the latest status or presence did not decode
)

var nodeFilters = []string{FilterOnline, FilterOffline, FilterUnknown, FilterFailed, FilterUpdating, FilterError}

// Bounds of GET /api/nodes.
const (
	DefaultNodeLimit = 100
	MaxNodeLimit     = 500
	MaxNodeOffset    = 1 << 24
	MaxQueryBytes    = 128
)

// NodeQuery is GET /api/nodes' parameters, decoded by parseNodeQuery.
type NodeQuery struct {
	// Q matches, case-insensitively, part of a node's id, of one of its
	// labels as key=value, of a group, or of a model as model@version.
	Q      string
	State  string
	Limit  int
	Offset int
}

// parseNodeQuery decodes and checks GET /api/nodes' query: q, state,
// limit, offset, each at most once; anything else is an error
// (errdefs.ErrInvalidArgument).
func parseNodeQuery(v url.Values) (NodeQuery, error) {
	q := NodeQuery{Limit: DefaultNodeLimit}
	bad := func(format string, a ...any) (NodeQuery, error) {
		return NodeQuery{}, fmt.Errorf("nodes query: "+format+": %w", append(a, errdefs.ErrInvalidArgument)...)
	}
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		vals := v[k]
		if len(vals) != 1 {
			return bad("%.40q given %d times", k, len(vals))
		}
		val := vals[0]
		switch k {
		case "q":
			if len(val) > MaxQueryBytes || !utf8.ValidString(val) || strings.ContainsFunc(val, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				return bad("q: want at most %d bytes of printable UTF-8", MaxQueryBytes)
			}
			q.Q = strings.TrimSpace(val)
		case "state":
			if val != "" && !slices.Contains(nodeFilters, val) {
				return bad("state %.40q: want one of %s", val, strings.Join(nodeFilters, ", "))
			}
			q.State = val
		case "limit":
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 || n > MaxNodeLimit {
				return bad("limit %.40q: want a whole number 1-%d", val, MaxNodeLimit)
			}
			q.Limit = n
		case "offset":
			n, err := strconv.Atoi(val)
			if err != nil || n < 0 || n > MaxNodeOffset {
				return bad("offset %.40q: want a whole number 0-%d", val, MaxNodeOffset)
			}
			q.Offset = n
		default:
			return bad("unknown parameter %.40q (want q, state, limit, offset)", k)
		}
	}
	return q, nil
}

// checkID checks a rollout or node id from a request path.
func checkID(what, id string) error {
	if err := wire.ValidName(id); err != nil {
		return fmt.Errorf("%s id: %w: %w", what, err, errdefs.ErrInvalidArgument)
	}
	return nil
}

// reportOf is the node's reported status of model (nil when none).
func reportOf(nodes map[string]*fleet.NodeView, node, model string) *wire.ModelStatus {
	v := nodes[node]
	if v == nil || v.Status == nil {
		return nil
	}
	ms, ok := v.Status.Models[model]
	if !ok {
		return nil
	}
	return &ms
}

// reverted reports whether ms shows a node back on prev: prev Active, or,
// prev empty (the model was not there before), the model not served.
func reverted(ms *wire.ModelStatus, prev string) bool {
	if prev == "" {
		return ms == nil || ms.State != "Active" && ms.Serving == ""
	}
	return ms != nil && ms.Version == prev && ms.State == "Active"
}

// liveState classifies node of rollout r by its reported status now.
func liveState(r *Record, nodes map[string]*fleet.NodeView, node string, wave int) NodeState {
	if wave > r.Wave {
		return StatePending
	}
	return Classify(reportOf(nodes, node, r.Spec.Model), r.Spec.Version)
}

// rollingBack reports whether a rollback was asked for in r.
func rollingBack(r *Record) bool {
	return r.Phase == PhaseRollingBack || r.Phase == PhaseRolledBack
}

// apiRollout is r as GET /api/rollouts shows it, with the waves' live
// counts from nodes.
func apiRollout(r *Record, nodes map[string]*fleet.NodeView, lease *Lease, now time.Time) APIRollout {
	a := APIRollout{ID: r.Spec.ID, Model: r.Spec.Model, Version: r.Spec.Version, Group: r.Spec.Group, Selector: r.Spec.Selector,
		Phase: r.Phase, Reason: r.Reason, Command: r.Command, Wave: r.Wave + 1, Nodes: r.Nodes(), Criteria: r.Spec.CriteriaText(),
		OnAbort: r.Spec.OnAbort, Continuous: r.Spec.Continuous, Retries: r.Spec.Retries, Joined: r.Joined, Outside: r.Outside,
		Created: r.Created, Updated: r.Updated, Waves: []APIWave{}}
	for _, run := range r.Runs {
		if run.Retries > 0 {
			a.Retried++
		}
	}
	if lease != nil {
		a.Controller = &APIController{Owner: lease.Owner, Expires: lease.Expires, Live: now.Before(lease.Expires)}
	}
	back := rollingBack(r)
	if back {
		a.Rollback = &APIRollback{Written: r.Phase == PhaseRolledBack}
	}
	inFlight := 0
	for w, m := range r.Members {
		aw := APIWave{N: w + 1, Started: w <= r.Wave && w < len(r.WaveStarted)}
		if w < len(r.Spec.Waves) {
			aw.Percent = r.Spec.Waves[w]
		}
		if w < len(r.Counts) {
			aw.Recorded = r.Counts[w]
			a.Bad += r.Counts[w].Bad()
		}
		for _, n := range m {
			st := liveState(r, nodes, n, w)
			aw.Live.add(st)
			if st == StateDownloading || st == StateCanary {
				inFlight++
			}
			if back && w <= r.Wave {
				a.Rollback.Of++
				if reverted(reportOf(nodes, n, r.Spec.Model), r.Previous[n]) {
					aw.Reverted++
					a.Rollback.Reverted++
				} else if len(a.Rollback.Waiting) < 20 {
					a.Rollback.Waiting = append(a.Rollback.Waiting, n)
				}
			}
		}
		a.Waves = append(a.Waves, aw)
	}
	if back {
		a.Rollback.Confirmed = a.Rollback.Written && a.Rollback.Reverted == a.Rollback.Of
	}
	if r.Phase == PhaseHeld {
		a.Hold = &APIHold{InFlight: inFlight, Settled: inFlight == 0}
	}
	return a
}

// apiRolloutDetail is r as GET /api/rollouts/{id} shows it.
func apiRolloutDetail(r *Record, nodes map[string]*fleet.NodeView, lease *Lease, now time.Time) APIRolloutDetail {
	d := APIRolloutDetail{APIRollout: apiRollout(r, nodes, lease, now), BadNodes: []APIBadNode{}, History: r.History,
		BadTotal: len(r.BadNodes)}
	if d.History == nil {
		d.History = []Transition{}
	}
	waveOf := map[string]int{}
	for w, m := range r.Members {
		for _, n := range m {
			waveOf[n] = w + 1
		}
	}
	ids := make([]string, 0, len(r.BadNodes))
	for n := range r.BadNodes {
		ids = append(ids, n)
	}
	sort.Strings(ids)
	for _, n := range ids {
		if len(d.BadNodes) == MaxBadNodes {
			break
		}
		b := APIBadNode{Node: n, Wave: waveOf[n], State: r.BadNodes[n], Reason: r.BadReasons[n], Attempts: r.Attempts(n)}
		if ms := reportOf(nodes, n, r.Spec.Model); ms != nil {
			b.Reports = ms.Version + " " + ms.State
			if ms.Reason != "" {
				b.Reports += " (" + ms.Reason + ")"
			}
		}
		d.BadNodes = append(d.BadNodes, b)
	}
	return d
}

// apiNode is node v as GET /api/nodes shows it.
func apiNode(v *fleet.NodeView) APINode {
	a := APINode{ID: v.Node, Models: []APINodeModel{}}
	if v.Err != nil {
		a.Error = v.Err.Error()
	}
	seen := func(s string) {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil && t.After(a.LastSeen) {
			a.LastSeen = t
		}
	}
	if p := v.Presence; p != nil {
		on := p.Online
		a.Online, a.PresenceTime = &on, p.Time
		seen(p.Time)
	}
	if s := v.Status; s != nil {
		a.StatusTime, a.Agent, a.Labels = s.Time, s.Agent, s.Labels
		seen(s.Time)
		for g := range s.Desired.Groups {
			a.Groups = append(a.Groups, g)
		}
		sort.Strings(a.Groups)
		for name, ms := range s.Models {
			a.Models = append(a.Models, APINodeModel{Model: name, Version: ms.Version, State: ms.State, Reason: ms.Reason,
				Serving: ms.Serving, P99Ms: ms.P99Ms, BytesDone: ms.BytesDone, BytesTotal: ms.BytesTotal, Rollout: ms.Rollout})
		}
		sort.Slice(a.Models, func(i, j int) bool { return a.Models[i].Model < a.Models[j].Model })
	}
	return a
}

// apiNodeDetail is node v as GET /api/nodes/{id} shows it, with the
// rollouts among recs it is a member of.
func apiNodeDetail(v *fleet.NodeView, recs []*Record, nodes map[string]*fleet.NodeView) APINodeDetail {
	d := APINodeDetail{APINode: apiNode(v), Rollouts: []APINodeRollout{}}
	if v.Status != nil {
		d.Desired = v.Status.Desired
	}
	for _, r := range recs {
		for w, m := range r.Members {
			if !slices.Contains(m, v.Node) {
				continue
			}
			d.Rollouts = append(d.Rollouts, APINodeRollout{ID: r.Spec.ID, Version: r.Spec.Version, Phase: r.Phase, Wave: w + 1,
				Live: liveState(r, nodes, v.Node, w), Previous: r.Previous[v.Node], Recorded: r.BadNodes[v.Node], Reason: r.BadReasons[v.Node]})
		}
	}
	return d
}

// nodeMatches reports whether v passes q's search and filter.
func nodeMatches(v *fleet.NodeView, q NodeQuery) bool {
	switch q.State {
	case FilterOnline:
		if v.Presence == nil || !v.Presence.Online {
			return false
		}
	case FilterOffline:
		if v.Presence == nil || v.Presence.Online {
			return false
		}
	case FilterUnknown:
		if v.Presence != nil {
			return false
		}
	case FilterError:
		if v.Err == nil {
			return false
		}
	case FilterFailed, FilterUpdating:
		if v.Status == nil {
			return false
		}
		hit := false
		for _, ms := range v.Status.Models {
			switch Classify(&ms, ms.Version) {
			case StateFailed, StateRolledBack:
				hit = hit || q.State == FilterFailed
			case StateDownloading, StateCanary:
				hit = hit || q.State == FilterUpdating
			}
		}
		if !hit {
			return false
		}
	}
	if q.Q == "" {
		return true
	}
	needle := strings.ToLower(q.Q)
	has := func(s string) bool { return strings.Contains(strings.ToLower(s), needle) }
	if has(v.Node) {
		return true
	}
	if s := v.Status; s != nil {
		for k, val := range s.Labels {
			if has(k + "=" + val) {
				return true
			}
		}
		for g := range s.Desired.Groups {
			if has(g) {
				return true
			}
		}
		for m, ms := range s.Models {
			if has(m + "@" + ms.Version) {
				return true
			}
		}
	}
	return false
}

// apiNodePage answers q over nodes: the matching nodes sorted by id,
// q.Offset and q.Limit applied.
func apiNodePage(nodes map[string]*fleet.NodeView, q NodeQuery) APINodePage {
	p := APINodePage{All: len(nodes), Offset: q.Offset, Limit: q.Limit, Nodes: []APINode{}}
	ids := make([]string, 0, len(nodes))
	for id, v := range nodes {
		if v.Presence != nil && v.Presence.Online {
			p.Online++
		}
		if nodeMatches(v, q) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	p.Total = len(ids)
	for i := q.Offset; i < len(ids) && len(p.Nodes) < q.Limit; i++ {
		p.Nodes = append(p.Nodes, apiNode(nodes[ids[i]]))
	}
	return p
}
