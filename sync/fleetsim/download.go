package fleetsim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"sync"
	"time"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/fleet"
	"github.com/edgeai/edge-node/sync/transfer"
)

// download fetches version v of model for real: the retained signed
// manifest (verified with Config.Keys), then every chunk from the broker
// through the node's own transfer.Fetcher (the node's data-plane code),
// into a sink that hashes each file as its bytes arrive and keeps none. It
// returns the failure reason the real node would report, or "" when every
// file verified. While no manifest is retained it reports
// Waiting(ManifestNotPublished) and looks again, as the node does (report
// sets the state the node reports).
func (n *node) download(ctx context.Context, model, v string, report func(state, reason string) bool) (reason string, ok bool) {
	cfg := n.f.cfg
	var m models.Manifest
	for waited := false; ; waited = true {
		got, found, err := fleet.ReadManifest(ctx, n.link, cfg.Topics, model, v, cfg.Keys, 300*time.Millisecond)
		if ctx.Err() != nil {
			return "", false
		}
		if err != nil {
			if errors.Is(err, models.ErrSignatureInvalid) {
				return "SignatureInvalid", true
			}
			return "InvalidManifest", true
		}
		if found {
			if waited && !report("Downloading", "") {
				return "", false
			}
			m = got
			break
		}
		if !waited && !report("Waiting", "ManifestNotPublished") {
			return "", false
		}
		t := time.NewTimer(2 * time.Second)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return "", false
		}
	}
	res, err := n.fetcher.Fetch(ctx, m, nil)
	n.f.downloadBytes.Add(res.BytesNetwork)
	switch {
	case ctx.Err() != nil:
		return "", false
	case errors.Is(err, transfer.ErrChecksumMismatch):
		return "ChecksumMismatch", true
	case errors.Is(err, transfer.ErrStalled):
		return "TransferStalled", true
	case err != nil:
		return "InvalidManifest", true
	}
	return "", true
}

// hashSink is a transfer.ChunkSink that stores nothing: it hashes each
// file's bytes in file order as the Fetcher writes them (chunks that arrive
// ahead of their turn wait in memory, at most the Fetcher's window), and
// Commit checks the file's sha256 and size. A simulated node so verifies
// what it downloads at the cost of a hash, not of a model store.
type hashSink struct {
	mu      sync.Mutex
	ingests map[string]*ingest
}

type ingest struct {
	size, next int64
	h          hash.Hash
	ahead      map[int64][]byte
}

func newHashSink() *hashSink { return &hashSink{ingests: map[string]*ingest{}} }

func (s *hashSink) HasBlob(context.Context, string) (bool, error) { return false, nil }

// Begin starts each ingest afresh: nothing survives a simulated node's
// attempt, so an interrupted one is fetched again in full.
func (s *hashSink) Begin(_ context.Context, f models.FileRef) (map[int64]bool, error) {
	s.mu.Lock()
	s.ingests[f.SHA256] = &ingest{size: f.Size, h: sha256.New(), ahead: map[int64][]byte{}}
	s.mu.Unlock()
	return nil, nil
}

func (s *hashSink) LocalChunk(context.Context, string) ([]byte, bool, error) { return nil, false, nil }

func (s *hashSink) WriteChunk(_ context.Context, blob string, offset int64, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	in, ok := s.ingests[blob]
	if !ok {
		return fmt.Errorf("fleetsim: chunk of %s before its ingest began", blob)
	}
	if offset != in.next {
		if offset > in.next {
			in.ahead[offset] = append([]byte(nil), data...)
		}
		return nil
	}
	for {
		in.h.Write(data)
		in.next += int64(len(data))
		next, ok := in.ahead[in.next]
		if !ok {
			return nil
		}
		delete(in.ahead, in.next)
		data = next
	}
}

func (s *hashSink) Commit(_ context.Context, blob string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	in, ok := s.ingests[blob]
	delete(s.ingests, blob)
	if !ok || in.next != in.size || hex.EncodeToString(in.h.Sum(nil)) != blob {
		return fmt.Errorf("fleetsim: blob %s: %w", blob, transfer.ErrChecksumMismatch)
	}
	return nil
}
