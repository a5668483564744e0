package store_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/models/blobstore"
	"github.com/edgeai/edge-node/models/store"
	"github.com/edgeai/edge-node/models/testsuite"
)

func realModel(t testing.TB, name string) string {
	p := filepath.Join("..", "..", ".cache", "models", name, "1", "model.onnx")
	if _, err := os.Stat(p); err != nil {
		t.Skipf("model file %s not fetched (run scripts/setup.sh): %v", p, err)
	}
	return p
}

func ingestDirs(t *testing.T, root string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(root, "ingest"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// A corrupted blob is detected at boot; the version goes Failed and the
// previous one is Active again.
func TestBootDetectsCorruptBlob(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy store.VerifyPolicy
		damage func(path string) error
	}{
		{"truncated/size-check", store.VerifySize, func(p string) error { return os.Truncate(p, 100) }},
		{"bitflip/full-rehash", store.VerifyFull, func(p string) error {
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt([]byte{0xff, 0x00, 0xff}, 1000)
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			opts := store.DefaultOptions(t.TempDir())
			opts.Verify = tc.policy
			s, err := store.Open(ctx, opts, testLogger(t), nil)
			if err != nil {
				t.Fatal(err)
			}
			src := t.TempDir()
			for _, v := range []string{"1", "2"} {
				if _, err := s.Import(ctx, models.ImportRequest{Model: "vad", Version: v, ModelFile: testsuite.WriteFile(t, src, v, 8192)}); err != nil {
					t.Fatal(err)
				}
				if _, err := s.Activate(ctx, "vad", v, &testsuite.Loader{}); err != nil {
					t.Fatal(err)
				}
			}
			v2, _ := s.Version(ctx, "vad", "2")
			s.Close()
			blob := filepath.Join(opts.Root, "blobs", "sha256", v2.Manifest.Files[0].SHA256)
			os.Chmod(blob, 0o644)
			if err := tc.damage(blob); err != nil {
				t.Fatal(err)
			}
			s = newTestStore(t, opts)
			rep, err := s.Boot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			v2, _ = s.Version(ctx, "vad", "2")
			if v2.State != models.Failed || v2.Reason != models.ReasonChecksumMismatch {
				t.Fatalf("corrupt version is %s(%s)", v2.State, v2.Reason)
			}
			mi, _ := s.Model(ctx, "vad")
			if mi.Active != "1" || len(rep.Serve) != 1 || rep.Serve[0].Version != "1" || len(rep.RolledBack) != 1 {
				t.Fatalf("after boot: model %+v, serve %+v", mi, rep.Serve)
			}
			if _, err := os.Stat(blob); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("corrupt blob not removed: %v", err)
			}
			// Re-fetch allowed: Retry sends it back to Downloading.
			if v, err := s.Retry(ctx, "vad", "2"); err != nil || v.State != models.Downloading {
				t.Fatalf("retry: %s %v", v.State, err)
			}
		})
	}
}

// Disk full, injected: the import fails cleanly, Failed(DiskFull), no
// ingest file, Active untouched; a later import retries it.
func TestDiskFullInjected(t *testing.T) {
	ctx := context.Background()
	opts := store.DefaultOptions(t.TempDir())
	full := true
	opts.BlobOptions = []blobstore.Option{blobstore.WithWriteFault(func(ref string, off int64, n int) error {
		if full && off+int64(n) > 64<<10 {
			return syscall.ENOSPC
		}
		return nil
	})}
	s := newTestStore(t, opts)
	src := t.TempDir()
	if _, err := s.Import(ctx, models.ImportRequest{Model: "m", Version: "1", ModelFile: testsuite.WriteFile(t, src, "small", 1000)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Activate(ctx, "m", "1", &testsuite.Loader{}); err != nil {
		t.Fatal(err)
	}
	big := testsuite.WriteFile(t, src, "big", 3<<20)
	_, err := s.Import(ctx, models.ImportRequest{Model: "m", Version: "2", ModelFile: big})
	if !errors.Is(err, models.ErrDiskFull) {
		t.Fatalf("import on a full disk: %v", err)
	}
	checkDiskFull(t, s, opts.Root)
	full = false
	if v, err := s.Import(ctx, models.ImportRequest{Model: "m", Version: "2", ModelFile: big}); err != nil || v.State != models.Ready {
		t.Fatalf("retry after space freed: %v", err)
	}
}

func checkDiskFull(t *testing.T, s *store.Store, root string) {
	t.Helper()
	ctx := context.Background()
	v, err := s.Version(ctx, "m", "2")
	if err != nil || v.State != models.Failed || v.Reason != models.ReasonDiskFull {
		t.Fatalf("version after disk full: %s(%s) %v", v.State, v.Reason, err)
	}
	if d := ingestDirs(t, root); len(d) != 0 {
		t.Fatalf("ingest left behind: %v", d)
	}
	mi, _ := s.Model(ctx, "m")
	if mi.Active != "1" {
		t.Fatalf("active changed: %+v", mi)
	}
	if _, err := s.Materialize(ctx, "m", "1"); err != nil {
		t.Fatalf("active no longer materialises: %v", err)
	}
}

// Disk full for real, on a 1 MiB tmpfs (needs CAP_SYS_ADMIN).
func TestDiskFullTmpfs(t *testing.T) {
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v); TestDiskFullInjected covers the logic", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, 0) })
	ctx := context.Background()
	opts := store.DefaultOptions(filepath.Join(mnt, "store"))
	s, err := store.Open(ctx, opts, testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	src := t.TempDir()
	if _, err := s.Import(ctx, models.ImportRequest{Model: "m", Version: "1", ModelFile: testsuite.WriteFile(t, src, "small", 200<<10)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Activate(ctx, "m", "1", &testsuite.Loader{}); err != nil {
		t.Fatal(err)
	}
	_, err = s.Import(ctx, models.ImportRequest{Model: "m", Version: "2", ModelFile: realModel(t, "silero_vad")})
	if !errors.Is(err, models.ErrDiskFull) {
		t.Fatalf("1.8 MB into 1 MiB: %v", err)
	}
	checkDiskFull(t, s, opts.Root)
}

func TestSecondOpenLocked(t *testing.T) {
	opts := store.DefaultOptions(t.TempDir())
	newTestStore(t, opts)
	opts.OpenTimeout = 100 * time.Millisecond
	// flock locks belong to the open file, so a second open in the same
	// process conflicts like a second process would (catalog's test uses a
	// real second process).
	if _, err := store.Open(context.Background(), opts, testLogger(t), nil); !errors.Is(err, models.ErrLocked) {
		t.Fatalf("second open: %v", err)
	}
}

func TestAnnounceSignatures(t *testing.T) {
	ctx := context.Background()
	seed := func(b byte) ed25519.PrivateKey { s := make([]byte, 32); s[0] = b; return ed25519.NewKeyFromSeed(s) }
	oldK, newK, evil := seed(1), seed(2), seed(3)
	opts := store.DefaultOptions(t.TempDir())
	keys := models.KeySet{}
	keys.Add(oldK.Public().(ed25519.PublicKey))
	keys.Add(newK.Public().(ed25519.PublicKey))
	opts.TrustedKeys = keys
	ids := map[string]string{"k1": models.KeyID(oldK.Public().(ed25519.PublicKey)), "k2": models.KeyID(newK.Public().(ed25519.PublicKey))}
	s := newTestStore(t, opts)
	data := []byte("model bytes")
	sum := sha256.Sum256(data)
	man := func(v string) models.Manifest {
		return models.Manifest{Protocol: 1, Model: "m", Version: v, Files: []models.FileRef{{Path: "model.onnx", Role: models.RoleModel, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data))}}}
	}
	env := func(m models.Manifest, id string, k ed25519.PrivateKey, mutate func(*models.SignedManifest)) []byte {
		sm, err := models.SignManifest(m, k)
		if err != nil {
			t.Fatal(err)
		}
		// id names the key the envelope claims (a wrong claim is a forgery).
		if real, ok := ids[id]; ok {
			sm.KeyID = real
		} else {
			sm.KeyID = id
		}
		if mutate != nil {
			mutate(&sm)
		}
		b, _ := json.Marshal(sm)
		return b
	}
	if v, err := s.Announce(ctx, env(man("1"), "k1", oldK, nil)); err != nil || v.State != models.Announced {
		t.Fatalf("old key: %v", err)
	}
	if v, err := s.Announce(ctx, env(man("2"), "k2", newK, nil)); err != nil || v.State != models.Announced {
		t.Fatalf("rotated key: %v", err)
	}
	cases := map[string][]byte{
		"3": env(man("3"), "k1", oldK, func(sm *models.SignedManifest) { sm.Signature = nil }),
		"4": env(man("4"), "k1", evil, nil),
		"5": env(man("5"), "evil", evil, nil),
		"6": env(man("6"), "k1", oldK, func(sm *models.SignedManifest) { sm.Payload[len(sm.Payload)-2] ^= 1 }),
	}
	for ver, b := range cases {
		_, err := s.Announce(ctx, b)
		if !errors.Is(err, models.ErrSignatureInvalid) {
			t.Fatalf("version %s: %v", ver, err)
		}
		if v, err := s.Version(ctx, "m", ver); err == nil && (v.State != models.Failed || v.Reason != models.ReasonSignatureInvalid) {
			t.Fatalf("version %s recorded as %s(%s)", ver, v.State, v.Reason)
		}
	}
	wantState := func(ver string, st models.State) {
		t.Helper()
		if v, err := s.Version(ctx, "m", ver); err != nil || v.State != st {
			t.Fatalf("%s: %s %v", ver, v.State, err)
		}
	}
	for _, ver := range []string{"3", "4", "5"} {
		wantState(ver, models.Failed)
	}
	// A forged manifest for an existing version does not touch it.
	if _, err := s.Announce(ctx, env(man("1"), "k1", evil, nil)); !errors.Is(err, models.ErrSignatureInvalid) {
		t.Fatal(err)
	}
	wantState("1", models.Announced)
	// Unsigned garbage records nothing.
	if _, err := s.Announce(ctx, []byte(`{"payload":"bm9wZQ=="}`)); !errors.Is(err, models.ErrSignatureInvalid) {
		t.Fatal(err)
	}
}
