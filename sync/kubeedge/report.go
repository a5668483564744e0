package kubeedge

import (
	"sort"
	"time"
)

// ValueType is the KubeEdge property type of a twin: "float" for the FLOAT
// fields (p99_ms, error_rate), "string" for the others, as the DeviceModel
// in deploy/kubeedge declares them.
func ValueType(name string) string {
	if _, f, ok := SplitPropertyName(name); ok && f.Float() {
		return "float"
	}
	return "string"
}

// ReportFilter decides what a report to EdgeCore carries, for both bridges:
// the twins whose values changed since the last report that went out, a
// cleared value (ClearedValue) for twins no longer reported, and every twin
// once per Heartbeat. EdgeCore turns each reported twin into its own
// DeviceStatus update, so a report of unchanged values costs the API server
// a write for nothing. The zero value (plus a Heartbeat) is ready; it is
// owned by one goroutine.
type ReportFilter struct {
	// Heartbeat is how often every twin goes out even when nothing
	// changed; 0 means never.
	Heartbeat time.Duration

	sent     map[string]TwinValue // by name, as last sent
	lastFull time.Time
}

// Report is what one report carries: Values, sorted by name, empty when
// nothing changed. Hand it back to Sent once it went out.
type Report struct {
	Values []TwinValue
	next   map[string]TwinValue
	full   bool
}

// Next compares vals (the twins' values now) with what was last sent.
func (f *ReportFilter) Next(vals []TwinValue, now time.Time) Report {
	full := f.sent == nil || (f.Heartbeat > 0 && now.Sub(f.lastFull) >= f.Heartbeat)
	r := Report{next: make(map[string]TwinValue, len(vals)), full: full}
	for _, v := range vals {
		r.next[v.Name] = v
		if old, ok := f.sent[v.Name]; full || !ok || old != v {
			r.Values = append(r.Values, v)
		}
	}
	for name := range f.sent {
		if _, ok := r.next[name]; !ok {
			r.Values = append(r.Values, TwinValue{Name: name, Reported: ClearedValue(name)})
		}
	}
	sort.Slice(r.Values, func(i, j int) bool { return r.Values[i].Name < r.Values[j].Name })
	return r
}

// Sent records that r went out at now.
func (f *ReportFilter) Sent(r Report, now time.Time) {
	f.sent = r.next
	if r.full {
		f.lastFull = now
	}
}

// Reset forgets what was sent: the next report carries every twin (the
// receiver restarted, or the connection to it was lost).
func (f *ReportFilter) Reset() { f.sent = nil }
