// Package testsuite is a conformance suite for models.Store, in the manner
// of containerd's content testsuite: an implementation's tests call
// StoreSuite with a constructor, and every implementation is held to the
// same behaviour through the interface alone.
package testsuite

import (
	"time"

	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgeai/edge-node/models"
)

// NewStore returns a fresh, empty store for one subtest; the constructor
// registers its own cleanup.
type NewStore func(t *testing.T) models.Store

// StoreSuite runs every conformance test against stores from newStore.
func StoreSuite(t *testing.T, newStore NewStore) {
	tests := []struct {
		name string
		fn   func(*testing.T, models.Store)
	}{
		{"ImportMaterialize", testImportMaterialize},
		{"ImportIdempotentAndConflict", testImportIdempotent},
		{"ImportBadInput", testImportBad},
		{"ActivateNeedsLoader", testActivateNeedsLoader},
		{"ActivateRollbackDelete", testActivateRollbackDelete},
		{"CommitterWrapsTheFinalTransaction", testCommitter},
		{"LoaderFailuresKeepActive", testLoaderFailures},
		{"FailActiveRollsBack", testFailActive},
		{"GCKeepsServing", testGC},
		{"OutboxAndGeneration", testOutbox},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

// Loader is a models.Loader for tests: it records calls and fails on demand.
type Loader struct {
	LoadErr, WarmupErr error
	Loaded             []string // dirs passed to Load
}

func (l *Loader) Load(ctx context.Context, v models.VersionInfo, dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "model.onnx")); err != nil {
		return err
	}
	l.Loaded = append(l.Loaded, dir)
	return l.LoadErr
}

func (l *Loader) Warmup(ctx context.Context, v models.VersionInfo) (models.WarmupResult, error) {
	return models.WarmupResult{Provider: "cpu", Cases: 1, Passed: 1}, l.WarmupErr
}

// committer is a Loader that is a models.Committer: it records the
// version's state just before and after the final transaction, and fails
// after it with afterErr.
type committer struct {
	Loader
	s             models.Store
	before, after models.State
	calls         int
	afterErr      error
}

func (c *committer) Commit(commit func() (models.VersionInfo, error)) (models.VersionInfo, error) {
	c.calls++
	v, _ := c.s.Version(context.Background(), "m", "1")
	c.before = v.State
	v, err := commit()
	c.after = v.State
	if err != nil {
		return v, err
	}
	return v, c.afterErr
}

// testCommitter: a Committer loader gets the final transaction of Activate
// (Warming before it, Active after), once, and what it returns after it is
// what Activate returns.
func testCommitter(t *testing.T, s models.Store) {
	importN(t, s, "m", "1")
	importN(t, s, "m", "2")
	c := &committer{s: s}
	if _, err := s.Activate(context.Background(), "m", "1", c); err != nil {
		t.Fatal(err)
	}
	if c.calls != 1 || c.before != models.Warming || c.after != models.Active {
		t.Errorf("Commit called %d times, state %s before the final transaction and %s after; want once, Warming, Active", c.calls, c.before, c.after)
	}
	routeErr := errors.New("routing failed")
	c2 := &committer{s: s, afterErr: routeErr}
	if _, err := s.Activate(context.Background(), "m", "2", c2); !errors.Is(err, routeErr) || c2.calls != 1 {
		t.Errorf("Activate returned %v after %d Commit calls, want the committer's error once", err, c2.calls)
	}
}

// WriteFile writes n random bytes to a new file in dir and returns its path.
func WriteFile(t testing.TB, dir, name string, n int) string {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func importN(t *testing.T, s models.Store, model, version string) models.VersionInfo {
	t.Helper()
	dir := t.TempDir()
	v, err := s.Import(context.Background(), models.ImportRequest{Model: model, Version: version, ModelFile: WriteFile(t, dir, "m.onnx", 4096)})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func activate(t *testing.T, s models.Store, model, version string) {
	t.Helper()
	if _, err := s.Activate(context.Background(), model, version, &Loader{}); err != nil {
		t.Fatal(err)
	}
}

func wantState(t *testing.T, s models.Store, model, version string, st models.State, r models.Reason) {
	t.Helper()
	v, err := s.Version(context.Background(), model, version)
	if err != nil {
		t.Fatal(err)
	}
	if v.State != st || v.Reason != r {
		t.Fatalf("%s/%s is %s(%s), want %s(%s)", model, version, v.State, v.Reason, st, r)
	}
}

func testImportMaterialize(t *testing.T, s models.Store) {
	ctx := context.Background()
	src := t.TempDir()
	mf := WriteFile(t, src, "model.onnx", 10000)
	ext := WriteFile(t, src, "weights.bin", 5000)
	v, err := s.Import(ctx, models.ImportRequest{Model: "m", Version: "1", ModelFile: mf, ExtraFiles: []string{ext}, Config: []byte("max_batch_size: 2\n")})
	if err != nil {
		t.Fatal(err)
	}
	if v.State != models.Ready || len(v.Manifest.Files) != 2 || v.Created.IsZero() {
		t.Fatalf("imported %+v", v)
	}
	dir, err := s.Materialize(ctx, "m", "1")
	if err != nil {
		t.Fatal(err)
	}
	for src, name := range map[string]string{mf: "model.onnx", ext: "weights.bin"} {
		a, _ := os.ReadFile(src)
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !bytes.Equal(a, b) {
			t.Fatalf("materialised %s differs (%v)", name, err)
		}
	}
	if p, err := s.BlobPath(ctx, v.Manifest.Files[0].SHA256); err != nil || p == "" {
		t.Fatalf("BlobPath: %v", err)
	}
	ms, err := s.Models(ctx)
	if err != nil || len(ms) != 1 || ms[0].Name != "m" || len(ms[0].Versions) != 1 {
		t.Fatalf("Models: %+v %v", ms, err)
	}
}

func testImportIdempotent(t *testing.T, s models.Store) {
	ctx := context.Background()
	src := t.TempDir()
	mf := WriteFile(t, src, "a.onnx", 3000)
	req := models.ImportRequest{Model: "m", Version: "1", ModelFile: mf}
	v1, err := s.Import(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := s.Import(ctx, req)
	if err != nil || !v2.Created.Equal(v1.Created) {
		t.Fatalf("re-import: %v (%v vs %v)", err, v2.Created, v1.Created)
	}
	req.ModelFile = WriteFile(t, src, "b.onnx", 3000)
	if _, err := s.Import(ctx, req); !errors.Is(err, models.ErrExists) {
		t.Fatalf("other content, same version: %v", err)
	}
}

func testImportBad(t *testing.T, s models.Store) {
	ctx := context.Background()
	mf := WriteFile(t, t.TempDir(), "a.onnx", 10)
	for name, req := range map[string]models.ImportRequest{
		"bad model":   {Model: "../x", Version: "1", ModelFile: mf},
		"bad version": {Model: "m", Version: "a/b", ModelFile: mf},
		"missing":     {Model: "m", Version: "1", ModelFile: filepath.Join(t.TempDir(), "nope")},
		"folder":      {Model: "m", Version: "1", ModelFile: t.TempDir()},
	} {
		if _, err := s.Import(ctx, req); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := s.Version(ctx, "m", "1"); !errors.Is(err, models.ErrNotFound) {
		t.Errorf("bad imports left a version: %v", err)
	}
}

func testActivateNeedsLoader(t *testing.T, s models.Store) {
	importN(t, s, "m", "1")
	if _, err := s.Activate(context.Background(), "m", "1", nil); !errors.Is(err, models.ErrInvalidTransition) {
		t.Fatalf("Ready → Active without loader: %v", err)
	}
	wantState(t, s, "m", "1", models.Ready, "")
}

func testActivateRollbackDelete(t *testing.T, s models.Store) {
	ctx := context.Background()
	importN(t, s, "m", "1")
	importN(t, s, "m", "2")
	activate(t, s, "m", "1")
	activate(t, s, "m", "2")
	mi, _ := s.Model(ctx, "m")
	if mi.Active != "2" || mi.Previous != "1" {
		t.Fatalf("after two activations: %+v", mi)
	}
	v, _ := s.Version(ctx, "m", "2")
	if v.Provider != "cpu" || v.Warmup == nil || v.Warmup.Passed != 1 {
		t.Fatalf("warm-up not recorded: %+v", v)
	}
	if _, err := s.Rollback(ctx, "m", models.RollbackOptions{}); err != nil {
		t.Fatal(err)
	}
	mi, _ = s.Model(ctx, "m")
	if mi.Active != "1" || mi.Previous != "2" {
		t.Fatalf("after rollback: %+v", mi)
	}
	if err := s.Delete(ctx, "m", "1"); !errors.Is(err, models.ErrInUse) {
		t.Fatalf("delete Active: %v", err)
	}
	// Activate a Retired version by name (it is still loaded: no loader).
	if _, err := s.Activate(ctx, "m", "2", nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "m", "1"); err != nil {
		t.Fatalf("delete Retired: %v", err)
	}
	if _, err := s.Rollback(ctx, "m", models.RollbackOptions{}); !errors.Is(err, models.ErrNotFound) {
		t.Fatalf("rollback with no previous: %v", err)
	}
	if err := s.Delete(ctx, "m", "9"); !errors.Is(err, models.ErrNotFound) {
		t.Fatalf("delete unknown: %v", err)
	}
}

func testLoaderFailures(t *testing.T, s models.Store) {
	ctx := context.Background()
	importN(t, s, "m", "1")
	importN(t, s, "m", "2")
	importN(t, s, "m", "3")
	activate(t, s, "m", "1")
	if _, err := s.Activate(ctx, "m", "2", &Loader{LoadErr: errors.New("bad graph")}); err == nil {
		t.Fatal("load failure: no error")
	}
	wantState(t, s, "m", "2", models.Failed, models.ReasonLoadError)
	if _, err := s.Activate(ctx, "m", "3", &Loader{WarmupErr: errors.New("NaN")}); err == nil {
		t.Fatal("warm-up failure: no error")
	}
	wantState(t, s, "m", "3", models.Failed, models.ReasonWarmupFailed)
	wantState(t, s, "m", "1", models.Active, "")
	if v, err := s.Retry(ctx, "m", "2"); err != nil || v.State != models.Ready {
		t.Fatalf("retry: %+v %v", v.State, err)
	}
}

func testFailActive(t *testing.T, s models.Store) {
	ctx := context.Background()
	importN(t, s, "m", "1")
	importN(t, s, "m", "2")
	activate(t, s, "m", "1")
	activate(t, s, "m", "2")
	if _, err := s.Fail(ctx, "m", "2", models.ReasonHealthRegression, "p99 up 3x"); err != nil {
		t.Fatal(err)
	}
	wantState(t, s, "m", "2", models.Failed, models.ReasonHealthRegression)
	wantState(t, s, "m", "1", models.Active, "")
	if _, err := s.Transition(ctx, "m", "2", models.Active, models.TransitionOptions{}); !errors.Is(err, models.ErrInvalidTransition) {
		t.Fatalf("Failed → Active: %v", err)
	}
}

func testGC(t *testing.T, s models.Store) {
	ctx := context.Background()
	var blobs []string
	for _, v := range []string{"1", "2", "3", "4", "5", "6"} {
		blobs = append(blobs, importN(t, s, "m", v).Manifest.Files[0].SHA256)
	}
	activate(t, s, "m", "1")
	activate(t, s, "m", "2")
	if err := s.Delete(ctx, "m", "6"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	for i, v := range []string{"1", "2"} {
		if _, err := s.Version(ctx, "m", v); err != nil {
			t.Fatalf("GC removed %s: %v", v, err)
		}
		if _, err := s.BlobPath(ctx, blobs[i]); err != nil {
			t.Fatalf("GC removed blob of %s: %v", v, err)
		}
	}
	if _, err := s.BlobPath(ctx, blobs[5]); !errors.Is(err, models.ErrNotFound) {
		t.Fatalf("deleted version's blob survived GC: %v", err)
	}
	mi, _ := s.Model(ctx, "m")
	if mi.Active != "2" || mi.Previous != "1" {
		t.Fatalf("GC moved pointers: %+v", mi)
	}
}

func testOutbox(t *testing.T, s models.Store) {
	ctx := context.Background()
	importN(t, s, "m", "1")
	activate(t, s, "m", "1")
	reps, err := s.Reports(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	var tos []models.State
	for _, r := range reps {
		tos = append(tos, r.To)
	}
	want := []models.State{models.Ready, models.Loading, models.Warming, models.Active}
	if len(tos) != len(want) {
		t.Fatalf("reports %v, want %v", tos, want)
	}
	for i := range want {
		if tos[i] != want[i] {
			t.Fatalf("reports %v, want %v", tos, want)
		}
	}
	if err := s.AckReports(ctx, reps[1].Seq); err != nil {
		t.Fatal(err)
	}
	if reps, _ = s.Reports(ctx, 0); len(reps) != 2 {
		t.Fatalf("after ack: %d", len(reps))
	}
	o := &models.Override{Version: "1", Action: "rollback", Generations: map[string]uint64{"mqtt/node": 7}, At: time.Unix(1, 0).UTC()}
	if err := s.SetOverride(ctx, "m", o); err != nil {
		t.Fatal(err)
	}
	if mi, _ := s.Model(ctx, "m"); mi.Override == nil || mi.Override.Version != "1" || mi.Override.Generations["mqtt/node"] != 7 {
		t.Fatalf("override %+v", mi.Override)
	}
	if err := s.SetOverride(ctx, "m", nil); err != nil {
		t.Fatal(err)
	}
	if mi, _ := s.Model(ctx, "m"); mi.Override != nil {
		t.Fatalf("override %+v after clearing", mi.Override)
	}
}
