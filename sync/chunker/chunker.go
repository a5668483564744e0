// Package chunker cuts model files into content-defined chunks (FastCDC) named
// by sha256, the unit of weight transfer in docs/protocol.md. Split cuts any
// stream; SplitModel (the publisher's and the node's import chunking) first
// cuts an ONNX model at the edges of its tensors' data (model.go).
//
// The cut points come from github.com/PlakarKorp/go-cdc-chunkers (algorithm
// "fastcdc-v1.0.0"), a maintained FastCDC implementation with normalized
// chunking and reference tests. The publisher and the node's import index
// must cut alike: changing the parameters below, or a library change that
// moves cut points, does not break correctness (manifests list their chunks)
// but defeats deduplication between versions chunked before and after;
// TestGoldenCutPoints and the tests of SplitModel pin them.
package chunker

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	cdc "github.com/PlakarKorp/go-cdc-chunkers"
	_ "github.com/PlakarKorp/go-cdc-chunkers/chunkers/fastcdc" // registers the algorithm

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/wire"
)

// Chunking parameters of Split.
const (
	Algorithm  = "fastcdc-v1.0.0"
	MinSize    = 64 << 10
	NormalSize = 256 << 10
	MaxSize    = 768 << 10
)

func init() {
	if MaxSize > wire.MaxChunkBytes {
		panic("chunker: MaxSize exceeds wire.MaxChunkBytes")
	}
}

// ChunkFunc is called for each chunk in file order. data aliases the
// chunker's buffer and is valid only during the call.
type ChunkFunc func(c models.ChunkRef, offset int64, data []byte) error

// Split reads r to the end, calls fn for every chunk, and returns the sha256
// and size of the whole stream and its chunk list. fn may be nil.
func Split(r io.Reader, fn ChunkFunc) (sha string, size int64, chunks []models.ChunkRef, err error) {
	ch, err := cdc.NewChunker(Algorithm, r, &cdc.ChunkerOpts{MinSize: MinSize, NormalSize: NormalSize, MaxSize: MaxSize})
	if err != nil {
		return "", 0, nil, fmt.Errorf("chunker: %w", err)
	}
	whole := sha256.New()
	for {
		data, nerr := ch.Next()
		if nerr != nil && !errors.Is(nerr, io.EOF) {
			return "", 0, nil, fmt.Errorf("chunker: read: %w", nerr)
		}
		if len(data) > 0 {
			sum := sha256.Sum256(data)
			c := models.ChunkRef{SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data))}
			whole.Write(data)
			if fn != nil {
				if err := fn(c, size, data); err != nil {
					return "", 0, nil, err
				}
			}
			chunks = append(chunks, c)
			size += int64(len(data))
		}
		if errors.Is(nerr, io.EOF) {
			break
		}
	}
	return hex.EncodeToString(whole.Sum(nil)), size, chunks, nil
}

// File chunks the file at path with SplitModel and returns its FileRef,
// named name in the manifest with the given role. fn may be nil.
func File(path, name, role string, fn ChunkFunc) (models.FileRef, error) {
	f, err := os.Open(path)
	if err != nil {
		return models.FileRef{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return models.FileRef{}, err
	}
	sha, chunks, err := SplitModel(f, fi.Size(), fn)
	if err != nil {
		return models.FileRef{}, fmt.Errorf("%s: %w", path, err)
	}
	return models.FileRef{Path: name, Role: role, SHA256: sha, Size: fi.Size(), Chunks: chunks}, nil
}
