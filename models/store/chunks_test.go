package store_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"testing"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/models/store"
)

func hexsum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// fileRef cuts data into fixed-size chunks (the real link uses
// content-defined ones; the store does not care how they were cut).
func fileRef(data []byte, chunk int) models.FileRef {
	f := models.FileRef{Path: "model.onnx", Role: models.RoleModel, SHA256: hexsum(data), Size: int64(len(data))}
	for off := 0; off < len(data); off += chunk {
		end := min(off+chunk, len(data))
		f.Chunks = append(f.Chunks, models.ChunkRef{SHA256: hexsum(data[off:end]), Size: int64(end - off)})
	}
	return f
}

func TestChunkedIngestResumeAndDedup(t *testing.T) {
	ctx := context.Background()
	priv := ed25519.NewKeyFromSeed(make([]byte, 32))
	opts := store.DefaultOptions(t.TempDir())
	keys := models.KeySet{}
	keys.Add(priv.Public().(ed25519.PublicKey))
	opts.TrustedKeys = keys
	s := newTestStore(t, opts)

	data := make([]byte, 10*1000+123)
	rand.Read(data)
	f := fileRef(data, 1000)
	announce := func(s *store.Store, ver string, f models.FileRef) {
		sm, err := models.SignManifest(models.Manifest{Protocol: 1, Model: "m", Version: ver, Files: []models.FileRef{f}}, priv)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(sm)
		if _, err := s.Announce(ctx, b); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Transition(ctx, "m", ver, models.Downloading, models.TransitionOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	announce(s, "1", f)
	ing, err := s.OpenIngest(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	offs := func(i int) int64 { return int64(i * 1000) }
	chunk := func(i int) []byte { return data[offs(i) : offs(i)+f.Chunks[i].Size] }
	// Out of order, with a duplicate and a corrupt chunk.
	for _, i := range []int{7, 2, 7, 0, 10} {
		if err := ing.WriteChunk(ctx, offs(i), chunk(i), f.Chunks[i].SHA256); err != nil {
			t.Fatal(err)
		}
	}
	bad := append([]byte(nil), chunk(3)...)
	bad[0] ^= 1
	if err := ing.WriteChunk(ctx, offs(3), bad, f.Chunks[3].SHA256); !errors.Is(err, models.ErrChecksumMismatch) {
		t.Fatalf("corrupt chunk: %v", err)
	}
	if err := ing.Commit(ctx); !errors.Is(err, models.ErrInvalidArgument) {
		t.Fatalf("commit with gaps: %v", err)
	}
	// Restart: the verified ranges survive in the catalog.
	ing.Close()
	s.Close()
	s = newTestStore(t, opts)
	ing, err = s.OpenIngest(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	if m := ing.Missing(); len(m) != 3 || m[0] != (models.Range{Start: 1000, End: 2000}) {
		t.Fatalf("missing after restart: %v", m)
	}
	for i := range f.Chunks {
		if err := ing.WriteChunk(ctx, offs(i), chunk(i), f.Chunks[i].SHA256); err != nil {
			t.Fatal(err)
		}
	}
	if err := ing.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if v, err := s.VerifyVersion(ctx, "m", "1"); err != nil || v.State != models.Ready {
		t.Fatalf("verify: %s %v", v.State, err)
	}

	// A fine-tuned version: only the last two chunks changed.
	data2 := append([]byte(nil), data...)
	rand.Read(data2[9000:])
	f2 := fileRef(data2, 1000)
	announce(s, "2", f2)
	var want []string
	for _, c := range f2.Chunks {
		want = append(want, c.SHA256)
	}
	have, err := s.HaveChunks(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	if len(have) != 9 {
		t.Fatalf("have %d of 11 chunks, want 9", len(have))
	}
	ing2, err := s.OpenIngest(ctx, f2)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range f2.Chunks {
		b := data2[offs(i) : offs(i)+c.Size]
		if loc, ok := have[c.SHA256]; ok {
			if b, err = s.ReadChunk(ctx, loc); err != nil {
				t.Fatal(err)
			}
		}
		if err := ing2.WriteChunk(ctx, offs(i), b, c.SHA256); err != nil {
			t.Fatal(err)
		}
	}
	if err := ing2.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if v, err := s.VerifyVersion(ctx, "m", "2"); err != nil || v.State != models.Ready {
		t.Fatalf("verify v2: %s %v", v.State, err)
	}
	// A manifest whose whole-file hash is wrong (chunks fine): Commit fails
	// with ErrChecksumMismatch and the ingest is gone.
	f3 := fileRef(data[:2000], 1000)
	f3.SHA256 = hexsum([]byte("something else"))
	ing3, err := s.OpenIngest(ctx, f3)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := ing3.WriteChunk(ctx, offs(i), chunk(i), f3.Chunks[i].SHA256); err != nil {
			t.Fatal(err)
		}
	}
	if err := ing3.Commit(ctx); !errors.Is(err, models.ErrChecksumMismatch) {
		t.Fatalf("whole-blob mismatch: %v", err)
	}
	if d := ingestDirs(t, opts.Root); len(d) != 0 {
		t.Fatalf("ingests left: %v", d)
	}
}
