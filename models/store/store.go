// Package store composes models/blobstore and models/catalog into the
// node's models.Store (and models.ChunkStore): importing local files and
// repository folders, recording cloud manifests, driving versions through
// the state machine, activation and rollback, the boot check, garbage
// collection and materialising a version's files for ONNX Runtime.
//
// On-disk layout under Options.Root:
//
//	catalog.db                     bbolt catalog (layout: package catalog)
//	blobs/sha256/<hex>             committed blobs (package blobstore)
//	ingest/<ref>/data              writes in progress
//	versions/<model>/<version>/    materialised versions: hard links to blobs
//	                               under their manifest paths
//
// Ordering rules that keep a crash (SIGKILL, power loss) harmless:
//   - a blob is committed (fsync, rename, fsync dir) before any catalog
//     record that needs it says Ready, so a Ready version's blobs exist;
//   - a blob that no record references, and an ingest that no record wants,
//     is garbage and GC removes it;
//   - every state change is one bbolt transaction with its outbox report;
//   - GC holds an exclusive lock that imports hold shared, so it never
//     removes a blob an import committed but has not yet recorded.
package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/models/blobstore"
	"github.com/edgeai/edge-node/models/catalog"
)

// VerifyPolicy says how much the boot check reads.
type VerifyPolicy int

const (
	// VerifySize checks that each blob exists with the right size (cheap).
	VerifySize VerifyPolicy = iota
	// VerifyFullActive re-hashes the blobs of Active versions, sizes only
	// for the rest.
	VerifyFullActive
	// VerifyFull re-hashes every blob.
	VerifyFull
)

// Options configures Open.
type Options struct {
	// Root is the store's folder.
	Root string
	// TrustedKeys verify cloud manifests: a models.KeySet, or the node's
	// models.Keyring (configured keys plus the signed key list).
	TrustedKeys models.Keys
	// KeepVersions is how many versions per model GC keeps besides Active,
	// Previous, Canary, serving ones and those still being fetched.
	KeepVersions int
	// Verify is the boot check's policy.
	Verify VerifyPolicy
	// OpenTimeout bounds the wait for the catalog's file lock.
	OpenTimeout time.Duration
	// Chunker, if set, cuts imported files into content-defined chunks so
	// the chunk index knows them (the cloud link supplies its chunker).
	Chunker func(r io.Reader) ([]models.ChunkRef, error)
	// ValidateConfig, if set, checks a version's config.yaml bytes (from
	// an import, the repository folder, or a cloud manifest). The config
	// format is the node's; the store keeps the bytes as they are.
	ValidateConfig func([]byte) error
	// Graphless, if set, says whether a (valid) config describes a model
	// with no graph of its own (an ensemble): its versions are imported
	// without a model file. Unset: every version needs one.
	Graphless func(config []byte) bool
	// Now returns the current time (tests may fix it).
	Now func() time.Time
	// BlobOptions are passed to blobstore.New (fault injection in tests).
	BlobOptions []blobstore.Option
}

// DefaultOptions returns a fresh Options with the defaults for root.
func DefaultOptions(root string) Options {
	return Options{Root: root, KeepVersions: 2, Verify: VerifySize, OpenTimeout: 2 * time.Second, Now: time.Now}
}

// Store is the composed model store. It implements models.Store and
// models.ChunkStore.
type Store struct {
	opts  Options
	log   zerolog.Logger
	blobs *blobstore.Store
	cat   *catalog.Catalog

	// gcMu is held exclusively by GC and shared by imports from the
	// moment they write a blob until its version record is committed.
	gcMu sync.RWMutex

	closeOnce sync.Once
	closeErr  error

	bootFailures *prometheus.CounterVec
	gcRemoved    *prometheus.CounterVec
}

var (
	_ models.Store      = (*Store)(nil)
	_ models.ChunkStore = (*Store)(nil)
)

// Open opens the store at opts.Root, creating it if needed. reg may be nil.
// A catalog held by another process fails after opts.OpenTimeout with an
// error wrapping models.ErrLocked.
func Open(ctx context.Context, opts Options, logger zerolog.Logger, reg prometheus.Registerer) (*Store, error) {
	if opts.Root == "" {
		return nil, fmt.Errorf("store: empty root: %w", models.ErrInvalidArgument)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.KeepVersions < 0 {
		opts.KeepVersions = 0
	}
	s := &Store{
		opts: opts,
		log:  logger.With().Str("component", "modelstore").Logger(),
		bootFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "edge", Subsystem: "modelstore", Name: "boot_check_failures_total",
			Help: "Versions failed by the boot check, by reason.",
		}, []string{"reason"}),
		gcRemoved: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "edge", Subsystem: "modelstore", Name: "gc_removed_total",
			Help: "Things removed by garbage collection, by kind.",
		}, []string{"kind"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{s.bootFailures, s.gcRemoved} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("store metrics: %w", err)
			}
		}
	}
	if err := os.MkdirAll(filepath.Join(opts.Root, "versions"), 0o755); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	var err error
	if s.blobs, err = blobstore.New(opts.Root, logger, reg, opts.BlobOptions...); err != nil {
		return nil, err
	}
	copts := catalog.DefaultOptions()
	if opts.OpenTimeout > 0 {
		copts.Timeout = opts.OpenTimeout
	}
	copts.Now = opts.Now
	if s.cat, err = catalog.Open(ctx, filepath.Join(opts.Root, "catalog.db"), copts, logger, reg); err != nil {
		return nil, err
	}
	return s, nil
}

// Close closes the catalog. It is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.cat.Close() })
	return s.closeErr
}

// Blobs returns the underlying blob store (read-only uses: paths, stats).
func (s *Store) Blobs() *blobstore.Store { return s.blobs }

// Models lists every model with its versions.
func (s *Store) Models(ctx context.Context) ([]models.ModelInfo, error) {
	var out []models.ModelInfo
	err := s.cat.View(ctx, func(tx *catalog.Tx) (err error) {
		out, err = tx.Models()
		return err
	})
	return out, err
}

// Model returns one model.
func (s *Store) Model(ctx context.Context, name string) (models.ModelInfo, error) {
	var mi models.ModelInfo
	err := s.cat.View(ctx, func(tx *catalog.Tx) (err error) {
		mi, err = tx.Model(name)
		return err
	})
	return mi, err
}

// Version returns one version.
func (s *Store) Version(ctx context.Context, model, version string) (models.VersionInfo, error) {
	var v models.VersionInfo
	err := s.cat.View(ctx, func(tx *catalog.Tx) (err error) {
		v, err = tx.Version(model, version)
		return err
	})
	return v, err
}

// Transition moves a version to another state (one transaction).
func (s *Store) Transition(ctx context.Context, model, version string, to models.State, opts models.TransitionOptions) (models.VersionInfo, error) {
	var v models.VersionInfo
	err := s.cat.Update(ctx, func(tx *catalog.Tx) (err error) {
		v, err = tx.Transition(model, version, to, opts)
		return err
	})
	return v, err
}

// Fail moves a version to Failed(reason); if it was Active and Previous is
// Retired, Previous becomes Active in the same transaction.
func (s *Store) Fail(ctx context.Context, model, version string, reason models.Reason, detail string) (models.VersionInfo, error) {
	var v models.VersionInfo
	err := s.cat.Update(ctx, func(tx *catalog.Tx) (err error) {
		v, err = failTx(tx, model, version, reason, detail)
		return err
	})
	return v, err
}

func failTx(tx *catalog.Tx, model, version string, reason models.Reason, detail string) (models.VersionInfo, error) {
	mi, err := tx.Model(model)
	if err != nil {
		return models.VersionInfo{}, err
	}
	v, err := tx.Transition(model, version, models.Failed, models.TransitionOptions{Reason: reason, Detail: detail})
	if err != nil {
		return v, err
	}
	if mi.Active == version && mi.Previous != "" && mi.Previous != version {
		if pv, err := tx.Version(model, mi.Previous); err == nil && pv.State == models.Retired {
			if _, err := tx.Transition(model, mi.Previous, models.Active, models.TransitionOptions{Detail: fmt.Sprintf("rollback: %s failed (%s)", version, reason)}); err != nil {
				return v, err
			}
		}
	}
	return v, nil
}

// RecordTransfer keeps where the bytes of a version's completed transfer
// came from in its record.
func (s *Store) RecordTransfer(ctx context.Context, model, version string, ts models.TransferStats) error {
	return s.cat.Update(ctx, func(tx *catalog.Tx) error {
		v, err := tx.Version(model, version)
		if err != nil {
			return err
		}
		v.Transfer = &ts
		return tx.UpdateVersion(v)
	})
}

// SetOverride records (o non-nil) or clears (nil) a model's override.
func (s *Store) SetOverride(ctx context.Context, model string, o *models.Override) error {
	return s.cat.Update(ctx, func(tx *catalog.Tx) error { return tx.SetOverride(model, o) })
}

// Reports returns pending outbox reports.
func (s *Store) Reports(ctx context.Context, limit int) ([]models.Report, error) {
	var out []models.Report
	err := s.cat.View(ctx, func(tx *catalog.Tx) (err error) {
		out, err = tx.Reports(limit)
		return err
	})
	return out, err
}

// AckReports removes reports up to and including seq upTo.
func (s *Store) AckReports(ctx context.Context, upTo uint64) error {
	return s.cat.Update(ctx, func(tx *catalog.Tx) error { return tx.AckReports(upTo) })
}

// BlobPath returns the path of a stored blob.
func (s *Store) BlobPath(ctx context.Context, digest string) (string, error) {
	if _, err := s.blobs.Stat(digest); err != nil {
		return "", err
	}
	return s.blobs.Path(digest), nil
}

// Delete removes a version's record and its materialised folder; its
// blobs go at the next GC. Serving versions are refused (models.ErrInUse).
func (s *Store) Delete(ctx context.Context, model, version string) error {
	if err := s.cat.Update(ctx, func(tx *catalog.Tx) error { return tx.DeleteVersion(model, version) }); err != nil {
		return err
	}
	if err := os.RemoveAll(s.versionDir(model, version)); err != nil {
		s.log.Warn().Err(err).Str("model", model).Str("version", version).Msg("remove materialised folder")
	}
	return nil
}

func (s *Store) versionDir(model, version string) string {
	return filepath.Join(s.opts.Root, "versions", model, version)
}

// Materialize returns a folder holding the version's files under their
// manifest paths, as hard links to the blobs (a copy if linking fails).
// It is rebuilt if anything in it is missing or stale, and is replaced
// atomically (built beside it, then renamed).
func (s *Store) Materialize(ctx context.Context, model, version string) (string, error) {
	v, err := s.Version(ctx, model, version)
	if err != nil {
		return "", err
	}
	if !v.State.HasBlobs() && v.State != models.Verifying {
		return "", fmt.Errorf("materialise %s/%s: state %s has no verified files: %w", model, version, v.State, models.ErrInvalidArgument)
	}
	dir := s.versionDir(model, version)
	if s.materialised(v, dir) {
		return dir, nil
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", err
	}
	tmp := filepath.Join(parent, ".tmp-"+version+"-"+randHex())
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	for _, f := range v.Manifest.Files {
		src := s.blobs.Path(f.SHA256)
		dst := filepath.Join(tmp, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return "", err
		}
		if err := os.Link(src, dst); err != nil {
			if _, serr := os.Stat(src); serr != nil {
				return "", fmt.Errorf("materialise %s/%s: blob %s: %w", model, version, f.SHA256, models.ErrNotFound)
			}
			if err := copyFile(src, dst); err != nil {
				return "", fmt.Errorf("materialise %s/%s: %w", model, version, err)
			}
		}
	}
	if err := blobstore.SyncDir(tmp); err != nil {
		return "", err
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	return dir, blobstore.SyncDir(parent)
}

func (s *Store) materialised(v models.VersionInfo, dir string) bool {
	for _, f := range v.Manifest.Files {
		a, err := os.Stat(filepath.Join(dir, filepath.FromSlash(f.Path)))
		if err != nil || a.Size() != f.Size {
			return false
		}
		b, err := os.Stat(s.blobs.Path(f.SHA256))
		if err != nil || !os.SameFile(a, b) {
			return false
		}
	}
	return true
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func randHex() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func isNotFound(err error) bool { return errors.Is(err, models.ErrNotFound) }
