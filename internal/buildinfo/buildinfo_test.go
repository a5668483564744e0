package buildinfo

import (
	"runtime"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestVersionStamped(t *testing.T) {
	defer func(v string) { version = v }(version)
	version = "v9.8.7"
	if got := Version(); got != "v9.8.7" {
		t.Errorf("Version() = %q, want the stamped v9.8.7", got)
	}
}

func TestVersionUnstamped(t *testing.T) {
	defer func(v string) { version = v }(version)
	version = ""
	// A test binary carries no VCS settings, so the fallback is "dev" unless
	// the go command recorded a revision.
	if rev, _ := revision(); rev == "" && Version() != "dev" {
		t.Errorf("Version() = %q with no stamp and no revision, want dev", Version())
	}
}

func TestCollector(t *testing.T) {
	defer func(v string) { version = v }(version)
	version = "v9.8.7"
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || mfs[0].GetName() != "edge_node_build_info" || len(mfs[0].Metric) != 1 {
		t.Fatalf("gathered %v, want one edge_node_build_info series", mfs)
	}
	labels := map[string]string{}
	for _, l := range mfs[0].Metric[0].Label {
		labels[l.GetName()] = l.GetValue()
	}
	if labels["version"] != "v9.8.7" || labels["goversion"] != runtime.Version() {
		t.Errorf("labels %v, want version v9.8.7 and goversion %s", labels, runtime.Version())
	}
	if v := mfs[0].Metric[0].GetGauge().GetValue(); v != 1 {
		t.Errorf("value %v, want 1", v)
	}
}
