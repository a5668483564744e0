package chunker

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	cdc "github.com/PlakarKorp/go-cdc-chunkers"

	"github.com/edgeai/edge-node/models"
)

// Tensor-aligned chunking (issue 14): an ONNX model is cut at the start and
// end of the data of every tensor of at least TensorMinBytes (initializers
// and Constant-node values), and each piece between those cuts is cut with
// FastCDC at a smaller size than Split's, so that a changed tensor moves
// little more than its own bytes. The piece sizes grow with the file (see
// tensorParams) so that the chunk count stays within what one manifest can
// list; a file that is not an ONNX model, holds no such tensor, or would
// still need more than MaxTensorAlignedChunks chunks is cut by Split.
const (
	// TensorMinBytes: smaller tensors are not cut out; they stay inside the
	// chunks around them.
	TensorMinBytes = 64 << 10
	// MaxTensorAlignedChunks bounds the chunk count of a tensor-aligned
	// file (a manifest lists about 7,000 chunks in all).
	MaxTensorAlignedChunks = 4096
)

// tensorParams returns the FastCDC sizes used inside the pieces of a
// tensor-aligned file of size bytes: normal 64 KiB up to 128 MiB, 128 KiB
// up to 256 MiB, then Split's own sizes; min is a quarter of normal.
func tensorParams(size int64) (minSize, normal, maxSize int) {
	switch {
	case size <= 128<<20:
		return 16 << 10, 64 << 10, 256 << 10
	case size <= 256<<20:
		return 32 << 10, 128 << 10, 512 << 10
	default:
		return MinSize, NormalSize, MaxSize
	}
}

// SplitModel is the publisher's chunking of a file (r, size bytes long):
// tensor-aligned for an ONNX model, else Split's. It calls fn for every
// chunk in file order (fn may be nil) and returns the sha256 of the whole
// file and its chunk list. The result depends only on the bytes.
func SplitModel(r io.ReaderAt, size int64, fn ChunkFunc) (sha string, chunks []models.ChunkRef, err error) {
	return splitModel(r, size, fn, MaxTensorAlignedChunks)
}

func splitModel(r io.ReaderAt, size int64, fn ChunkFunc, maxChunks int) (sha string, chunks []models.ChunkRef, err error) {
	spans, perr := tensorSpans(r, size, TensorMinBytes)
	if perr == nil && len(spans) > 0 {
		sha, chunks, err = splitAligned(r, size, spans)
		if err != nil {
			return "", nil, err
		}
		if len(chunks) <= maxChunks {
			if fn != nil {
				err = replay(r, chunks, fn)
			}
			return sha, chunks, err
		}
	}
	sha, _, chunks, err = Split(io.NewSectionReader(r, 0, size), fn)
	return sha, chunks, err
}

// pieces returns the ends of the pieces a tensor-aligned file is cut into:
// at the start and end of every span, except that a gap shorter than the
// inner minimum chunk joins the piece after it (the last one, the piece
// before it).
func pieces(size int64, spans []span, minGap int64) []int64 {
	var ends []int64
	last := int64(0)
	for _, s := range spans {
		if s.Start-last >= minGap {
			ends = append(ends, s.Start)
		}
		ends = append(ends, s.End)
		last = s.End
	}
	if size-last >= minGap || len(ends) == 0 {
		ends = append(ends, size)
	} else {
		ends[len(ends)-1] = size
	}
	return ends
}

func splitAligned(r io.ReaderAt, size int64, spans []span) (string, []models.ChunkRef, error) {
	minSize, normal, maxSize := tensorParams(size)
	opts := &cdc.ChunkerOpts{MinSize: minSize, NormalSize: normal, MaxSize: maxSize}
	ch, err := cdc.NewChunkerBuffer(Algorithm, nil, opts, make([]byte, maxSize))
	if err != nil {
		return "", nil, fmt.Errorf("chunker: %w", err)
	}
	whole := sha256.New()
	var chunks []models.ChunkRef
	start := int64(0)
	for _, end := range pieces(size, spans, int64(minSize)) {
		ch.Reset(io.NewSectionReader(r, start, end-start))
		for {
			data, nerr := ch.Next()
			if nerr != nil && !errors.Is(nerr, io.EOF) {
				return "", nil, fmt.Errorf("chunker: read: %w", nerr)
			}
			if len(data) > 0 {
				sum := sha256.Sum256(data)
				whole.Write(data)
				chunks = append(chunks, models.ChunkRef{SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data))})
			}
			if errors.Is(nerr, io.EOF) {
				break
			}
		}
		start = end
	}
	return hex.EncodeToString(whole.Sum(nil)), chunks, nil
}

// replay reads the chunks of r again, in order, and hands each to fn.
func replay(r io.ReaderAt, chunks []models.ChunkRef, fn ChunkFunc) error {
	var buf []byte
	off := int64(0)
	for _, c := range chunks {
		if int64(cap(buf)) < c.Size {
			buf = make([]byte, c.Size)
		}
		b := buf[:c.Size]
		if _, err := r.ReadAt(b, off); err != nil {
			return fmt.Errorf("chunker: read: %w", err)
		}
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != c.SHA256 {
			return fmt.Errorf("chunker: the file changed while it was chunked (chunk at %d)", off)
		}
		if err := fn(c, off, b); err != nil {
			return err
		}
		off += c.Size
	}
	return nil
}
