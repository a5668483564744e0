package chunker

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"testing"

	"github.com/edgeai/edge-node/models"
)

// pseudoRandom returns n deterministic, incompressible bytes.
func pseudoRandom(seed uint64, n int) []byte {
	out := make([]byte, 0, n+32)
	var ctr [16]byte
	binary.LittleEndian.PutUint64(ctr[8:], seed)
	for i := uint64(0); len(out) < n; i++ {
		binary.LittleEndian.PutUint64(ctr[:8], i)
		s := sha256.Sum256(ctr[:])
		out = append(out, s[:]...)
	}
	return out[:n]
}

func TestSplitCoversStream(t *testing.T) {
	data := pseudoRandom(1, 5<<20+123)
	var got bytes.Buffer
	var next int64
	sha, size, chunks, err := Split(bytes.NewReader(data), func(c models.ChunkRef, off int64, b []byte) error {
		if off != next {
			t.Fatalf("offset %d, want %d", off, next)
		}
		next += int64(len(b))
		s := sha256.Sum256(b)
		if hex.EncodeToString(s[:]) != c.SHA256 || int64(len(b)) != c.Size {
			t.Fatalf("chunk ref does not match data at %d", off)
		}
		got.Write(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	whole := sha256.Sum256(data)
	if size != int64(len(data)) || sha != hex.EncodeToString(whole[:]) || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("size %d sha %s: stream not reproduced", size, sha)
	}
	for i, c := range chunks[:len(chunks)-1] {
		if c.Size < MinSize || c.Size > MaxSize {
			t.Fatalf("chunk %d size %d outside [%d,%d]", i, c.Size, MinSize, MaxSize)
		}
	}
	avg := size / int64(len(chunks))
	t.Logf("%d chunks, average %d KiB", len(chunks), avg>>10)
	if avg < 128<<10 || avg > 512<<10 {
		t.Fatalf("average chunk %d bytes, want about %d", avg, NormalSize)
	}
}

func TestSplitEmptyAndSmall(t *testing.T) {
	_, size, chunks, err := Split(bytes.NewReader(nil), nil)
	if err != nil || size != 0 || len(chunks) != 0 {
		t.Fatalf("empty: size %d chunks %d err %v", size, len(chunks), err)
	}
	_, size, chunks, err = Split(bytes.NewReader([]byte("tiny")), nil)
	if err != nil || size != 4 || len(chunks) != 1 {
		t.Fatalf("tiny: size %d chunks %d err %v", size, len(chunks), err)
	}
}

// TestGoldenCutPoints pins the cut points: if this fails after a dependency
// upgrade, deduplication against already-published versions is broken.
func TestGoldenCutPoints(t *testing.T) {
	_, _, chunks, err := Split(bytes.NewReader(pseudoRandom(42, 4<<20)), nil)
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int64
	for _, c := range chunks {
		sizes = append(sizes, c.Size)
	}
	want := goldenSizes
	if len(sizes) != len(want) {
		t.Fatalf("sizes = %v, want %v", sizes, want)
	}
	for i := range want {
		if sizes[i] != want[i] {
			t.Fatalf("sizes = %v, want %v", sizes, want)
		}
	}
}

// TestEditSharesChunks: changing one region of a file leaves most chunks
// unchanged, also when the edit shifts everything after it.
func TestEditSharesChunks(t *testing.T) {
	base := pseudoRandom(7, 16<<20)
	edits := map[string][]byte{
		"overwrite 4 KiB": func() []byte {
			b := bytes.Clone(base)
			copy(b[8<<20:], pseudoRandom(8, 4<<10))
			return b
		}(),
		"insert 100 bytes": func() []byte {
			return append(append(bytes.Clone(base[:5<<20]), pseudoRandom(9, 100)...), base[5<<20:]...)
		}(),
	}
	_, _, c1, err := Split(bytes.NewReader(base), nil)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, c := range c1 {
		have[c.SHA256] = true
	}
	for name, b := range edits {
		_, size, c2, err := Split(bytes.NewReader(b), nil)
		if err != nil {
			t.Fatal(err)
		}
		var moved int64
		for _, c := range c2 {
			if !have[c.SHA256] {
				moved += c.Size
			}
		}
		t.Logf("%s: %d of %d bytes in new chunks (%.2f%%)", name, moved, size, 100*float64(moved)/float64(size))
		if moved > 3*MaxSize {
			t.Errorf("%s: %d bytes in new chunks, want at most %d", name, moved, 3*MaxSize)
		}
	}
}
