package transfer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	"github.com/edgeai/edge-node/models"
)

// BlobStore is what StoreSink needs from the node's model store
// (*models/store.Store implements it): the chunk interface plus a way to ask
// whether a blob is stored.
type BlobStore interface {
	models.ChunkStore
	// BlobPath returns the path of a stored blob, or an error when it is
	// not stored.
	BlobPath(ctx context.Context, digest string) (string, error)
}

// StoreSink is the ChunkSink over the node's model store: chunks go into
// the store's ingests (models.ChunkIngest), whose verified ranges are
// recorded in the store's bbolt catalog, so a transfer interrupted by a
// disconnect, a broker crash or a node restart resumes where it stopped; a
// chunk some stored blob already holds is copied locally (dedup across
// versions). Safe for concurrent use.
type StoreSink struct {
	st BlobStore

	mu      sync.Mutex                    // guards ingests
	ingests map[string]models.ChunkIngest // blob -> open ingest
}

// NewStoreSink builds a sink over st.
func NewStoreSink(st BlobStore) *StoreSink {
	return &StoreSink{st: st, ingests: map[string]models.ChunkIngest{}}
}

var _ ChunkSink = (*StoreSink)(nil)

// HasBlob implements ChunkSink.
func (s *StoreSink) HasBlob(ctx context.Context, blob string) (bool, error) {
	// Any error means "not stored": a store that cannot be read fails at
	// Begin, with the real error.
	_, err := s.st.BlobPath(ctx, blob)
	return err == nil, nil
}

// Begin implements ChunkSink: it opens (or resumes) the store's ingest of f
// and returns the offsets of f's chunks whose whole range is already
// written and verified.
func (s *StoreSink) Begin(ctx context.Context, f models.FileRef) (map[int64]bool, error) {
	// An ingest left open by an earlier Fetch that ended early is closed
	// first: the store allows one open ingest per blob.
	s.mu.Lock()
	if old := s.ingests[f.SHA256]; old != nil {
		_ = old.Close()
		delete(s.ingests, f.SHA256)
	}
	s.mu.Unlock()
	in, err := s.st.OpenIngest(ctx, f)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.ingests[f.SHA256] = in
	s.mu.Unlock()
	missing := in.Missing()
	written := map[int64]bool{}
	var off int64
	for _, c := range f.Chunks {
		if !overlaps(missing, off, off+c.Size) {
			written[off] = true
		}
		off += c.Size
	}
	return written, nil
}

func overlaps(rs []models.Range, start, end int64) bool {
	for _, r := range rs {
		if r.Start < end && start < r.End {
			return true
		}
	}
	return false
}

// LocalChunk implements ChunkSink through the store's chunk index.
func (s *StoreSink) LocalChunk(ctx context.Context, chunk string) ([]byte, bool, error) {
	locs, err := s.st.HaveChunks(ctx, []string{chunk})
	if err != nil {
		return nil, false, err
	}
	loc, ok := locs[chunk]
	if !ok {
		return nil, false, nil
	}
	data, err := s.st.ReadChunk(ctx, loc)
	if err != nil {
		// A blob that no longer holds the chunk (removed, or rotten): fetch
		// it from the network instead.
		return nil, false, nil
	}
	return data, true, nil
}

// WriteChunk implements ChunkSink.
func (s *StoreSink) WriteChunk(ctx context.Context, blob string, offset int64, data []byte) error {
	s.mu.Lock()
	in := s.ingests[blob]
	s.mu.Unlock()
	if in == nil {
		return fmt.Errorf("transfer: no ingest open for blob %s", blob)
	}
	sum := sha256.Sum256(data)
	return in.WriteChunk(ctx, offset, data, hex.EncodeToString(sum[:]))
}

// Commit implements ChunkSink: the store verifies the whole blob. A
// mismatch wraps both models.ErrChecksumMismatch and ErrChecksumMismatch.
func (s *StoreSink) Commit(ctx context.Context, blob string) error {
	s.mu.Lock()
	in := s.ingests[blob]
	delete(s.ingests, blob)
	s.mu.Unlock()
	if in == nil {
		return fmt.Errorf("transfer: no ingest open for blob %s", blob)
	}
	defer in.Close()
	if err := in.Commit(ctx); err != nil {
		if errors.Is(err, models.ErrChecksumMismatch) {
			return fmt.Errorf("%w: %w", ErrChecksumMismatch, err)
		}
		return err
	}
	return nil
}

// Close releases the open ingests; they stay resumable in the store.
func (s *StoreSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for b, in := range s.ingests {
		errs = append(errs, in.Close())
		delete(s.ingests, b)
	}
	return errors.Join(errs...)
}
