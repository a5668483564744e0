package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/models/blobstore"
	"github.com/edgeai/edge-node/models/catalog"
	"github.com/edgeai/edge-node/models/repository"
)

// Import copies local files into the store and records the version as
// Ready. The same content again is a no-op; other content under an existing
// version is models.ErrExists, unless that version is Failed, which the
// import replaces (this is how a Failed(DiskFull) import is retried). Disk
// full while copying records the version Failed(DiskFull) (if it was not
// recorded yet), removes the ingest and returns an error wrapping
// models.ErrDiskFull.
func (s *Store) Import(ctx context.Context, req models.ImportRequest) (models.VersionInfo, error) {
	if err := models.ValidModelName(req.Model); err != nil {
		return models.VersionInfo{}, err
	}
	if err := models.ValidVersion(req.Version); err != nil {
		return models.VersionInfo{}, err
	}
	if len(req.Config) > models.MaxConfigBytes {
		return models.VersionInfo{}, fmt.Errorf("import %s/%s: config too big: %w", req.Model, req.Version, models.ErrInvalidArgument)
	}
	if s.opts.ValidateConfig != nil && len(req.Config) > 0 {
		if err := s.opts.ValidateConfig(req.Config); err != nil {
			return models.VersionInfo{}, fmt.Errorf("import %s/%s: %w", req.Model, req.Version, err)
		}
	}
	type src struct{ path, name, role string }
	var srcs []src
	if req.ModelFile == "" && (s.opts.Graphless == nil || !s.opts.Graphless(req.Config)) {
		return models.VersionInfo{}, fmt.Errorf("import %s/%s: no model file (only a model whose config says it has no graph of its own, an ensemble, may have none): %w", req.Model, req.Version, models.ErrInvalidArgument)
	}
	if req.ModelFile != "" {
		srcs = append(srcs, src{req.ModelFile, "model.onnx", models.RoleModel})
	}
	for _, p := range req.ExtraFiles {
		srcs = append(srcs, src{p, filepath.Base(p), models.RoleExternalData})
	}
	m := models.Manifest{Protocol: models.ManifestProtocol, Model: req.Model, Version: req.Version,
		Created: s.opts.Now().UTC().Format("2006-01-02T15:04:05Z07:00"), Config: string(req.Config)}
	for _, f := range srcs {
		if err := models.ValidFilePath(f.name); err != nil {
			return models.VersionInfo{}, fmt.Errorf("import %s/%s: %w", req.Model, req.Version, err)
		}
		m.Files = append(m.Files, models.FileRef{Path: f.name, Role: f.role})
	}

	// Fast path: already imported with the same sizes? Compare digests
	// after hashing below; this only avoids copying when sizes differ.
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	for i, f := range srcs {
		ref := importRef(req.Model, req.Version, f.name)
		digest, size, err := s.ingestFile(ctx, ref, f.path)
		if err != nil {
			if errors.Is(err, models.ErrDiskFull) {
				s.recordImportFailure(ctx, m, models.ReasonDiskFull, err)
			}
			return models.VersionInfo{}, fmt.Errorf("import %s/%s: %s: %w", req.Model, req.Version, f.path, err)
		}
		m.Files[i].SHA256, m.Files[i].Size = digest, size
		if s.opts.Chunker != nil {
			if m.Files[i].Chunks, err = s.chunkBlob(digest); err != nil {
				return models.VersionInfo{}, fmt.Errorf("import %s/%s: chunking %s: %w", req.Model, req.Version, f.path, err)
			}
		}
	}
	if err := m.Validate(); err != nil {
		return models.VersionInfo{}, fmt.Errorf("import: %w", err)
	}
	var out models.VersionInfo
	err := s.cat.Update(ctx, func(tx *catalog.Tx) error {
		old, err := tx.Version(req.Model, req.Version)
		switch {
		case err == nil && sameFiles(old.Manifest.Files, m.Files) && old.State != models.Failed:
			out = old
			return nil
		case err == nil && old.State == models.Failed:
			if err := tx.DeleteVersion(req.Model, req.Version); err != nil {
				return err
			}
		case err == nil:
			return fmt.Errorf("import %s/%s: version exists with other content (%s): %w", req.Model, req.Version, old.State, models.ErrExists)
		case !isNotFound(err):
			return err
		}
		for _, f := range m.Files {
			if err := tx.IndexChunks(f); err != nil {
				return err
			}
		}
		out, err = tx.CreateVersion(models.VersionInfo{Model: req.Model, Version: req.Version, State: models.Ready, Source: "import", Manifest: m})
		return err
	})
	if err == nil {
		s.log.Info().Str("model", req.Model).Str("version", req.Version).Str("state", string(out.State)).Msg("imported")
	}
	return out, err
}

func (s *Store) recordImportFailure(ctx context.Context, m models.Manifest, reason models.Reason, cause error) {
	err := s.cat.Update(context.WithoutCancel(ctx), func(tx *catalog.Tx) error {
		_, err := tx.Version(m.Model, m.Version)
		if err == nil || !isNotFound(err) {
			return err // already recorded: leave it
		}
		_, err = tx.CreateVersion(models.VersionInfo{Model: m.Model, Version: m.Version, State: models.Failed,
			Reason: reason, Detail: cause.Error(), Source: "import", Manifest: m})
		return err
	})
	if err != nil {
		s.log.Error().Err(err).Str("model", m.Model).Str("version", m.Version).Msg("record import failure")
	}
}

func sameFiles(a, b []models.FileRef) bool {
	return slices.EqualFunc(a, b, func(x, y models.FileRef) bool {
		return x.Path == y.Path && x.SHA256 == y.SHA256 && x.Size == y.Size
	})
}

func importRef(model, version, name string) string {
	h := sha256.Sum256([]byte(model + "\x00" + version + "\x00" + name))
	return "import-" + hex.EncodeToString(h[:16])
}

// ingestFile copies path into the blob store, hashing on the way.
func (s *Store) ingestFile(ctx context.Context, ref, path string) (string, int64, error) {
	in, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return "", 0, err
	}
	if !fi.Mode().IsRegular() {
		return "", 0, fmt.Errorf("not a regular file: %w", models.ErrInvalidArgument)
	}
	if fi.Size() > models.MaxFileSize {
		return "", 0, fmt.Errorf("%d bytes (max %d): %w", fi.Size(), int64(models.MaxFileSize), models.ErrInvalidArgument)
	}
	w, err := s.blobs.Writer(ctx, ref)
	if err != nil {
		return "", 0, err
	}
	defer w.Close()
	// A leftover ingest from an interrupted import: resume only if its bytes
	// are a prefix of this file's size, else start over.
	if w.Offset() > fi.Size() {
		if err := w.Truncate(0); err != nil {
			return "", 0, err
		}
		w.Close()
		if w, err = s.blobs.Writer(ctx, ref); err != nil {
			return "", 0, err
		}
		defer w.Close()
	}
	if _, err := in.Seek(w.Offset(), io.SeekStart); err != nil {
		return "", 0, err
	}
	buf := make([]byte, 1<<20)
	if _, err := io.CopyBuffer(onlyWriter{w}, blobstore.ContextReader(ctx, in), buf); err != nil {
		return "", 0, err
	}
	digest, err := w.Commit(ctx, "", fi.Size())
	if err != nil {
		return "", 0, err
	}
	return digest, fi.Size(), nil
}

// onlyWriter hides ReaderFrom/WriterTo so io.CopyBuffer uses our buffer and
// our Write (which hashes).
type onlyWriter struct{ w io.Writer }

func (o onlyWriter) Write(p []byte) (int, error) { return o.w.Write(p) }

func (s *Store) chunkBlob(digest string) ([]models.ChunkRef, error) {
	f, err := os.Open(s.blobs.Path(digest))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return s.opts.Chunker(f)
}

// RepositoryResult is what ImportRepository did.
type RepositoryResult struct {
	Imported []models.VersionInfo
	// Problems are the repository's own problems (see repository.Scan)
	// plus versions that could not be imported.
	Problems []repository.Problem
}

// ImportRepository imports every version of a Triton-style repository
// folder (see package repository). Versions already imported with the same
// content are no-ops; a bad folder or file is a Problem, not an error.
func (s *Store) ImportRepository(ctx context.Context, dir string) (RepositoryResult, error) {
	var res RepositoryResult
	scan, err := repository.Scan(dir, s.opts.ValidateConfig, s.opts.Graphless)
	if err != nil {
		return res, err
	}
	res.Problems = scan.Problems
	for _, p := range scan.Problems {
		s.log.Warn().Str("path", p.Path).Err(p.Err).Msg("model repository: skipped")
	}
	for _, e := range scan.Entries {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		v, err := s.Import(ctx, models.ImportRequest{Model: e.Name, Version: e.Version, ModelFile: e.ModelFile, ExtraFiles: e.ExtraFiles, Config: e.Config})
		if err != nil {
			s.log.Warn().Err(err).Str("model", e.Name).Str("version", e.Version).Msg("model repository: import failed")
			res.Problems = append(res.Problems, repository.Problem{Path: e.Dir, Err: err})
			continue
		}
		res.Imported = append(res.Imported, v)
	}
	return res, nil
}

// LatestReady returns the highest version (models.CompareVersions) of a
// model that is Ready, for a node that has no Active version yet.
func LatestReady(mi models.ModelInfo) (string, bool) {
	best := ""
	for _, v := range mi.Versions {
		if v.State == models.Ready && (best == "" || models.CompareVersions(v.Version, best) > 0) {
			best = v.Version
		}
	}
	return best, best != ""
}
