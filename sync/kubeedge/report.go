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
// once per Heartbeat, and once more Settle after the first report (after
// a Reset). EdgeCore turns each reported twin into its own DeviceStatus
// update, so a report of unchanged values costs the API server a write for
// nothing. The zero value (plus a Heartbeat) is ready; it is owned by one
// goroutine.
type ReportFilter struct {
	// Heartbeat is how often every twin goes out even when nothing
	// changed; 0 means never.
	Heartbeat time.Duration
	// Settle is how long after the first full report (at start and after
	// a Reset) every twin goes out once more; 0 means not at all. A real
	// CloudCore was seen to drop some twins of the burst that follows a
	// mapper's registration (its DeviceStatus writes overwrite each
	// other: each twin is its own merge patch of the whole list), and
	// with change-only reports nothing else would send them again before
	// the heartbeat.
	Settle time.Duration

	sent     map[string]TwinValue // by name, as last sent
	lastFull time.Time
	settleAt time.Time // when the settling full report is due; zero: none
}

// Report is what one report carries: Values, sorted by name, empty when
// nothing changed. Hand it back to Sent once it went out.
type Report struct {
	Values []TwinValue
	next   map[string]TwinValue
	full   bool
	first  bool // the first full report (at start or after a Reset)
}

// Next compares vals (the twins' values now) with what was last sent.
func (f *ReportFilter) Next(vals []TwinValue, now time.Time) Report {
	first := f.sent == nil
	full := first || (f.Heartbeat > 0 && now.Sub(f.lastFull) >= f.Heartbeat) ||
		(!f.settleAt.IsZero() && !now.Before(f.settleAt))
	r := Report{next: make(map[string]TwinValue, len(vals)), full: full, first: first}
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
	if !r.full {
		return
	}
	f.lastFull, f.settleAt = now, time.Time{}
	if r.first && f.Settle > 0 {
		f.settleAt = now.Add(f.Settle)
	}
}

// Reset forgets what was sent: the next report carries every twin (the
// receiver restarted, or the connection to it was lost).
func (f *ReportFilter) Reset() { f.sent = nil }
