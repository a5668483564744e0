package serving

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/models/store"
)

// newTestOwner is an Owner over a real bbolt store in a temp dir, a real
// router and the shared ONNX Runtime environment, with m/1..m/versions
// imported (node/testdata/rollout/rollout_base.onnx, one intra-op thread)
// and m/1 Active.
func newTestOwner(t *testing.T, versions int) (*Owner, *store.Store) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, store.DefaultOptions(t.TempDir()), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	router := inference.NewRouter()
	o := New(Config{Store: st, Router: router, Env: inferencetest.Env(t), EvalInterval: 5 * time.Millisecond}, zerolog.Nop())
	t.Cleanup(func() {
		o.Close()
		router.Close()
		st.Close()
	})
	file := filepath.Join(inferencetest.RepoRoot(t), "node", "testdata", "rollout", "rollout_base.onnx")
	for v := 1; v <= versions; v++ {
		if _, err := st.Import(ctx, models.ImportRequest{Model: "m", Version: fmt.Sprint(v), ModelFile: file, Config: []byte("intra_op_threads: 1\n")}); err != nil {
			t.Fatal(err)
		}
	}
	if oc, err := o.Apply(ctx, Desired{Model: "m", Version: "1"}); err != nil || oc.State != models.Active {
		t.Fatalf("activating m/1: %+v %v", oc, err)
	}
	return o, st
}

// consistent compares, under the owner's lock (so between two version
// changes), the router's default version of m with the store's Active one.
func consistent(ctx context.Context, o *Owner) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	mi, err := o.store.Model(ctx, "m")
	if err != nil {
		return err
	}
	tr, err := o.router.Traffic("m")
	if err != nil {
		return err
	}
	if tr.Default != mi.Active {
		return fmt.Errorf("router default %q, store Active %q", tr.Default, mi.Active)
	}
	if tr.Canary != "" && tr.Canary != mi.Canary && o.running["m"] == nil {
		return fmt.Errorf("router canary %q with no rollout running (store canary %q)", tr.Canary, mi.Canary)
	}
	return nil
}

func baseInput(i int) []inference.Tensor {
	b := make([]byte, 8*4)
	for k := range 8 {
		binary.LittleEndian.PutUint32(b[4*k:], math.Float32bits(float32((i*7+k*3)%11)/11-0.5))
	}
	return []inference.Tensor{{Name: "x", DataType: inference.FP32, Shape: []int64{1, 8}, Data: b}}
}

// TestVersionChangesHammered is issue 11's race: admin activations and
// rollbacks, on-device canaries with gates that pass within milliseconds,
// and desired states from the fleet, all at once (under -race in make
// test), with requests flowing. At every observation the router serves the
// version the store calls Active; at the end the last desired state, which
// is newer than every admin action, governs the model.
func TestVersionChangesHammered(t *testing.T) {
	o, _ := newTestOwner(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lenient, anyErrors := 1e9, 1.0 // candidates pass their gates as soon as they have 5 requests
	canary := models.Strategy{Kind: models.StrategyCanary, CanaryPercent: 50, MinRequests: 5, MinDuration: models.Duration(time.Millisecond),
		Gates: models.Gates{MaxP99Ratio: &lenient, MaxErrorRate: &anyErrors}}
	var gen sync.Mutex
	next := uint64(0)
	gens := func() map[string]uint64 {
		gen.Lock()
		defer gen.Unlock()
		next++
		return map[string]uint64{"mqtt/node": next}
	}
	ignorable := func(err error) bool {
		// Refusals are part of the game: a rollout in the way (409), a
		// version in a state that cannot move now.
		return err == nil || errors.Is(err, models.ErrInUse) || errors.Is(err, models.ErrInvalidTransition) || errors.Is(err, models.ErrNotFound)
	}
	var wg sync.WaitGroup
	run := func(name string, n int, f func(rng *rand.Rand) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(len(name)), 7))
			for range n {
				if err := f(rng); !ignorable(err) {
					t.Errorf("%s: %v", name, err)
					return
				}
			}
		}()
	}
	version := func(rng *rand.Rand) string { return fmt.Sprint(1 + rng.IntN(4)) }
	run("admin activate", 30, func(rng *rand.Rand) error {
		_, err := o.Activate(ctx, "m", version(rng), Admin{AbortRollout: rng.IntN(2) == 0})
		return err
	})
	run("admin rollback", 20, func(rng *rand.Rand) error {
		_, err := o.Rollback(ctx, "m", Admin{AbortRollout: rng.IntN(2) == 0})
		return err
	})
	run("admin rollout", 20, func(rng *rand.Rand) error {
		return o.StartRollout(ctx, "m", version(rng), canary, Admin{})
	})
	run("desired", 30, func(rng *rand.Rand) error {
		d := Desired{Model: "m", Version: version(rng), Generations: gens()}
		if rng.IntN(2) == 0 {
			s := canary
			d.Strategy = &s
		}
		_, err := o.Apply(ctx, d)
		return err
	})
	run("traffic", 400, func(rng *rand.Rand) error {
		m, release, err := o.Acquire("m", "")
		if err != nil {
			return err
		}
		defer release()
		_, err = m.Run(ctx, baseInput(rng.IntN(100)), []string{"y"}, inference.HeapAllocator{})
		return err
	})
	stop := make(chan struct{})
	observed := 0
	var obs sync.WaitGroup
	obs.Add(1)
	go func() {
		defer obs.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := consistent(ctx, o); err != nil {
				t.Errorf("observation %d: %v", observed, err)
				return
			}
			observed++
		}
	}()
	wg.Wait()
	// The fleet has the last word: a desired state newer than every admin
	// action, with no strategy.
	oc, err := o.Apply(ctx, Desired{Model: "m", Version: "3", Generations: gens()})
	if err != nil || oc.State != models.Active {
		t.Fatalf("final desired state: %+v %v", oc, err)
	}
	if _, err := o.WaitRollout(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	close(stop)
	obs.Wait()
	if err := consistent(ctx, o); err != nil {
		t.Fatal(err)
	}
	mi, err := o.Model(ctx, "m")
	if err != nil {
		t.Fatal(err)
	}
	if mi.Active != "3" || mi.Override != nil {
		t.Fatalf("end state: Active %q, override %+v; want 3 and none", mi.Active, mi.Override)
	}
	t.Logf("%d consistent observations", observed)
}

// TestDesiredStateAbortsRollout: a desired state naming the Active version
// ends a running canary of another version at once (the fleet rolled back),
// and the canary's gate verdict can no longer promote it.
func TestDesiredStateAbortsRollout(t *testing.T) {
	o, _ := newTestOwner(t, 2)
	ctx := context.Background()
	s := models.Strategy{Kind: models.StrategyCanary, CanaryPercent: 50, MinRequests: 1e9}
	oc, err := o.Apply(ctx, Desired{Model: "m", Version: "2", Strategy: &s, Generations: map[string]uint64{"mqtt/node": 1}})
	if err != nil || !oc.Wait() {
		t.Fatalf("rollout of m/2: %+v %v", oc, err)
	}
	deadline := time.Now().Add(time.Minute)
	for tr, _ := o.router.Traffic("m"); tr.Canary != "2"; tr, _ = o.router.Traffic("m") {
		if time.Now().After(deadline) {
			t.Fatal("canary not routed after a minute")
		}
		time.Sleep(5 * time.Millisecond)
	}
	oc, err = o.Apply(ctx, Desired{Model: "m", Version: "1", Generations: map[string]uint64{"mqtt/node": 2}})
	if err != nil || oc.State != models.Active {
		t.Fatalf("rollback to m/1: %+v %v", oc, err)
	}
	if tr, _ := o.router.Traffic("m"); tr.Default != "1" || tr.Canary != "" {
		t.Fatalf("router after the rollback: %+v", tr)
	}
	r, err := o.Rollout(ctx, "m")
	if err != nil || r.Phase != models.RolloutAborted {
		t.Fatalf("rollout record %+v %v, want aborted", r, err)
	}
	if v, _ := o.Version(ctx, "m", "2"); v.State != models.Retired {
		t.Fatalf("m/2 is %s, want Retired", v.State)
	}
}

// TestOverrideHoldsUntilNewerGeneration: an admin activation holds against
// desired states of the generations it saw, and ends at a newer one.
func TestOverrideHoldsUntilNewerGeneration(t *testing.T) {
	o, st := newTestOwner(t, 2)
	ctx := context.Background()
	if err := st.SetDesiredGeneration(ctx, "mqtt/node", 5); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Activate(ctx, "m", "2", Admin{}); err != nil {
		t.Fatal(err)
	}
	oc, err := o.Apply(ctx, Desired{Model: "m", Version: "1", Generations: map[string]uint64{"mqtt/node": 5}})
	if err != nil || oc.Reason != models.ReasonOverridden || oc.Override == nil || oc.Override.Version != "2" {
		t.Fatalf("same generation: %+v %v, want Overridden by 2", oc, err)
	}
	if mi, _ := o.Model(ctx, "m"); mi.Active != "2" {
		t.Fatalf("Active %q after an overridden desired state, want 2", mi.Active)
	}
	// A desired state that asks for the operator's choice is simply Active.
	if oc, err := o.Apply(ctx, Desired{Model: "m", Version: "2", Generations: map[string]uint64{"mqtt/node": 5}}); err != nil || oc.State != models.Active {
		t.Fatalf("desired = the override's version: %+v %v, want Active", oc, err)
	}
	oc, err = o.Apply(ctx, Desired{Model: "m", Version: "1", Generations: map[string]uint64{"mqtt/node": 6}})
	if err != nil || oc.State != models.Active {
		t.Fatalf("newer generation: %+v %v", oc, err)
	}
	if mi, _ := o.Model(ctx, "m"); mi.Active != "1" || mi.Override != nil {
		t.Fatalf("after a newer generation: Active %q, override %+v", mi.Active, mi.Override)
	}
}

// TestAdminActionRefusedWhileRollout: while a rollout of another version
// runs, an admin activation answers ErrInUse naming it, unless it asks to
// abort the rollout.
func TestAdminActionRefusedWhileRollout(t *testing.T) {
	o, _ := newTestOwner(t, 3)
	ctx := context.Background()
	s := models.Strategy{Kind: models.StrategyCanary, CanaryPercent: 50, MinRequests: 1e9}
	if err := o.StartRollout(ctx, "m", "2", s, Admin{}); err != nil {
		t.Fatal(err)
	}
	_, err := o.Activate(ctx, "m", "3", Admin{})
	if !errors.Is(err, models.ErrInUse) || !strings.Contains(err.Error(), "version 2") {
		t.Fatalf("activate during a rollout: %v, want ErrInUse naming version 2", err)
	}
	if _, err := o.Activate(ctx, "m", "3", Admin{AbortRollout: true}); err != nil {
		t.Fatal(err)
	}
	if r, _ := o.Rollout(ctx, "m"); r.Phase != models.RolloutAborted {
		t.Fatalf("rollout %s, want aborted", r.Phase)
	}
	if tr, _ := o.router.Traffic("m"); tr.Default != "3" || tr.Canary != "" {
		t.Fatalf("router %+v, want default 3 and no canary", tr)
	}
}

// TestReadersNeverSeeActiveBeforeItIsRouted: the first promise, as a
// reader that does not hold the owner's lock sees it (the admin API, the
// node's status to the cloud, the KServe metadata): once Model says a
// version is Active, the router already routes it. Versions 2..n are
// activated in turn, each loaded (so the store's final transaction and the
// router's switch are separate steps), while a reader compares the two;
// versions only grow, so the router's default may be ahead of what the
// reader saw, never behind. CI failed first on this through
// TestCloudLineageShown: Active 2 in the admin API, 404 from
// /v2/models/ppocr_cls/versions/2.
func TestReadersNeverSeeActiveBeforeItIsRouted(t *testing.T) {
	const n = 16
	o, _ := newTestOwner(t, n)
	ctx := context.Background()
	done := make(chan struct{})
	var behind []string
	var reads int
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			select {
			case <-done:
				return
			default:
			}
			mi, err := o.Model(ctx, "m")
			if err != nil {
				continue
			}
			tr, err := o.router.Traffic("m")
			reads++
			if err != nil || versionNumber(tr.Default) < versionNumber(mi.Active) {
				behind = append(behind, fmt.Sprintf("store Active %s, router default %s (%v)", mi.Active, tr.Default, err))
			}
		}
	}()
	for v := 2; v <= n; v++ {
		if oc, err := o.Apply(ctx, Desired{Model: "m", Version: fmt.Sprint(v)}); err != nil || oc.State != models.Active {
			t.Fatalf("activating m/%d: %+v %v", v, oc, err)
		}
	}
	close(done)
	<-readerDone
	if len(behind) > 0 {
		t.Errorf("%d of %d reads saw an Active version the router did not route yet; first: %s", len(behind), reads, behind[0])
	}
	if reads == 0 {
		t.Error("the reader never read")
	}
}

func versionNumber(v string) int {
	var n int
	if _, err := fmt.Sscan(v, &n); err != nil {
		return -1
	}
	return n
}

// TestVersionStateMetric: edge_model_version_state has one series per
// stored version, labelled with its state (and reason when Failed), and
// follows a version change with no update of its own.
func TestVersionStateMetric(t *testing.T) {
	o, st := newTestOwner(t, 2)
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(o.ModelsCollector()); err != nil {
		t.Fatal(err)
	}
	states := func() map[string]string {
		t.Helper()
		fams, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, f := range fams {
			if f.GetName() != "edge_model_version_state" {
				continue
			}
			for _, m := range f.GetMetric() {
				l := map[string]string{}
				for _, p := range m.GetLabel() {
					l[p.GetName()] = p.GetValue()
				}
				if m.GetGauge().GetValue() != 1 {
					t.Errorf("%v has value %v, want 1", l, m.GetGauge().GetValue())
				}
				out[l["model"]+"/"+l["version"]] = l["state"] + "(" + l["reason"] + ")"
			}
		}
		return out
	}
	if got, want := states(), map[string]string{"m/1": "Active()", "m/2": "Ready()"}; !reflect.DeepEqual(got, want) {
		t.Errorf("before: %v, want %v", got, want)
	}
	if oc, err := o.Apply(context.Background(), Desired{Model: "m", Version: "2"}); err != nil || oc.State != models.Active {
		t.Fatalf("activating m/2: %+v %v", oc, err)
	}
	if got, want := states(), map[string]string{"m/1": "Retired()", "m/2": "Active()"}; !reflect.DeepEqual(got, want) {
		t.Errorf("after activating 2: %v, want %v", got, want)
	}
	// A version ONNX Runtime cannot load: Failed, with its reason.
	garbage := filepath.Join(t.TempDir(), "garbage.onnx")
	if err := os.WriteFile(garbage, []byte("not a model"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Import(context.Background(), models.ImportRequest{Model: "m", Version: "3", ModelFile: garbage}); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Apply(context.Background(), Desired{Model: "m", Version: "3"}); err == nil {
		t.Fatal("activating a file that is not a model succeeded")
	}
	if got := states()["m/3"]; got != "Failed("+string(models.ReasonLoadError)+")" {
		t.Errorf("m/3 is %s, want Failed(%s)", got, models.ReasonLoadError)
	}
}
