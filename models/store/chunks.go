package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"sync"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/models/blobstore"
	"github.com/edgeai/edge-node/models/catalog"
)

// HaveChunks returns where each known chunk lives (only chunks whose blob
// is still on disk).
func (s *Store) HaveChunks(ctx context.Context, chunks []string) (map[string]models.ChunkLocation, error) {
	out := make(map[string]models.ChunkLocation)
	err := s.cat.View(ctx, func(tx *catalog.Tx) error {
		for _, c := range chunks {
			loc, err := tx.LookupChunk(c)
			if isNotFound(err) {
				continue
			}
			if err != nil {
				return err
			}
			if size, err := s.blobs.Stat(loc.Blob); err != nil || size < loc.Offset+loc.Size {
				continue
			}
			out[c] = loc
		}
		return nil
	})
	return out, err
}

// ReadChunk reads a chunk from a stored blob and checks its sha256.
func (s *Store) ReadChunk(ctx context.Context, loc models.ChunkLocation) ([]byte, error) {
	if err := models.ValidDigest(loc.Blob); err != nil {
		return nil, err
	}
	if loc.Size <= 0 || loc.Size > models.MaxChunkSize || loc.Offset < 0 {
		return nil, fmt.Errorf("chunk %s: bad location: %w", loc.Chunk, models.ErrInvalidArgument)
	}
	f, err := os.Open(s.blobs.Path(loc.Blob))
	if err != nil {
		return nil, fmt.Errorf("chunk %s: blob %s: %w", loc.Chunk, loc.Blob, models.ErrNotFound)
	}
	defer f.Close()
	buf := make([]byte, loc.Size)
	if _, err := f.ReadAt(buf, loc.Offset); err != nil {
		return nil, fmt.Errorf("chunk %s: %w", loc.Chunk, err)
	}
	if sum := sha256.Sum256(buf); hex.EncodeToString(sum[:]) != loc.Chunk {
		return nil, fmt.Errorf("chunk %s in blob %s: %w", loc.Chunk, loc.Blob, models.ErrChecksumMismatch)
	}
	return buf, nil
}

// OpenIngest starts or resumes assembling a blob from chunks.
func (s *Store) OpenIngest(ctx context.Context, file models.FileRef) (models.ChunkIngest, error) {
	if err := models.ValidDigest(file.SHA256); err != nil {
		return nil, err
	}
	if file.Size < 0 || file.Size > models.MaxFileSize {
		return nil, fmt.Errorf("ingest %s: size %d: %w", file.SHA256, file.Size, models.ErrInvalidArgument)
	}
	ci := &chunkIngest{s: s, file: file}
	if size, err := s.blobs.Stat(file.SHA256); err == nil && size == file.Size {
		ci.stored = true
		return ci, nil
	}
	w, err := s.blobs.RandomWriter(ctx, file.SHA256)
	if err != nil {
		return nil, err
	}
	ci.w = w
	err = s.cat.Update(ctx, func(tx *catalog.Tx) error {
		rec, err := tx.Ingest(file.SHA256)
		if err != nil && !isNotFound(err) {
			return err
		}
		fi, serr := os.Stat(s.blobs.Root() + "/ingest/" + file.SHA256 + "/data")
		if isNotFound(err) || rec.Size != file.Size || serr != nil || fi.Size() != file.Size {
			// New, or the file does not match the record: start over.
			rec = catalog.IngestRecord{Blob: file.SHA256, Size: file.Size, Started: s.opts.Now().UTC()}
			if err := w.Truncate(0); err != nil {
				return err
			}
			if err := w.Truncate(file.Size); err != nil {
				return err
			}
			if err := w.Sync(); err != nil {
				return err
			}
		}
		ci.rec = rec
		return tx.PutIngest(rec)
	})
	if err != nil {
		w.Close()
		return nil, err
	}
	return ci, nil
}

type chunkIngest struct {
	s      *Store
	file   models.FileRef
	stored bool // the blob was already in the store

	mu  sync.Mutex // guards w and rec
	w   *blobstore.Writer
	rec catalog.IngestRecord
}

func (c *chunkIngest) WriteChunk(ctx context.Context, offset int64, data []byte, chunkSHA256 string) error {
	if c.stored {
		return nil
	}
	if err := models.ValidDigest(chunkSHA256); err != nil {
		return err
	}
	end := offset + int64(len(data))
	if offset < 0 || len(data) == 0 || len(data) > models.MaxChunkSize || end > c.file.Size {
		return fmt.Errorf("ingest %s: chunk [%d,%d) outside [0,%d): %w", c.file.SHA256, offset, end, c.file.Size, models.ErrInvalidArgument)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != chunkSHA256 {
		return fmt.Errorf("ingest %s: chunk %s at %d: %w", c.file.SHA256, chunkSHA256, offset, models.ErrChecksumMismatch)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.w == nil {
		return fmt.Errorf("ingest %s: %w", c.file.SHA256, os.ErrClosed)
	}
	if catalog.Covered(c.rec.Done, offset, end) {
		return nil
	}
	if _, err := c.w.WriteAt(data, offset); err != nil {
		c.failLocked(ctx, err)
		return err
	}
	if err := c.w.Sync(); err != nil {
		c.failLocked(ctx, err)
		return err
	}
	rec := c.rec
	rec.Done = catalog.AddRange(append([]models.Range(nil), rec.Done...), offset, end)
	if err := c.s.cat.Update(ctx, func(tx *catalog.Tx) error { return tx.PutIngest(rec) }); err != nil {
		return err
	}
	c.rec = rec
	return nil
}

// failLocked drops the record after a disk-full write (the blob store has
// already removed the file).
func (c *chunkIngest) failLocked(ctx context.Context, err error) {
	if !blobstore.IsDiskFull(err) {
		return
	}
	c.w.Close()
	c.w = nil
	if derr := c.s.cat.Update(context.WithoutCancel(ctx), func(tx *catalog.Tx) error { return tx.DeleteIngest(c.file.SHA256) }); derr != nil {
		c.s.log.Error().Err(derr).Str("blob", c.file.SHA256).Msg("drop ingest record")
	}
}

func (c *chunkIngest) Missing() []models.Range {
	if c.stored {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return catalog.Gaps(c.rec.Done, c.file.Size)
}

func (c *chunkIngest) Commit(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.stored {
		if c.w == nil {
			return fmt.Errorf("ingest %s: %w", c.file.SHA256, os.ErrClosed)
		}
		if gaps := catalog.Gaps(c.rec.Done, c.file.Size); len(gaps) > 0 {
			return fmt.Errorf("ingest %s: %d ranges missing (first [%d,%d)): %w", c.file.SHA256, len(gaps), gaps[0].Start, gaps[0].End, models.ErrInvalidArgument)
		}
		_, err := c.w.Commit(ctx, c.file.SHA256, c.file.Size)
		c.w = nil
		if err != nil {
			_ = c.s.cat.Update(context.WithoutCancel(ctx), func(tx *catalog.Tx) error { return tx.DeleteIngest(c.file.SHA256) })
			return err
		}
	}
	c.stored = true
	return c.s.cat.Update(ctx, func(tx *catalog.Tx) error {
		if err := tx.DeleteIngest(c.file.SHA256); err != nil {
			return err
		}
		return tx.IndexChunks(c.file)
	})
}

func (c *chunkIngest) Abort(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.w != nil {
		if err := c.w.Abort(); err != nil {
			return err
		}
		c.w = nil
	}
	if c.stored {
		return nil
	}
	return c.s.cat.Update(ctx, func(tx *catalog.Tx) error { return tx.DeleteIngest(c.file.SHA256) })
}

func (c *chunkIngest) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.w == nil {
		return nil
	}
	err := c.w.Close()
	c.w = nil
	return err
}
