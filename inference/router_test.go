package inference_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
)

// loadVersion loads scalar_add as model "adder" at version v (the Router
// closes it on Remove; the cleanup Close is then a no-op).
func loadVersion(t *testing.T, v string) *inference.Session {
	t.Helper()
	s, err := inferencetest.Env(t).Load(context.Background(), inference.LoadSpec{Model: "adder", Version: v, Path: testModel("scalar_add")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func adderInputs() []inference.Tensor {
	return []inference.Tensor{
		{Name: "a", DataType: inference.FP32, Shape: []int64{}, Data: f32(1)},
		{Name: "b", DataType: inference.FP32, Shape: []int64{3}, Data: f32(1, 2, 3)},
	}
}

func TestRouterRouting(t *testing.T) {
	r := inference.NewRouter()
	v1, v2 := loadVersion(t, "1"), loadVersion(t, "2")
	if err := r.Add(v1, false); err != nil {
		t.Fatal(err)
	}
	if err := r.Add(v2, false); err != nil {
		t.Fatal(err)
	}
	if err := r.Add(v2, true); !errors.Is(err, inference.ErrInvalidArgument) {
		t.Errorf("adding a routed version again: %v", err)
	}
	for _, tc := range []struct{ model, version, want string }{
		{"adder", "", "1"}, // the first version added is the default
		{"adder", "1", "1"},
		{"adder", "2", "2"},
	} {
		m, release, err := r.Acquire(tc.model, tc.version)
		if err != nil {
			t.Fatalf("acquire %s/%q: %v", tc.model, tc.version, err)
		}
		if m.Version() != tc.want {
			t.Errorf("acquire %s/%q got version %s, want %s", tc.model, tc.version, m.Version(), tc.want)
		}
		release()
		release() // extra calls do nothing
	}
	for _, tc := range []struct{ model, version, msg string }{
		{"nope", "", "Request for unknown model: 'nope' is not found"},
		{"nope", "1", "Request for unknown model: 'nope' is not found"},
		{"adder", "3", "Request for unknown model: 'adder' version 3 is not found"},
	} {
		if _, _, err := r.Acquire(tc.model, tc.version); !errors.Is(err, inference.ErrNotFound) || err.Error() != tc.msg {
			t.Errorf("acquire %s/%q: %v, want ErrNotFound %q (Triton's wording)", tc.model, tc.version, err, tc.msg)
		}
	}
	if err := r.SetDefault("adder", "2"); err != nil {
		t.Fatal(err)
	}
	if err := r.SetDefault("adder", "9"); !errors.Is(err, inference.ErrNotFound) {
		t.Errorf("set default to unknown version: %v", err)
	}
	got := fmt.Sprint(r.Index())
	want := "[{adder 1 false serving cpu} {adder 2 true serving cpu}]"
	if got != want {
		t.Errorf("index %s, want %s", got, want)
	}
	if err := r.Remove("adder", "2"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Acquire("adder", ""); !errors.Is(err, inference.ErrNotFound) || err.Error() != "Request for unknown model: 'adder' has no available versions" {
		t.Errorf("default removed: %v, want ErrNotFound in Triton's wording", err)
	}
	if err := r.Remove("adder", "2"); !errors.Is(err, inference.ErrNotFound) {
		t.Errorf("second remove: %v", err)
	}
	if _, err := v2.Run(context.Background(), adderInputs(), nil, inference.HeapAllocator{}); !errors.Is(err, inference.ErrUnavailable) {
		t.Errorf("removed version was not closed: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(r.Index()); n != 0 {
		t.Errorf("%d versions left after Close", n)
	}
}

// TestRouterRemoveWaitsForRelease: Remove makes the version unroutable at
// once, shows it as draining, and closes it only after the last release.
func TestRouterRemoveWaitsForRelease(t *testing.T) {
	r := inference.NewRouter()
	v1 := loadVersion(t, "1")
	if err := r.Add(v1, true); err != nil {
		t.Fatal(err)
	}
	m, release, err := r.Acquire("adder", "1")
	if err != nil {
		t.Fatal(err)
	}
	removed := make(chan error, 1)
	go func() { removed <- r.Remove("adder", "1") }()
	for { // until Remove has made it unroutable
		_, rel, err := r.Acquire("adder", "1")
		if errors.Is(err, inference.ErrNotFound) {
			break
		}
		rel()
	}
	if got := fmt.Sprint(r.Index()); got != "[{adder 1 false draining cpu}]" {
		t.Errorf("index while draining: %s", got)
	}
	// Still usable by the request that holds it.
	if _, err := m.Run(context.Background(), adderInputs(), nil, inference.HeapAllocator{}); err != nil {
		t.Fatalf("run on a draining version: %v", err)
	}
	release()
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
	if _, err := m.Run(context.Background(), adderInputs(), nil, inference.HeapAllocator{}); !errors.Is(err, inference.ErrUnavailable) {
		t.Errorf("run after remove: %v", err)
	}
	if n := len(r.Index()); n != 0 {
		t.Errorf("index after remove: %v", r.Index())
	}
}

// TestRouterHotSwap swaps the default version under concurrent traffic:
// no request fails or sees a closed version, and after the swap every
// request gets the new version.
func TestRouterHotSwap(t *testing.T) {
	r := inference.NewRouter()
	if err := r.Add(loadVersion(t, "1"), true); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var served [3]atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				m, release, err := r.Acquire("adder", "")
				if err != nil {
					errs <- err
					return
				}
				_, err = m.Run(context.Background(), adderInputs(), nil, inference.HeapAllocator{})
				// Count before release: Remove returns only after
				// every release, so the count is final by then.
				if m.Version() == "1" {
					served[1].Add(1)
				} else {
					served[2].Add(1)
				}
				release()
				if err != nil {
					errs <- fmt.Errorf("version %s: %w", m.Version(), err)
					return
				}
			}
		}()
	}
	// Let some traffic reach version 1 first.
	for served[1].Load() < 20 && len(errs) == 0 {
		runtime.Gosched()
	}
	if err := r.Add(loadVersion(t, "2"), true); err != nil {
		t.Fatal(err)
	}
	if err := r.Remove("adder", "1"); err != nil {
		t.Fatal(err)
	}
	before := served[1].Load()
	for served[2].Load() < 20 && len(errs) == 0 {
		runtime.Gosched()
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if after := served[1].Load(); after != before {
		t.Errorf("%d requests reached version 1 after it was removed", after-before)
	}
	t.Logf("served: v1 %d, v2 %d", served[1].Load(), served[2].Load())
}
