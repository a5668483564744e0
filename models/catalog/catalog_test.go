package catalog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/edgeai/edge-node/models"
)

func newTestCatalog(t *testing.T, path string, opts Options) *Catalog {
	t.Helper()
	c, err := Open(context.Background(), path, opts, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

// TestMain lets the test binary act as the second process of
// TestSecondProcessLocked.
func TestMain(m *testing.M) {
	if path := os.Getenv("CATALOG_TEST_OPEN"); path != "" {
		_, err := Open(context.Background(), path, Options{Timeout: 200 * time.Millisecond}, zerolog.Nop(), nil)
		if errors.Is(err, models.ErrLocked) {
			fmt.Println("LOCKED:", err)
			os.Exit(0)
		}
		fmt.Println("UNEXPECTED:", err)
		os.Exit(3)
	}
	os.Exit(m.Run())
}

func TestSecondProcessLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	newTestCatalog(t, path, DefaultOptions())
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "CATALOG_TEST_OPEN="+path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("second process: %v\n%s", err, out)
	}
	t.Logf("second process said: %s", out)
}

func TestCloseIdempotent(t *testing.T) {
	c, err := Open(context.Background(), filepath.Join(t.TempDir(), "c.db"), DefaultOptions(), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := c.View(context.Background(), func(*Tx) error { return nil }); !errors.Is(err, models.ErrClosed) {
		t.Fatalf("View after Close: %v", err)
	}
}

func TestSchemaTooNew(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	c, err := Open(context.Background(), path, DefaultOptions(), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := c.Schema(); err != nil || v != SchemaVersion {
		t.Fatalf("schema %d %v", v, err)
	}
	c.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, u64(SchemaVersion+1)) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(context.Background(), path, DefaultOptions(), zerolog.Nop(), nil); !errors.Is(err, models.ErrInvalidArgument) {
		t.Fatalf("newer schema: %v", err)
	}
}

func mkVersion(model, version string, st models.State) models.VersionInfo {
	return models.VersionInfo{Model: model, Version: version, State: st, Source: "import"}
}

func TestPointersAndOutbox(t *testing.T) {
	ctx := context.Background()
	c := newTestCatalog(t, filepath.Join(t.TempDir(), "c.db"), Options{MaxOutbox: 8})
	move := func(v string, to models.State) {
		t.Helper()
		if err := c.Update(ctx, func(tx *Tx) error { _, err := tx.Transition("m", v, to, models.TransitionOptions{}); return err }); err != nil {
			t.Fatal(err)
		}
	}
	model := func() models.ModelInfo {
		var mi models.ModelInfo
		if err := c.View(ctx, func(tx *Tx) (err error) { mi, err = tx.Model("m"); return err }); err != nil {
			t.Fatal(err)
		}
		return mi
	}
	for _, v := range []string{"1", "2"} {
		if err := c.Update(ctx, func(tx *Tx) error { _, err := tx.CreateVersion(mkVersion("m", v, models.Ready)); return err }); err != nil {
			t.Fatal(err)
		}
	}
	for _, st := range []models.State{models.Loading, models.Warming, models.Active} {
		move("1", st)
	}
	move("2", models.Loading)
	move("2", models.Warming)
	move("2", models.Canary)
	if mi := model(); mi.Active != "1" || mi.Canary != "2" {
		t.Fatalf("after canary: %+v", mi)
	}
	move("2", models.Active)
	mi := model()
	if mi.Active != "2" || mi.Previous != "1" || mi.Canary != "" || mi.Versions[0].State != models.Retired {
		t.Fatalf("after promote: %+v", mi)
	}
	// Rollback: the previous comes back, the demoted one becomes Previous.
	move("1", models.Active)
	if mi := model(); mi.Active != "1" || mi.Previous != "2" {
		t.Fatalf("after rollback: %+v", mi)
	}
	// A failed version is nobody's rollback target.
	if err := c.Update(ctx, func(tx *Tx) error {
		_, err := tx.Transition("m", "2", models.Failed, models.TransitionOptions{Reason: models.ReasonHealthRegression})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if mi := model(); mi.Previous != "" {
		t.Fatalf("failed version still Previous: %+v", mi)
	}
	// Illegal move: rejected, nothing written.
	err := c.Update(ctx, func(tx *Tx) error {
		_, err := tx.Transition("m", "1", models.Ready, models.TransitionOptions{})
		return err
	})
	var te *models.TransitionError
	if !errors.As(err, &te) || te.From != models.Active || te.To != models.Ready || te.Model != "m" {
		t.Fatalf("illegal move: %v", err)
	}
	// Active cannot be deleted.
	if err := c.Update(ctx, func(tx *Tx) error { return tx.DeleteVersion("m", "1") }); !errors.Is(err, models.ErrInUse) {
		t.Fatalf("delete active: %v", err)
	}
	// Outbox: 11 changes so far, capped at 8, oldest dropped; ack empties.
	var reps []models.Report
	c.View(ctx, func(tx *Tx) (err error) { reps, err = tx.Reports(0); return err })
	if len(reps) != 8 || reps[len(reps)-1].To != models.Failed {
		t.Fatalf("outbox %d entries, last %+v", len(reps), reps[len(reps)-1])
	}
	if err := c.Update(ctx, func(tx *Tx) error { return tx.AckReports(reps[len(reps)-1].Seq) }); err != nil {
		t.Fatal(err)
	}
	c.View(ctx, func(tx *Tx) (err error) { reps, err = tx.Reports(0); return err })
	if len(reps) != 0 {
		t.Fatalf("after ack: %d", len(reps))
	}
}

func TestRanges(t *testing.T) {
	var rs []models.Range
	rs = AddRange(rs, 10, 20)
	rs = AddRange(rs, 0, 5)
	rs = AddRange(rs, 15, 30)
	rs = AddRange(rs, 5, 6)
	if fmt.Sprint(rs) != "[{0 6} {10 30}]" {
		t.Fatalf("merged %v", rs)
	}
	if !Covered(rs, 12, 30) || Covered(rs, 5, 11) {
		t.Fatal("Covered wrong")
	}
	if g := Gaps(rs, 40); fmt.Sprint(g) != "[{6 10} {30 40}]" {
		t.Fatalf("gaps %v", g)
	}
}
