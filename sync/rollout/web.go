package rollout

import (
	"fmt"
	"html/template"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/sync/fleet"
)

// PageData is what the operator page shows.
type PageData struct {
	Now      time.Time
	Rollouts []*Record
	Nodes    map[string]*fleet.NodeView
	// MaxNodes bounds the node table (default 200; the totals count all).
	MaxNodes int
}

type pageNode struct {
	ID, Online, Labels, Models string
}

type pageWave struct {
	N       int
	Percent int
	C       Counts
	// Widths of the bar's segments, in percent of the wave.
	WActive, WCanary, WDown, WBad float64
}

type pageRollout struct {
	R     *Record
	Waves []pageWave
	// Retried counts the nodes retried at least once.
	Retried int
}

var page = template.Must(template.New("page").Funcs(template.FuncMap{"inc": func(i int) int { return i + 1 }}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
<title>edge fleet</title>
<style>
body{font-family:sans-serif;margin:16px;background:#f6f7f9;color:#222}
h1{font-size:20px;margin:0 0 8px} h2{font-size:16px;margin:16px 0 6px}
.card{background:#fff;border:1px solid #ccd;border-radius:6px;padding:10px 14px;margin-bottom:12px}
.phase{font-weight:bold;padding:2px 8px;border-radius:4px;color:#fff;background:#357}
.phase.completed{background:#2a7d3b}.phase.rolled_back,.phase.rolling_back{background:#b03030}.phase.held,.phase.paused{background:#b07d10}
table{border-collapse:collapse;font-size:13px} td,th{padding:3px 8px;text-align:left;border-bottom:1px solid #e3e3e8}
.bar{display:flex;width:320px;height:16px;background:#dde;border-radius:3px;overflow:hidden}
.bar div{height:100%} .a{background:#2a7d3b}.c{background:#3a7bd5}.d{background:#9ab}.b{background:#c0392b}
.sum span{margin-right:18px}
</style></head><body>
<h1>Edge fleet</h1>
<div class="sum"><span>nodes: <b id="nodes-total">{{.Total}}</b></span><span>online: <b id="nodes-online">{{.Online}}</b></span><span>updated {{.Now.UTC.Format "15:04:05"}} UTC</span></div>
<h2>Rollouts</h2>
{{range .Rollouts}}<div class="card" id="rollout-{{.R.Spec.ID}}">
<b>{{.R.Spec.ID}}</b> &nbsp; {{.R.Spec.Model}} → {{.R.Spec.Version}} &nbsp; <span class="phase {{.R.Phase}}">{{.R.Phase}}</span>
&nbsp; wave {{.R.Wave | inc}} of {{len .R.Members}} &nbsp; {{.R.Nodes}} nodes{{if .R.Reason}} &nbsp; <i>{{.R.Reason}}</i>{{end}}
<div class="criteria">criteria: {{.R.Spec.CriteriaText}}</div>
{{if or .R.Spec.Continuous .R.Joined}}<div class="joined">joined after start: <b>{{.R.Joined}}</b> nodes{{if eq .R.Phase "watching"}} (every wave finished; watching for nodes that join){{end}}</div>{{end}}
{{if .R.Outside}}<div class="outside">not in this rollout: <b>{{.R.Outside}}</b> nodes match the target but {{if .R.Spec.Continuous}}wait for another rollout of the model{{else}}joined after start{{end}}</div>{{end}}
{{if .Retried}}<div class="retried">retried: <b>{{.Retried}}</b> nodes (up to {{.R.Spec.Retries}} retries each)</div>{{end}}
<table><tr><th>wave</th><th>cum. %</th><th>progress</th><th>nodes</th><th>pending</th><th>downloading</th><th>canary</th><th>active</th><th>failed</th><th>rolled back</th><th>timed out</th><th>p99 ms</th></tr>
{{range .Waves}}<tr class="wave"><td>{{.N}}</td><td>{{.Percent}}%</td>
<td><div class="bar"><div class="a" style="width:{{.WActive}}%"></div><div class="c" style="width:{{.WCanary}}%"></div><div class="d" style="width:{{.WDown}}%"></div><div class="b" style="width:{{.WBad}}%"></div></div></td>
<td>{{.C.Total}}</td><td>{{.C.Pending}}</td><td>{{.C.Downloading}}</td><td>{{.C.Canary}}</td><td>{{.C.Active}}</td><td>{{.C.Failed}}</td><td>{{.C.RolledBack}}</td><td>{{.C.TimedOut}}</td><td>{{if .C.P99Ms}}{{printf "%.1f" .C.P99Ms}}{{end}}</td></tr>
{{end}}</table></div>
{{else}}<p>No rollouts.</p>{{end}}
<h2>Nodes{{if .Truncated}} (first {{len .Nodes}} of {{.Total}}){{end}}</h2>
<table><tr><th>node</th><th>online</th><th>labels</th><th>models</th></tr>
{{range .Nodes}}<tr><td>{{.ID}}</td><td>{{.Online}}</td><td>{{.Labels}}</td><td>{{.Models}}</td></tr>
{{end}}</table>
</body></html>
`))

// RenderPage writes the operator page.
func RenderPage(w io.Writer, d PageData) error {
	if d.MaxNodes <= 0 {
		d.MaxNodes = 200
	}
	var v struct {
		Now           time.Time
		Total, Online int
		Truncated     bool
		Rollouts      []pageRollout
		Nodes         []pageNode
	}
	v.Now = d.Now
	ids := make([]string, 0, len(d.Nodes))
	for id, n := range d.Nodes {
		ids = append(ids, id)
		if n.Presence != nil && n.Presence.Online {
			v.Online++
		}
	}
	sort.Strings(ids)
	v.Total = len(ids)
	for _, id := range ids {
		if len(v.Nodes) == d.MaxNodes {
			v.Truncated = true
			break
		}
		n := d.Nodes[id]
		pn := pageNode{ID: id, Online: "?"}
		if n.Presence != nil {
			pn.Online = fmt.Sprint(n.Presence.Online)
		}
		if s := n.Status; s != nil {
			var ls, ms []string
			for k, val := range s.Labels {
				ls = append(ls, k+"="+val)
			}
			for m, st := range s.Models {
				ms = append(ms, fmt.Sprintf("%s@%s:%s", m, st.Version, st.State))
			}
			sort.Strings(ls)
			sort.Strings(ms)
			pn.Labels, pn.Models = strings.Join(ls, ", "), strings.Join(ms, " ")
		}
		v.Nodes = append(v.Nodes, pn)
	}
	for _, r := range d.Rollouts {
		pr := pageRollout{R: r}
		for _, run := range r.Runs {
			if run.Retries > 0 {
				pr.Retried++
			}
		}
		for w, c := range r.Counts {
			pw := pageWave{N: w + 1, C: c}
			if w < len(r.Spec.Waves) {
				pw.Percent = r.Spec.Waves[w]
			}
			if c.Total > 0 {
				f := 100 / float64(c.Total)
				pw.WActive, pw.WCanary, pw.WDown, pw.WBad = f*float64(c.Active), f*float64(c.Canary), f*float64(c.Downloading), f*float64(c.Bad())
			}
			pr.Waves = append(pr.Waves, pw)
		}
		v.Rollouts = append(v.Rollouts, pr)
	}
	return page.Execute(w, v)
}

// Handler serves the page (GET / only) from the store and a source of
// node views. It is read-only.
func Handler(st *Store, nodes func() map[string]*fleet.NodeView, log zerolog.Logger) http.Handler {
	log = log.With().Str("component", "rollout-web").Logger()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		rs, err := st.List()
		if err != nil {
			log.Warn().Err(err).Msg("reading rollouts")
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := RenderPage(w, PageData{Now: time.Now(), Rollouts: rs, Nodes: nodes()}); err != nil {
			log.Warn().Err(err).Msg("render")
		}
	})
	return mux
}
