package kubeedge_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/edgeai/edge-node/sync/kubeedge"
)

func TestReportFilter(t *testing.T) {
	v := func(name, reported string) kubeedge.TwinValue {
		return kubeedge.TwinValue{Name: name, Reported: reported}
	}
	t0 := time.Unix(1_700_000_000, 0)
	f := kubeedge.ReportFilter{Heartbeat: 10 * time.Minute, Settle: 30 * time.Second}
	steps := []struct {
		name string
		at   time.Duration
		vals []kubeedge.TwinValue
		sent bool // the report went out
		want []kubeedge.TwinValue
	}{
		{"first report carries every twin", 0, []kubeedge.TwinValue{v("m.version", "1"), v("m.p99_ms", "3")}, true,
			[]kubeedge.TwinValue{v("m.p99_ms", "3"), v("m.version", "1")}},
		{"nothing changed", time.Second, []kubeedge.TwinValue{v("m.version", "1"), v("m.p99_ms", "3")}, true, nil},
		{"every twin once more when the first report settled", 30 * time.Second, []kubeedge.TwinValue{v("m.version", "1"), v("m.p99_ms", "3")}, true,
			[]kubeedge.TwinValue{v("m.p99_ms", "3"), v("m.version", "1")}},
		{"then only once per heartbeat", 61 * time.Second, []kubeedge.TwinValue{v("m.version", "1"), v("m.p99_ms", "3")}, true, nil},
		{"one value changed", 62 * time.Second, []kubeedge.TwinValue{v("m.version", "2"), v("m.p99_ms", "3")}, false,
			[]kubeedge.TwinValue{v("m.version", "2")}},
		{"a report that did not go out is sent again", 63 * time.Second, []kubeedge.TwinValue{v("m.version", "2"), v("m.p99_ms", "3")}, true,
			[]kubeedge.TwinValue{v("m.version", "2")}},
		{"twins no longer reported are cleared, FLOAT ones to 0", 64 * time.Second, []kubeedge.TwinValue{v("n.version", "1")}, true,
			[]kubeedge.TwinValue{v("m.p99_ms", "0"), v("m.version", kubeedge.None), v("n.version", "1")}},
		{"a cleared twin is not cleared again", 65 * time.Second, []kubeedge.TwinValue{v("n.version", "1")}, true, nil},
		{"the heartbeat carries every twin", 10*time.Minute + 30*time.Second, []kubeedge.TwinValue{v("n.version", "1")}, true,
			[]kubeedge.TwinValue{v("n.version", "1")}},
		{"quiet again after the heartbeat", 11 * time.Minute, []kubeedge.TwinValue{v("n.version", "1")}, true, nil},
	}
	for _, s := range steps {
		r := f.Next(s.vals, t0.Add(s.at))
		if !reflect.DeepEqual(r.Values, s.want) {
			t.Fatalf("%s: report %v, want %v", s.name, r.Values, s.want)
		}
		if s.sent {
			f.Sent(r, t0.Add(s.at))
		}
	}
	f.Reset()
	at := t0.Add(12 * time.Minute)
	for i, want := range []int{1, 0, 1, 0} { // every twin, quiet, settled, quiet
		r := f.Next([]kubeedge.TwinValue{v("n.version", "1")}, at)
		if len(r.Values) != want {
			t.Fatalf("report %d after Reset (%v): %v, want %d twins", i, at.Sub(t0), r.Values, want)
		}
		f.Sent(r, at)
		at = at.Add(20 * time.Second)
	}
}
