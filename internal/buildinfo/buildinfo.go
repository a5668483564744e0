// Package buildinfo is the one place the build's version lives. Release
// builds stamp it with
//
//	-ldflags "-X github.com/edgeai/edge-node/internal/buildinfo.version=v1.2.3"
//
// (scripts/dist.sh and the Makefile do); every face that reports a version
// (edge-node --version, GET /v2, the KubeEdge DMI mapper registration, the
// build_info metric, the start-up log line) reads it from here.
package buildinfo

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// version is set by the linker; empty in a plain `go build`.
var version string

// Version is the build's version: the stamped one, else the VCS revision
// the go command recorded (with "-dirty" for a modified tree), else "dev".
func Version() string {
	if version != "" {
		return version
	}
	if rev, dirty := revision(); rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if dirty {
			rev += "-dirty"
		}
		return rev
	}
	return "dev"
}

// revision is the VCS revision and modified flag the go command embedded.
func revision() (string, bool) {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "", false
	}
	var rev string
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	return rev, dirty
}

// Collector is the edge_node_build_info gauge: always 1, with the version,
// the VCS revision and the Go version as labels (join it with other series
// to see which build produced them).
func Collector() prometheus.Collector {
	rev, _ := revision()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "edge_node_build_info",
		Help: "Always 1; the labels say which build of edge-node is running.",
		ConstLabels: prometheus.Labels{
			"version": Version(), "revision": rev, "goversion": runtime.Version(),
		},
	})
	g.Set(1)
	return g
}
