// Package blobstore stores model files by sha256 on the local file system,
// in the layout containerd uses for content:
//
//	<root>/blobs/sha256/<hex>    committed blobs, read-only (0444)
//	<root>/ingest/<ref>/data     writes in progress, one folder per ref
//
// A Writer writes into ingest/<ref>/data (sequentially, or at arbitrary
// offsets for chunked transfers), and Commit fsyncs the file, checks its
// size and sha256, renames it into blobs/sha256/<hex> and fsyncs the folder,
// so a blob path that exists always holds complete, verified content (until
// the disk itself corrupts it: see Verify). A crash leaves at most a stale
// ingest folder, which GC removes.
//
// Disk-full errors (ENOSPC, EDQUOT) wrap models.ErrDiskFull, and the ingest
// that hit them is removed so the space is given back at once.
//
// The blob store knows nothing of versions or the catalog; models/store
// decides which blobs are referenced.
package blobstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/models"
)

// Store is a content-addressed blob store rooted at one folder.
type Store struct {
	root  string
	log   zerolog.Logger
	fault func(ref string, off int64, n int) error

	mu     sync.Mutex     // guards active
	active map[string]int // ingest refs with an open Writer in this process

	bytesWritten prometheus.Counter
	commits      prometheus.Counter
	mismatches   prometheus.Counter
	diskFull     prometheus.Counter
}

// Option configures a Store.
type Option func(*Store)

// WithWriteFault installs a hook called before every write to an ingest
// file; a non-nil error is returned as if the write had failed (tests use
// it to inject syscall.ENOSPC).
func WithWriteFault(f func(ref string, off int64, n int) error) Option {
	return func(s *Store) { s.fault = f }
}

// New opens (creating if needed) a blob store at root. reg may be nil.
func New(root string, logger zerolog.Logger, reg prometheus.Registerer, opts ...Option) (*Store, error) {
	s := &Store{
		root:   root,
		log:    logger.With().Str("component", "blobstore").Logger(),
		active: make(map[string]int),
		bytesWritten: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "edge", Subsystem: "blobstore", Name: "written_bytes_total",
			Help: "Bytes written into ingest files.",
		}),
		commits: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "edge", Subsystem: "blobstore", Name: "commits_total",
			Help: "Blobs committed into the store.",
		}),
		mismatches: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "edge", Subsystem: "blobstore", Name: "checksum_mismatches_total",
			Help: "Blobs or ingests whose content did not match their sha256.",
		}),
		diskFull: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "edge", Subsystem: "blobstore", Name: "disk_full_total",
			Help: "Writes that failed with ENOSPC or EDQUOT.",
		}),
	}
	for _, o := range opts {
		o(s)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{s.bytesWritten, s.commits, s.mismatches, s.diskFull} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("blobstore metrics: %w", err)
			}
		}
	}
	for _, d := range []string{filepath.Join(root, "blobs", "sha256"), filepath.Join(root, "ingest")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("blobstore: %w", err)
		}
	}
	return s, nil
}

// Root returns the store's root folder.
func (s *Store) Root() string { return s.root }

// Path returns where the blob with this digest lives (whether or not it
// exists). The digest must be valid.
func (s *Store) Path(digest string) string {
	return filepath.Join(s.root, "blobs", "sha256", digest)
}

// Stat returns the size of a stored blob, or an error wrapping
// models.ErrNotFound.
func (s *Store) Stat(digest string) (int64, error) {
	if err := models.ValidDigest(digest); err != nil {
		return 0, err
	}
	fi, err := os.Stat(s.Path(digest))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("blob %s: %w", digest, models.ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("blob %s: %w", digest, err)
	}
	return fi.Size(), nil
}

// Verify checks a stored blob: its size (if wantSize ≥ 0) and, when full is
// true, its sha256. A bad blob wraps models.ErrChecksumMismatch (it is not
// removed: the caller decides).
func (s *Store) Verify(ctx context.Context, digest string, wantSize int64, full bool) error {
	size, err := s.Stat(digest)
	if err != nil {
		return err
	}
	if wantSize >= 0 && size != wantSize {
		s.mismatches.Inc()
		return fmt.Errorf("blob %s: size %d, want %d: %w", digest, size, wantSize, models.ErrChecksumMismatch)
	}
	if !full {
		return nil
	}
	f, err := os.Open(s.Path(digest))
	if err != nil {
		return fmt.Errorf("blob %s: %w", digest, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, ctxReader{ctx, f}); err != nil {
		return fmt.Errorf("blob %s: %w", digest, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != digest {
		s.mismatches.Inc()
		return fmt.Errorf("blob %s: content hashes to %s: %w", digest, got, models.ErrChecksumMismatch)
	}
	return nil
}

// Delete removes a stored blob. Removing a missing blob is not an error.
func (s *Store) Delete(digest string) error {
	if err := models.ValidDigest(digest); err != nil {
		return err
	}
	if err := os.Remove(s.Path(digest)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete blob %s: %w", digest, err)
	}
	return syncDir(filepath.Join(s.root, "blobs", "sha256"))
}

// Walk calls fn for every stored blob. Files in blobs/sha256 whose names
// are not digests are skipped (and logged).
func (s *Store) Walk(ctx context.Context, fn func(digest string, size int64) error) error {
	ents, err := os.ReadDir(filepath.Join(s.root, "blobs", "sha256"))
	if err != nil {
		return fmt.Errorf("walk blobs: %w", err)
	}
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return err
		}
		if models.ValidDigest(e.Name()) != nil || !e.Type().IsRegular() {
			s.log.Warn().Str("name", e.Name()).Msg("unexpected entry in blobs/sha256")
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("walk blobs: %w", err)
		}
		if err := fn(e.Name(), fi.Size()); err != nil {
			return err
		}
	}
	return nil
}

var refPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// Ingests lists the refs of ingests on disk.
func (s *Store) Ingests() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(s.root, "ingest"))
	if err != nil {
		return nil, fmt.Errorf("list ingests: %w", err)
	}
	refs := make([]string, 0, len(ents))
	for _, e := range ents {
		refs = append(refs, e.Name())
	}
	return refs, nil
}

// IngestActive reports whether a Writer for ref is open in this process.
func (s *Store) IngestActive(ref string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active[ref] > 0
}

// RemoveIngest removes an ingest's folder unless a Writer for it is open
// in this process (then it wraps models.ErrInUse).
func (s *Store) RemoveIngest(ref string) error {
	if s.IngestActive(ref) {
		return fmt.Errorf("ingest %s: %w", ref, models.ErrInUse)
	}
	return s.removeIngest(ref)
}

func (s *Store) removeIngest(ref string) error {
	dir := filepath.Join(s.root, "ingest", ref)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove ingest %s: %w", ref, err)
	}
	return syncDir(filepath.Join(s.root, "ingest"))
}

// Writer writes one blob into the ingest area. Write appends sequentially
// (hashing as it goes); WriteAt writes anywhere (Commit then re-reads the
// file to hash it). A Writer is not safe for concurrent use.
type Writer struct {
	s      *Store
	ref    string
	f      *os.File
	h      hash.Hash // running hash of [0, off) while hashed is true
	hashed bool
	off    int64
	closed bool
}

// Writer opens the ingest ref, creating it or resuming it: a resumed
// sequential ingest continues after the bytes already on disk (Offset).
// Two Writers for the same ref in one process are refused (models.ErrInUse).
func (s *Store) Writer(ctx context.Context, ref string) (*Writer, error) {
	return s.writer(ctx, ref, true)
}

// RandomWriter opens the ingest ref for writes at arbitrary offsets
// (chunked transfers) without re-reading what a resumed ingest holds; the
// caller tracks which ranges are good. Commit hashes the whole file.
func (s *Store) RandomWriter(ctx context.Context, ref string) (*Writer, error) {
	return s.writer(ctx, ref, false)
}

func (s *Store) writer(ctx context.Context, ref string, resume bool) (*Writer, error) {
	if !refPattern.MatchString(ref) {
		return nil, fmt.Errorf("ingest ref %q: want %s: %w", ref, refPattern, models.ErrInvalidArgument)
	}
	s.mu.Lock()
	if s.active[ref] > 0 {
		s.mu.Unlock()
		return nil, fmt.Errorf("ingest %s: already open: %w", ref, models.ErrInUse)
	}
	s.active[ref]++
	s.mu.Unlock()
	w, err := s.openWriter(ctx, ref, resume)
	if err != nil {
		s.release(ref)
		return nil, err
	}
	return w, nil
}

func (s *Store) release(ref string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active[ref]--; s.active[ref] <= 0 {
		delete(s.active, ref)
	}
}

func (s *Store) openWriter(ctx context.Context, ref string, resume bool) (*Writer, error) {
	dir := filepath.Join(s.root, "ingest", ref)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, s.ioErr(ref, "create ingest", err)
	}
	if err := syncDir(filepath.Join(s.root, "ingest")); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "data"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, s.ioErr(ref, "open ingest", err)
	}
	w := &Writer{s: s, ref: ref, f: f, h: sha256.New(), hashed: resume}
	if !resume {
		return w, nil
	}
	// Resume: hash what is already there.
	n, err := io.Copy(w.h, ctxReader{ctx, io.NewSectionReader(f, 0, 1<<62)})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("resume ingest %s: %w", ref, err)
	}
	w.off = n
	return w, nil
}

// Offset returns how many bytes a sequential writer has written (including
// bytes from before a resume).
func (w *Writer) Offset() int64 { return w.off }

// Write appends p.
func (w *Writer) Write(p []byte) (int, error) {
	if w.closed {
		return 0, fmt.Errorf("ingest %s: %w", w.ref, os.ErrClosed)
	}
	if err := w.fault(w.off, len(p)); err != nil {
		return 0, err
	}
	n, err := w.f.WriteAt(p, w.off)
	if w.hashed {
		w.h.Write(p[:n])
	}
	w.off += int64(n)
	w.s.bytesWritten.Add(float64(n))
	if err != nil {
		return n, w.s.ioErr(w.ref, "write", err)
	}
	return n, nil
}

// WriteAt writes p at off. After any WriteAt, Commit re-hashes the file.
func (w *Writer) WriteAt(p []byte, off int64) (int, error) {
	if w.closed {
		return 0, fmt.Errorf("ingest %s: %w", w.ref, os.ErrClosed)
	}
	if off < 0 {
		return 0, fmt.Errorf("ingest %s: offset %d: %w", w.ref, off, models.ErrInvalidArgument)
	}
	if err := w.fault(off, len(p)); err != nil {
		return 0, err
	}
	w.hashed = false
	n, err := w.f.WriteAt(p, off)
	w.s.bytesWritten.Add(float64(n))
	if err != nil {
		return n, w.s.ioErr(w.ref, "write", err)
	}
	return n, nil
}

// ReadAt reads from the ingest file (to check what a resumed ingest holds).
func (w *Writer) ReadAt(p []byte, off int64) (int, error) { return w.f.ReadAt(p, off) }

// Truncate sets the ingest file's size (chunked ingests preallocate it).
func (w *Writer) Truncate(size int64) error {
	if err := w.f.Truncate(size); err != nil {
		return w.s.ioErr(w.ref, "truncate", err)
	}
	w.hashed = false
	return nil
}

func (w *Writer) fault(off int64, n int) error {
	if w.s.fault == nil {
		return nil
	}
	if err := w.s.fault(w.ref, off, n); err != nil {
		return w.s.ioErr(w.ref, "write", err)
	}
	return nil
}

// Sync makes the bytes written so far durable.
func (w *Writer) Sync() error {
	if err := w.f.Sync(); err != nil {
		return w.s.ioErr(w.ref, "fsync", err)
	}
	return nil
}

// Commit checks the ingest's size and sha256 (either may be empty/negative
// to accept whatever was written) and moves it into the store, returning
// the digest. On a mismatch the ingest is removed and the error wraps
// models.ErrChecksumMismatch. If the blob is already stored the ingest is
// simply removed. The Writer is closed afterwards in every case.
func (w *Writer) Commit(ctx context.Context, wantDigest string, wantSize int64) (string, error) {
	if w.closed {
		return "", fmt.Errorf("ingest %s: %w", w.ref, os.ErrClosed)
	}
	defer w.Close()
	s := w.s
	if err := w.Sync(); err != nil {
		w.abortLocked()
		return "", err
	}
	fi, err := w.f.Stat()
	if err != nil {
		return "", fmt.Errorf("ingest %s: %w", w.ref, err)
	}
	if wantSize >= 0 && fi.Size() != wantSize {
		s.mismatches.Inc()
		w.abortLocked()
		return "", fmt.Errorf("ingest %s: %d bytes, want %d: %w", w.ref, fi.Size(), wantSize, models.ErrChecksumMismatch)
	}
	var digest string
	if w.hashed && w.off == fi.Size() {
		digest = hex.EncodeToString(w.h.Sum(nil))
	} else {
		h := sha256.New()
		if _, err := io.Copy(h, ctxReader{ctx, io.NewSectionReader(w.f, 0, fi.Size())}); err != nil {
			return "", fmt.Errorf("ingest %s: hash: %w", w.ref, err)
		}
		digest = hex.EncodeToString(h.Sum(nil))
	}
	if wantDigest != "" && digest != wantDigest {
		s.mismatches.Inc()
		w.abortLocked()
		return "", fmt.Errorf("ingest %s: content hashes to %s, want %s: %w", w.ref, digest, wantDigest, models.ErrChecksumMismatch)
	}
	target := s.Path(digest)
	if _, err := os.Stat(target); err == nil {
		w.abortLocked()
		return digest, nil
	}
	if err := w.f.Chmod(0o444); err != nil {
		return "", fmt.Errorf("ingest %s: %w", w.ref, err)
	}
	src := w.f.Name()
	w.f.Close()
	w.f = nil
	if err := os.Rename(src, target); err != nil {
		return "", fmt.Errorf("commit %s: %w", digest, err)
	}
	if err := syncDir(filepath.Join(s.root, "blobs", "sha256")); err != nil {
		return "", err
	}
	if err := s.removeIngest(w.ref); err != nil {
		return "", err
	}
	s.commits.Inc()
	s.log.Debug().Str("digest", digest).Int64("size", fi.Size()).Msg("blob committed")
	return digest, nil
}

// Abort removes the ingest and closes the Writer.
func (w *Writer) Abort() error {
	if w.closed {
		return nil
	}
	err := w.abortLocked()
	w.Close()
	return err
}

func (w *Writer) abortLocked() error {
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
	return w.s.removeIngest(w.ref)
}

// Close releases the Writer, keeping the ingest on disk for a resume. It
// is idempotent.
func (w *Writer) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	var err error
	if w.f != nil {
		if err = w.f.Sync(); err == nil {
			err = w.f.Close()
		} else {
			w.f.Close()
		}
		w.f = nil
	}
	w.s.release(w.ref)
	if err != nil {
		return w.s.ioErr(w.ref, "close", err)
	}
	return nil
}

// ioErr wraps err, adding models.ErrDiskFull for ENOSPC/EDQUOT (and removing
// the ingest so the space comes back at once).
func (s *Store) ioErr(ref, op string, err error) error {
	if IsDiskFull(err) {
		s.diskFull.Inc()
		if rerr := s.removeIngest(ref); rerr != nil {
			s.log.Error().Err(rerr).Str("ref", ref).Msg("remove ingest after disk full")
		}
		s.log.Warn().Err(err).Str("ref", ref).Msg("disk full; ingest removed")
		return fmt.Errorf("ingest %s: %s: %w: %w", ref, op, models.ErrDiskFull, err)
	}
	return fmt.Errorf("ingest %s: %s: %w", ref, op, err)
}

// IsDiskFull reports whether err is ENOSPC or EDQUOT (or already wraps
// models.ErrDiskFull).
func IsDiskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, models.ErrDiskFull)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// SyncDir fsyncs a folder (exported for models/store's materialised folders).
func SyncDir(dir string) error { return syncDir(dir) }

// ContextReader returns a reader that stops with ctx's error once ctx is
// done (long copies and hashes stay cancellable).
func ContextReader(ctx context.Context, r io.Reader) io.Reader { return ctxReader{ctx, r} }

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
