package serving

import (
	"bytes"
	"fmt"
	"os"
	"strconv"

	"github.com/edgeai/edge-node/cgo/heaptrim"
	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/models"
)

// Memory budget for loaded sessions.
//
// Each loaded version has an estimated cost: the resident memory its Load
// added (loads are serialised, so the growth is attributable; concurrent
// requests add noise), and at least the size of its model files. With a
// budget configured (rollout.memory_budget_bytes), the engine keeps
// Previous loaded for an instant rollback only while Active + candidates +
// Previous fit; otherwise Previous is unloaded and a rollback reloads it
// from the store (Node.rollback does that already). Active and a rollout's
// candidate are never unloaded for the budget: a candidate that does not
// fit is still loaded beside Active — the budget is a policy for optional
// residents, not an admission limit.

// ResidentBytes is the process's resident set size from /proc/self/statm
// (0 where it cannot be read).
func ResidentBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseInt(string(f[1]), 10, 64)
	if err != nil {
		return 0
	}
	return pages * int64(os.Getpagesize())
}

func costKey(model, version string) string { return model + "/" + version }

func (e *engine) recordCost(v models.VersionInfo, grew int64) {
	var files int64
	for _, f := range v.Manifest.Files {
		files += f.Size
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.costs == nil {
		e.costs = make(map[string]int64)
	}
	e.costs[costKey(v.Model, v.Version)] = max(grew, files)
}

// loadedBytesLocked sums the estimated cost of every routed or draining
// version plus extra (a model/version key about to be routed), and forgets
// the costs of versions no longer loaded. e.mu must be held.
func (e *engine) loadedBytesLocked(extra string) int64 {
	loaded := map[string]bool{extra: true}
	for _, ix := range e.router.Index() {
		loaded[costKey(ix.Model, ix.Version)] = true
	}
	var total int64
	for k := range loaded {
		total += e.costs[k]
	}
	for k := range e.costs {
		if !loaded[k] {
			delete(e.costs, k)
		}
	}
	return total
}

// fitBudgetLocked unloads model's Previous (previous, if routed and not
// keep) when the loaded sessions exceed the budget. e.mu must be held.
func (e *engine) fitBudgetLocked(model, keep, previous string) {
	if e.budget <= 0 || previous == "" || previous == keep {
		return
	}
	total := e.loadedBytesLocked(costKey(model, keep))
	if total <= e.budget {
		return
	}
	e.unload(model, previous, fmt.Sprintf("memory budget: %d bytes estimated loaded, budget %d", total, e.budget))
}

// remove unroutes a version, closes its session once its in-flight
// requests finished, and hands the C heap memory ONNX Runtime freed back to
// the system (see package heaptrim: without it resident memory grows with
// every swap).
func (e *engine) remove(model, version string) error {
	err := e.router.Remove(model, version)
	if err == nil {
		heaptrim.Trim()
	}
	return err
}

// unload removes a version from the router, waiting for its in-flight
// requests (as promote does for older versions).
func (e *engine) unload(model, version, why string) {
	if err := e.remove(model, version); err != nil {
		e.log.Warn().Err(err).Str("model", model).Str("version", version).Msg("unloading")
		return
	}
	e.log.Info().Str("model", model).Str("version", version).Str("why", why).Msg("unloaded")
}

// addCandidate routes a rollout candidate beside the default (no traffic
// until SetCanary or SetShadow) and applies the budget to the model's
// Previous.
func (e *engine) addCandidate(s servable) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.router.Add(s, false); err != nil {
		s.Close()
		return err
	}
	if tr, err := e.router.Traffic(s.Name()); err == nil {
		for _, ix := range e.router.Index() {
			if ix.Model == s.Name() && ix.State == inference.StateServing && ix.Version != tr.Default && ix.Version != s.Version() {
				e.fitBudgetLocked(s.Name(), s.Version(), ix.Version)
			}
		}
	}
	return nil
}
