package node

import (
	"context"
	"os"
	"runtime/debug"
	"strconv"
	"testing"
	"time"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
	"github.com/edgeai/edge-node/node/serving"
)

// Environment knobs of TestSwapRSS.
const (
	// EnvSwaps sets the number of swaps (default 40, ~20 s on a 2-core
	// box; the figure in docs/performance.md is for 200).
	EnvSwaps = "EDGE_ROLLOUT_SWAPS"
	// EnvSwapConfig is the model config.yaml used for every version, to
	// compare ONNX Runtime's memory levers, e.g.
	// "mem_arena: false\nmem_pattern: false". Default: the node's default
	// (ONNX Runtime's defaults).
	EnvSwapConfig = "EDGE_ROLLOUT_SWAP_CONFIG"
)

// TestSwapRSS swaps ppocr_det versions through the node's activation path
// (load beside Active → route → previous kept → the one before destroyed
// after its in-flight requests), one 640×640 inference per swap, and
// measures resident memory (/proc/self/statm) after the first swap and
// after the last. Resident memory must not grow with the number of swaps:
// the bound is a flat 48 MiB, whatever the count (RSS moves by ±30 MiB
// between samples with allocator caches and the bbolt mmap). Before the
// node trimmed the C heap after unloading a session (package heaptrim) the
// growth was ~3.7 MiB per swap: 109 MiB after 30 swaps.
func TestSwapRSS(t *testing.T) {
	swaps := 40
	if s := os.Getenv(EnvSwaps); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 2 {
			t.Fatalf("%s=%q: want an integer ≥ 2", EnvSwaps, s)
		}
		swaps = v
	}
	config := []byte{} // ONNX Runtime's defaults (not the other tests' oneThread)
	if c := os.Getenv(EnvSwapConfig); c != "" {
		config = []byte(c)
	}
	n := newRolloutNode(t, nil)
	model := inferencetest.ModelPath(t, "ppocr_det")
	in := detInput(640)
	ctx := context.Background()
	swap := func(k int) {
		v := strconv.Itoa(k)
		importAs(t, n, "det", v, model, config)
		if err := activate(ctx, n, "det", v); err != nil {
			t.Fatal(err)
		}
		m, release, err := n.router.Acquire("det", "")
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		if m.Version() != v {
			t.Fatalf("swap %d: serving %s", k, m.Version())
		}
		if _, err := m.Run(ctx, in, nil, inference.HeapAllocator{}); err != nil {
			t.Fatal(err)
		}
	}
	rss := func() int64 {
		debug.FreeOSMemory() // Go's own heap out of the figure
		return serving.ResidentBytes()
	}
	start := time.Now()
	swap(1)
	swap(2) // steady state: Active and Previous loaded
	after1 := rss()
	for k := 3; k <= swaps+1; k++ {
		swap(k)
		if k%10 == 0 {
			t.Logf("after %d swaps: RSS %.1f MiB", k-1, float64(rss())/(1<<20))
		}
	}
	afterN := rss()
	growth := afterN - after1
	loaded := 0
	for _, ix := range n.router.Index() {
		if ix.Model == "det" {
			loaded++
		}
	}
	t.Logf("ppocr_det, %d swaps in %v (config %q): RSS after swap 1 %.1f MiB, after swap %d %.1f MiB, growth %.1f MiB (%.0f KiB/swap); %d versions loaded",
		swaps, time.Since(start).Round(time.Second), config, float64(after1)/(1<<20), swaps, float64(afterN)/(1<<20),
		float64(growth)/(1<<20), float64(growth)/1024/float64(swaps-1), loaded)
	if loaded != 2 {
		t.Errorf("%d versions of det loaded, want 2 (Active and Previous)", loaded)
	}
	if bound := int64(48 << 20); growth > bound {
		t.Errorf("RSS grew %d MiB over %d swaps, more than the bound %d MiB", growth>>20, swaps, bound>>20)
	}
}
