package transfer

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/wire"
)

// ErrChecksumMismatch is returned by Commit when a blob's bytes do not hash
// to its name (the version then fails with reason ChecksumMismatch).
var ErrChecksumMismatch = errors.New("checksum mismatch")

// ChunkSink is what a transfer needs from the node's model store. Chunks
// handed to it have been verified against their sha256. Implementations must
// be safe for concurrent use (chunks arrive on concurrent handlers).
type ChunkSink interface {
	// HasBlob reports whether a verified blob with this sha256 is stored.
	HasBlob(blob string) (bool, error)
	// Begin starts or resumes the ingest of f and returns the offsets of the
	// chunks already written and verified in an earlier attempt.
	Begin(f models.FileRef) (written map[int64]bool, err error)
	// LocalChunk returns the bytes of a chunk that a stored blob already
	// holds (dedup across versions), or ok false.
	LocalChunk(chunk string) (data []byte, ok bool, err error)
	// WriteChunk durably writes a verified chunk at offset of blob's ingest
	// and records it as written (that record is the resume point).
	WriteChunk(blob string, offset int64, data []byte) error
	// Commit verifies the whole blob's sha256 and moves it into place. On a
	// mismatch it discards the ingest and returns ErrChecksumMismatch.
	Commit(blob string) error
}

// DirSink is a ChunkSink on a plain directory, the reference implementation
// of the store's side of a transfer (edgectl and tests use it; the node's
// model store implements ChunkSink over its own blob store):
//
//	blobs/sha256/<hex>            committed blobs
//	blobs/sha256/<hex>.chunks     their chunk lists (JSON), the dedup index
//	ingest/<hex>/data             a blob being written, at its final size
//	ingest/<hex>/written          8-byte big-endian offsets of verified chunks, appended and fsynced
//	ingest/<hex>/ref              the FileRef being ingested (JSON)
type DirSink struct {
	dir string

	mu    sync.Mutex          // guards index and files
	index map[string]chunkLoc // chunk sha -> where a committed blob holds it
	files map[string]*ingest  // blob -> open ingest
}

type chunkLoc struct {
	blob   string
	offset int64
	size   int64
}

type ingest struct {
	mu      sync.Mutex // guards the files' writes
	ref     models.FileRef
	data    *os.File
	written *os.File
}

// OpenDirSink opens (creating) a DirSink at dir and loads its chunk index.
func OpenDirSink(dir string) (*DirSink, error) {
	for _, d := range []string{"blobs/sha256", "ingest"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	s := &DirSink{dir: dir, index: map[string]chunkLoc{}, files: map[string]*ingest{}}
	lists, err := filepath.Glob(filepath.Join(dir, "blobs/sha256/*.chunks"))
	if err != nil {
		return nil, err
	}
	for _, p := range lists {
		var f models.FileRef
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		s.indexLocked(f)
	}
	return s, nil
}

func (s *DirSink) indexLocked(f models.FileRef) {
	var off int64
	for _, c := range f.Chunks {
		s.index[c.SHA256] = chunkLoc{f.SHA256, off, c.Size}
		off += c.Size
	}
}

// BlobPath is where a committed blob lives.
func (s *DirSink) BlobPath(blob string) string { return filepath.Join(s.dir, "blobs/sha256", blob) }

// HasBlob implements ChunkSink.
func (s *DirSink) HasBlob(blob string) (bool, error) {
	if err := wire.ValidSHA256(blob); err != nil {
		return false, err
	}
	_, err := os.Stat(s.BlobPath(blob))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// Begin implements ChunkSink.
func (s *DirSink) Begin(f models.FileRef) (map[int64]bool, error) {
	if err := wire.ValidSHA256(f.SHA256); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if in, ok := s.files[f.SHA256]; ok {
		return readWritten(in.written)
	}
	dir := filepath.Join(s.dir, "ingest", f.SHA256)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ref, err := json.Marshal(f)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "ref"), ref, 0o644); err != nil {
		return nil, err
	}
	data, err := os.OpenFile(filepath.Join(dir, "data"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := data.Truncate(f.Size); err != nil {
		data.Close()
		return nil, err
	}
	written, err := os.OpenFile(filepath.Join(dir, "written"), os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		data.Close()
		return nil, err
	}
	s.files[f.SHA256] = &ingest{ref: f, data: data, written: written}
	return readWritten(written)
}

func readWritten(f *os.File) (map[int64]bool, error) {
	b, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<40))
	if err != nil {
		return nil, err
	}
	out := map[int64]bool{}
	for i := 0; i+8 <= len(b); i += 8 { // a torn last record is ignored
		out[int64(binary.BigEndian.Uint64(b[i:]))] = true
	}
	return out, nil
}

// LocalChunk implements ChunkSink.
func (s *DirSink) LocalChunk(chunk string) ([]byte, bool, error) {
	s.mu.Lock()
	loc, ok := s.index[chunk]
	s.mu.Unlock()
	if !ok {
		return nil, false, nil
	}
	f, err := os.Open(s.BlobPath(loc.blob))
	if err != nil {
		return nil, false, nil // blob removed since: fetch instead
	}
	defer f.Close()
	b := make([]byte, loc.size)
	if _, err := f.ReadAt(b, loc.offset); err != nil {
		return nil, false, nil
	}
	sum := sha256.Sum256(b)
	if hex.EncodeToString(sum[:]) != chunk {
		return nil, false, nil
	}
	return b, true, nil
}

// WriteChunk implements ChunkSink.
func (s *DirSink) WriteChunk(blob string, offset int64, data []byte) error {
	s.mu.Lock()
	in, ok := s.files[blob]
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("sink: no ingest for blob %s", blob)
	}
	if offset < 0 || offset+int64(len(data)) > in.ref.Size {
		return fmt.Errorf("sink: chunk at %d+%d outside blob of %d bytes", offset, len(data), in.ref.Size)
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if _, err := in.data.WriteAt(data, offset); err != nil {
		return err
	}
	if err := in.data.Sync(); err != nil {
		return err
	}
	var rec [8]byte
	binary.BigEndian.PutUint64(rec[:], uint64(offset))
	if _, err := in.written.Write(rec[:]); err != nil {
		return err
	}
	return in.written.Sync()
}

// Commit implements ChunkSink.
func (s *DirSink) Commit(blob string) error {
	s.mu.Lock()
	in, ok := s.files[blob]
	delete(s.files, blob)
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("sink: no ingest for blob %s", blob)
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	dir := filepath.Join(s.dir, "ingest", blob)
	h := sha256.New()
	_, err := io.Copy(h, io.NewSectionReader(in.data, 0, in.ref.Size))
	in.written.Close()
	if err != nil {
		in.data.Close()
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != blob {
		in.data.Close()
		os.RemoveAll(dir)
		return fmt.Errorf("sink: blob %s hashes to %s: %w", blob, got, ErrChecksumMismatch)
	}
	if err := in.data.Sync(); err != nil {
		in.data.Close()
		return err
	}
	in.data.Close()
	list, _ := json.Marshal(in.ref)
	if err := writeFileSync(s.BlobPath(blob)+".chunks", list); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(dir, "data"), s.BlobPath(blob)); err != nil {
		return err
	}
	if err := syncDir(filepath.Dir(s.BlobPath(blob))); err != nil {
		return err
	}
	s.mu.Lock()
	s.indexLocked(in.ref)
	s.mu.Unlock()
	return os.RemoveAll(dir)
}

// Close closes open ingests (their progress stays on disk).
func (s *DirSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, in := range s.files {
		in.data.Close()
		in.written.Close()
		delete(s.files, k)
	}
	return nil
}

// ReadBlob returns a committed blob's bytes (tests, small files).
func (s *DirSink) ReadBlob(blob string) ([]byte, error) { return os.ReadFile(s.BlobPath(blob)) }

func writeFileSync(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, bytes.NewReader(b)); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
