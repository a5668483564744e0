package transfer

import (
	"context"
	"errors"

	"github.com/edgeai/edge-node/models"
)

// ErrChecksumMismatch is returned by Commit when a blob's bytes do not hash
// to its name (the version then fails with reason ChecksumMismatch).
var ErrChecksumMismatch = errors.New("checksum mismatch")

// ChunkSink is what a transfer needs from the node's model store. Chunks
// handed to it have been verified against their sha256. Implementations must
// be safe for concurrent use (chunks arrive on concurrent handlers). Every
// method's ctx bounds the store calls it makes; the Fetcher passes its
// Fetch's ctx, so ending a Fetch abandons the writes in flight.
type ChunkSink interface {
	// HasBlob reports whether a verified blob with this sha256 is stored.
	HasBlob(ctx context.Context, blob string) (bool, error)
	// Begin starts or resumes the ingest of f and returns the offsets of the
	// chunks already written and verified in an earlier attempt.
	Begin(ctx context.Context, f models.FileRef) (written map[int64]bool, err error)
	// LocalChunk returns the bytes of a chunk that a stored blob already
	// holds (dedup across versions), or ok false.
	LocalChunk(ctx context.Context, chunk string) (data []byte, ok bool, err error)
	// WriteChunk durably writes a verified chunk at offset of blob's ingest
	// and records it as written (that record is the resume point).
	WriteChunk(ctx context.Context, blob string, offset int64, data []byte) error
	// Commit verifies the whole blob's sha256 and moves it into place. On a
	// mismatch it discards the ingest and returns ErrChecksumMismatch.
	Commit(ctx context.Context, blob string) error
}
