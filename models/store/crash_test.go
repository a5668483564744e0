package store_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/models/store"
	"github.com/edgeai/edge-node/models/testsuite"
)

// Environment of the crash test's child process.
const (
	envCrashChild = "MODELSTORE_CRASH_CHILD" // store root: run as the child
	envCrashIters = "MODELSTORE_CRASH_ITERS" // parent: iterations (default 50)
)

func TestMain(m *testing.M) {
	if root := os.Getenv(envCrashChild); root != "" {
		crashChild(root)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// crashChild imports and activates versions (with an extra data file each,
// small random files) until it is killed, printing "step" after each
// operation so the parent can kill it at a chosen point.
func crashChild(root string) {
	ctx := context.Background()
	s, err := store.Open(ctx, store.DefaultOptions(root), zerolog.Nop(), nil)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	out := bufio.NewWriter(os.Stdout)
	step := func() { out.WriteString("step\n"); out.Flush() }
	src, _ := os.MkdirTemp("", "crash-src")
	defer os.RemoveAll(src)
	for i := 0; i < 200; i++ {
		model := []string{"a", "b"}[i%2]
		ver := strconv.FormatInt(time.Now().UnixNano(), 10) // unique across children
		mf := testsuite.WriteFile(nopTB{}, src, "model.onnx", 16<<10+rand.IntN(48<<10))
		ext := testsuite.WriteFile(nopTB{}, src, "weights.bin", 8<<10)
		if _, err := s.Import(ctx, models.ImportRequest{Model: model, Version: ver, ModelFile: mf, ExtraFiles: []string{ext}}); err != nil {
			fmt.Println("import:", err)
			os.Exit(2)
		}
		step()
		if _, err := s.Activate(ctx, model, ver, &testsuite.Loader{}); err != nil {
			fmt.Println("activate:", err)
			os.Exit(2)
		}
		step()
		switch i % 5 {
		case 3:
			if _, err := s.Rollback(ctx, model, models.RollbackOptions{}); err != nil && !errors.Is(err, models.ErrNotFound) {
				fmt.Println("rollback:", err)
				os.Exit(2)
			}
			step()
		case 4:
			if _, err := s.GC(ctx); err != nil {
				fmt.Println("gc:", err)
				os.Exit(2)
			}
			step()
		}
	}
}

// nopTB lets testsuite.WriteFile run in the child (no *testing.T there).
type nopTB struct{ testing.TB }

func (nopTB) Helper()               {}
func (nopTB) Fatal(args ...any)     { fmt.Println(args...); os.Exit(2) }
func (nopTB) Fatalf(string, ...any) { os.Exit(2) }

// TestCrashConsistency SIGKILLs a child process at random points during
// imports, activations, rollbacks and GC, then checks after every kill that
// the store reopens, boots, every Active version's blobs fully verify, the
// catalog's pointers are coherent, and GC leaves no orphan ingest or blob.
func TestCrashConsistency(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode")
	}
	iters := 50
	if s := os.Getenv(envCrashIters); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("%s=%q: %v", envCrashIters, s, err)
		}
		iters = n
	}
	root := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	var everActive, steps int
	for i := 0; i < iters; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), envCrashChild+"="+root)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Half the time kill after k signalled steps plus a random few
		// hundred microseconds (inside the next operation); otherwise after
		// a random delay from the start.
		sc := bufio.NewScanner(stdout)
		if rng.IntN(2) == 0 {
			k := rng.IntN(6)
			for n := 0; n < k && sc.Scan(); n++ {
				steps++
			}
			time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
		} else {
			time.Sleep(time.Duration(5+rng.IntN(40)) * time.Millisecond)
		}
		cmd.Process.Kill()
		for sc.Scan() {
			if l := sc.Text(); l != "step" {
				t.Fatalf("iteration %d: child said %q", i, l)
			}
			steps++
		}
		cmd.Wait()
		everActive += checkConsistent(t, root, i)
	}
	t.Logf("%d iterations; children completed %d operations in all before being killed; %d model-actives verified", iters, steps, everActive)
}

func checkConsistent(t *testing.T, root string, iter int) int {
	t.Helper()
	ctx := context.Background()
	opts := store.DefaultOptions(root)
	s, err := store.Open(ctx, opts, testLogger(t), nil)
	if err != nil {
		t.Fatalf("iteration %d: reopen: %v", iter, err)
	}
	defer s.Close()
	rep, err := s.Boot(ctx)
	if err != nil {
		t.Fatalf("iteration %d: boot: %v", iter, err)
	}
	// A crash may interrupt a load (Failed(Interrupted)) but must never
	// corrupt a blob.
	for _, f := range rep.Failed {
		if f.Reason != models.ReasonInterrupted {
			t.Fatalf("iteration %d: boot failed %s/%s with %s: %s", iter, f.Model, f.Version, f.Reason, f.Detail)
		}
	}
	all, err := s.Models(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mi := range all {
		actives := 0
		byVer := map[string]models.VersionInfo{}
		for _, v := range mi.Versions {
			byVer[v.Version] = v
			if v.State == models.Active {
				actives++
			}
		}
		if actives > 1 || (mi.Active == "") != (actives == 0) {
			t.Fatalf("iteration %d: model %s: pointer %q but %d Active versions", iter, mi.Name, mi.Active, actives)
		}
		if mi.Previous != "" && byVer[mi.Previous].State != models.Retired {
			t.Fatalf("iteration %d: model %s: previous %s is %s", iter, mi.Name, mi.Previous, byVer[mi.Previous].State)
		}
		if mi.Active == "" {
			continue
		}
		n++
		for _, f := range byVer[mi.Active].Manifest.Files {
			if err := s.Blobs().Verify(ctx, f.SHA256, f.Size, true); err != nil {
				t.Fatalf("iteration %d: active %s/%s: %v", iter, mi.Name, mi.Active, err)
			}
		}
		found := false
		for _, sv := range rep.Serve {
			found = found || (sv.Model == mi.Name && sv.Version == mi.Active)
		}
		if !found {
			t.Fatalf("iteration %d: active %s/%s not in boot's serve list", iter, mi.Name, mi.Active)
		}
	}
	if _, err := s.GC(ctx); err != nil {
		t.Fatalf("iteration %d: gc: %v", iter, err)
	}
	if d := ingestDirs(t, root); len(d) != 0 {
		t.Fatalf("iteration %d: ingests survive GC: %v", iter, d)
	}
	// Every blob left is referenced by a version record.
	referenced := map[string]bool{}
	all, _ = s.Models(ctx)
	for _, mi := range all {
		for _, v := range mi.Versions {
			for _, f := range v.Manifest.Files {
				referenced[f.SHA256] = true
			}
		}
	}
	ents, _ := os.ReadDir(filepath.Join(root, "blobs", "sha256"))
	for _, e := range ents {
		if !referenced[e.Name()] {
			t.Fatalf("iteration %d: orphan blob %s survives GC", iter, e.Name())
		}
	}
	return n
}
