// Package catalog keeps the model store's catalog in a bbolt file: models,
// their versions and version states, the chunk index, chunked-ingest
// progress and the outbox of reports for the cloud.
//
// # Bucket layout (schema version 2)
//
//	meta                         schema   → uint64 big-endian: the schema version
//	                             desired/<source> → uint64 big-endian: the generation accepted
//	                             keylist  → the signed key list held, as received
//	models/<name>/               one bucket per model
//	    active                   → version string (absent: none)
//	    canary                   → version string
//	    previous                 → version string: the rollback target
//	    override                 → JSON models.Override: a local admin decision that holds
//	                               the model against desired state (absent: none)
//	    versions/<version>       → JSON models.VersionInfo (manifest, state, reason,
//	                               timestamps, provider, warm-up, history)
//	chunks/<chunk sha256 hex>    → JSON models.ChunkLocation: a stored blob holding the chunk
//	ingests/<blob sha256 hex>    → JSON IngestRecord: a chunked blob being assembled and
//	                               the byte ranges already written and verified
//	outbox/<uint64 big-endian>   → JSON models.Report, in bucket-sequence order
//	rollouts/<model name>        → JSON models.Rollout: the model's latest rollout and
//	                               its decisions (schema 2)
//
// Every state transition is one write transaction (bbolt fsyncs on commit),
// and writes its outbox report in that same transaction, so a report is
// never lost or sent for a change that did not happen.
//
// # Schema and migrations
//
// Open runs the migrations in order from the stored schema version up to
// SchemaVersion, each in its own transaction that also bumps meta/schema. A
// file with a newer schema than this binary knows is refused rather than
// misread.
//
// # Locking
//
// bbolt takes an exclusive flock on the file. Without a timeout a second
// process would block in Open for ever; Open uses Options.Timeout and turns
// bbolt's timeout into an error wrapping models.ErrLocked that says so.
package catalog

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/edgeai/edge-node/models"
)

// SchemaVersion is the catalog schema this code writes.
const SchemaVersion = 2

var (
	bucketMeta     = []byte("meta")
	bucketModels   = []byte("models")
	bucketVersions = []byte("versions")
	bucketChunks   = []byte("chunks")
	bucketIngests  = []byte("ingests")
	bucketOutbox   = []byte("outbox")
	bucketRollouts = []byte("rollouts")

	keySchema   = []byte("schema")
	keyActive   = []byte("active")
	keyCanary   = []byte("canary")
	keyPrevious = []byte("previous")
	keyOverride = []byte("override")
)

// migrations[i] moves the schema from version i to i+1.
var migrations = []func(tx *bolt.Tx) error{
	// 0 → 1: the initial layout.
	func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketModels, bucketChunks, bucketIngests, bucketOutbox} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	},
	// 1 → 2: rollout records.
	func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketRollouts)
		return err
	},
}

// Options configures Open.
type Options struct {
	// Timeout bounds how long Open waits for the file lock held by another
	// process.
	Timeout time.Duration
	// MaxOutbox is the most reports kept; older ones are dropped (and
	// counted) when the cloud has been away that long.
	MaxOutbox int
	// HistoryLimit is how many state changes each version keeps.
	HistoryLimit int
	// Now returns the current time (tests may fix it).
	Now func() time.Time
}

// DefaultOptions returns a fresh Options with the defaults.
func DefaultOptions() Options {
	return Options{Timeout: 2 * time.Second, MaxOutbox: 10000, HistoryLimit: 16, Now: time.Now}
}

// Catalog is an open catalog file.
type Catalog struct {
	db   *bolt.DB
	opts Options
	log  zerolog.Logger

	transitions *prometheus.CounterVec
	dropped     prometheus.Counter
}

// Open opens (creating if needed) the catalog at path and migrates it.
// reg may be nil.
func Open(ctx context.Context, path string, opts Options, logger zerolog.Logger, reg prometheus.Registerer) (*Catalog, error) {
	def := DefaultOptions()
	if opts.Timeout <= 0 {
		opts.Timeout = def.Timeout
	}
	if opts.MaxOutbox <= 0 {
		opts.MaxOutbox = def.MaxOutbox
	}
	if opts.HistoryLimit <= 0 {
		opts.HistoryLimit = def.HistoryLimit
	}
	if opts.Now == nil {
		opts.Now = def.Now
	}
	c := &Catalog{
		opts: opts,
		log:  logger.With().Str("component", "catalog").Logger(),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "edge", Subsystem: "catalog", Name: "transitions_total",
			Help: "Version state transitions committed, by target state.",
		}, []string{"to"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "edge", Subsystem: "catalog", Name: "outbox_dropped_total",
			Help: "Outbox reports dropped because the outbox was full.",
		}),
	}
	if reg != nil {
		for _, col := range []prometheus.Collector{c.transitions, c.dropped} {
			if err := reg.Register(col); err != nil {
				return nil, fmt.Errorf("catalog metrics: %w", err)
			}
		}
	}
	// The timeout matters: bbolt's flock would otherwise block for ever
	// when another process (a second edge-node, or `edge-node models
	// import` while the daemon runs) has the file open.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.Timeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open catalog %s: no lock after %s (is another edge-node running?): %w", path, opts.Timeout, models.ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open catalog %s: %w", path, err)
	}
	c.db = db
	if err := c.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return c, nil
}

func (c *Catalog) migrate(ctx context.Context) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		done := false
		err := c.db.Update(func(tx *bolt.Tx) error {
			meta, err := tx.CreateBucketIfNotExists(bucketMeta)
			if err != nil {
				return err
			}
			var v uint64
			if b := meta.Get(keySchema); b != nil {
				if len(b) != 8 {
					return fmt.Errorf("catalog: meta/schema is %d bytes", len(b))
				}
				v = binary.BigEndian.Uint64(b)
			}
			if v > SchemaVersion {
				return fmt.Errorf("catalog schema %d is newer than this binary's %d: %w", v, SchemaVersion, models.ErrInvalidArgument)
			}
			if v == SchemaVersion {
				done = true
				return nil
			}
			if err := migrations[v](tx); err != nil {
				return fmt.Errorf("catalog migration %d → %d: %w", v, v+1, err)
			}
			c.log.Info().Uint64("from", v).Uint64("to", v+1).Msg("catalog migrated")
			return meta.Put(keySchema, u64(v+1))
		})
		if err != nil || done {
			return err
		}
	}
}

// Close closes the file. It is idempotent.
func (c *Catalog) Close() error {
	if c == nil || c.db == nil {
		return nil
	}
	err := c.db.Close()
	c.db = nil
	return err
}

// Path returns the catalog file's path.
func (c *Catalog) Path() string { return c.db.Path() }

// Schema returns the stored schema version.
func (c *Catalog) Schema() (uint64, error) {
	var v uint64
	err := c.db.View(func(tx *bolt.Tx) error {
		v = binary.BigEndian.Uint64(tx.Bucket(bucketMeta).Get(keySchema))
		return nil
	})
	return v, err
}

// View runs fn in a read transaction.
func (c *Catalog) View(ctx context.Context, fn func(*Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.db == nil {
		return models.ErrClosed
	}
	return c.db.View(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx, c: c}) })
}

// Update runs fn in one write transaction (committed, and fsync'd, only if
// fn returns nil).
func (c *Catalog) Update(ctx context.Context, fn func(*Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.db == nil {
		return models.ErrClosed
	}
	var counted []models.State
	err := c.db.Update(func(tx *bolt.Tx) error {
		t := &Tx{tx: tx, c: c}
		if err := fn(t); err != nil {
			return err
		}
		counted = t.transitions
		return nil
	})
	if err == nil {
		for _, s := range counted {
			c.transitions.WithLabelValues(string(s)).Inc()
		}
	}
	return err
}

// Tx is a catalog transaction. Its methods must not be used after the
// function given to View or Update returns.
type Tx struct {
	tx          *bolt.Tx
	c           *Catalog
	transitions []models.State
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

func (t *Tx) modelBucket(name string, create bool) (*bolt.Bucket, error) {
	ms := t.tx.Bucket(bucketModels)
	if b := ms.Bucket([]byte(name)); b != nil {
		return b, nil
	}
	if !create {
		return nil, fmt.Errorf("model %s: %w", name, models.ErrNotFound)
	}
	if err := models.ValidModelName(name); err != nil {
		return nil, err
	}
	b, err := ms.CreateBucket([]byte(name))
	if err != nil {
		return nil, err
	}
	if _, err := b.CreateBucket(bucketVersions); err != nil {
		return nil, err
	}
	return b, nil
}

// Version returns one version.
func (t *Tx) Version(model, version string) (models.VersionInfo, error) {
	mb, err := t.modelBucket(model, false)
	if err != nil {
		return models.VersionInfo{}, err
	}
	return getVersion(mb, model, version)
}

func getVersion(mb *bolt.Bucket, model, version string) (models.VersionInfo, error) {
	var v models.VersionInfo
	b := mb.Bucket(bucketVersions).Get([]byte(version))
	if b == nil {
		return v, fmt.Errorf("model %s version %s: %w", model, version, models.ErrNotFound)
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("model %s version %s: corrupt record: %w", model, version, err)
	}
	return v, nil
}

func putVersion(mb *bolt.Bucket, v models.VersionInfo) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return mb.Bucket(bucketVersions).Put([]byte(v.Version), b)
}

// Model returns a model with its pointers and versions (sorted by
// creation time, then version).
func (t *Tx) Model(name string) (models.ModelInfo, error) {
	mb, err := t.modelBucket(name, false)
	if err != nil {
		return models.ModelInfo{}, err
	}
	mi := models.ModelInfo{
		Name:     name,
		Active:   string(mb.Get(keyActive)),
		Canary:   string(mb.Get(keyCanary)),
		Previous: string(mb.Get(keyPrevious)),
	}
	if b := mb.Get(keyOverride); b != nil {
		var o models.Override
		if err := json.Unmarshal(b, &o); err != nil {
			return mi, fmt.Errorf("model %s: corrupt override: %w", name, err)
		}
		mi.Override = &o
	}
	err = mb.Bucket(bucketVersions).ForEach(func(k, b []byte) error {
		var v models.VersionInfo
		if err := json.Unmarshal(b, &v); err != nil {
			return fmt.Errorf("model %s version %s: corrupt record: %w", name, k, err)
		}
		mi.Versions = append(mi.Versions, v)
		return nil
	})
	sort.SliceStable(mi.Versions, func(i, j int) bool {
		a, b := mi.Versions[i], mi.Versions[j]
		if !a.Created.Equal(b.Created) {
			return a.Created.Before(b.Created)
		}
		return a.Version < b.Version
	})
	return mi, err
}

// Models returns every model, sorted by name.
func (t *Tx) Models() ([]models.ModelInfo, error) {
	var out []models.ModelInfo
	err := t.tx.Bucket(bucketModels).ForEachBucket(func(k []byte) error {
		mi, err := t.Model(string(k))
		if err != nil {
			return err
		}
		out = append(out, mi)
		return nil
	})
	return out, err
}

// CreateVersion records a new version in v.State (Announced for the cloud
// path, Ready for imports, Failed for a manifest that did not verify). It
// fails with models.ErrExists if the version is already recorded.
func (t *Tx) CreateVersion(v models.VersionInfo) (models.VersionInfo, error) {
	if err := models.ValidVersion(v.Version); err != nil {
		return v, err
	}
	if !v.State.Valid() {
		return v, fmt.Errorf("create version: state %q: %w", v.State, models.ErrInvalidArgument)
	}
	mb, err := t.modelBucket(v.Model, true)
	if err != nil {
		return v, err
	}
	if mb.Bucket(bucketVersions).Get([]byte(v.Version)) != nil {
		return v, fmt.Errorf("model %s version %s: %w", v.Model, v.Version, models.ErrExists)
	}
	now := t.c.opts.Now().UTC()
	v.Created, v.Updated = now, now
	v.History = []models.StateChange{{To: v.State, Reason: v.Reason, At: now}}
	if err := putVersion(mb, v); err != nil {
		return v, err
	}
	t.transitions = append(t.transitions, v.State)
	return v, t.report(models.Report{At: now, Model: v.Model, Version: v.Version, To: v.State, Reason: v.Reason, Detail: v.Detail})
}

// Transition moves a version to another state, keeping the model's
// pointers in step:
//
//   - → Active: the old Active (if any) becomes Retired and Previous; the
//     Canary pointer is cleared if it named this version.
//   - → Canary: the Canary pointer names this version (an older canary is
//     Retired).
//   - leaving Active or Canary clears that pointer; → Failed clears every
//     pointer naming the version (a failed version is no rollback target).
//   - Active → Retired (a retire without replacement) makes it Previous.
//
// Each moved version gets a history entry and an outbox report.
func (t *Tx) Transition(model, version string, to models.State, opts models.TransitionOptions) (models.VersionInfo, error) {
	mb, err := t.modelBucket(model, false)
	if err != nil {
		return models.VersionInfo{}, err
	}
	v, err := getVersion(mb, model, version)
	if err != nil {
		return v, err
	}
	if err := models.CheckTransition(v.State, to, opts.Reason); err != nil {
		var te *models.TransitionError
		if errors.As(err, &te) {
			te.Model, te.Version = model, version
		}
		return v, err
	}
	switch to {
	case models.Active:
		if old := string(mb.Get(keyActive)); old != "" && old != version {
			if _, err := t.move(mb, model, old, models.Retired, models.TransitionOptions{Detail: "replaced by " + version}); err != nil {
				return v, err
			}
			if err := mb.Put(keyPrevious, []byte(old)); err != nil {
				return v, err
			}
		} else if string(mb.Get(keyPrevious)) == version {
			if err := mb.Delete(keyPrevious); err != nil {
				return v, err
			}
		}
		if err := mb.Put(keyActive, []byte(version)); err != nil {
			return v, err
		}
		if string(mb.Get(keyCanary)) == version {
			if err := mb.Delete(keyCanary); err != nil {
				return v, err
			}
		}
	case models.Canary:
		if old := string(mb.Get(keyCanary)); old != "" && old != version {
			if _, err := t.move(mb, model, old, models.Retired, models.TransitionOptions{Detail: "replaced as canary by " + version}); err != nil {
				return v, err
			}
		}
		if err := mb.Put(keyCanary, []byte(version)); err != nil {
			return v, err
		}
	}
	return t.move(mb, model, version, to, opts)
}

// move applies one (already checked) state change and its pointer
// clean-up for the version that leaves a state.
func (t *Tx) move(mb *bolt.Bucket, model, version string, to models.State, opts models.TransitionOptions) (models.VersionInfo, error) {
	v, err := getVersion(mb, model, version)
	if err != nil {
		return v, err
	}
	if err := models.CheckTransition(v.State, to, opts.Reason); err != nil {
		return v, fmt.Errorf("model %s version %s: %w", model, version, err)
	}
	from := v.State
	for _, k := range [][]byte{keyActive, keyCanary, keyPrevious} {
		if string(mb.Get(k)) != version {
			continue
		}
		clear := to == models.Failed ||
			(string(k) == string(keyActive) && to != models.Active) ||
			(string(k) == string(keyCanary) && to != models.Canary)
		if clear {
			if err := mb.Delete(k); err != nil {
				return v, err
			}
		}
	}
	if from == models.Active && to == models.Retired && string(mb.Get(keyActive)) == "" {
		if err := mb.Put(keyPrevious, []byte(version)); err != nil {
			return v, err
		}
	}
	now := t.c.opts.Now().UTC()
	v.State, v.Reason, v.Updated = to, opts.Reason, now
	if opts.Detail != "" || to == models.Failed {
		v.Detail = opts.Detail
	}
	if opts.Provider != "" {
		v.Provider = opts.Provider
	}
	if opts.Warmup != nil {
		w := *opts.Warmup
		v.Warmup = &w
	}
	v.History = append(v.History, models.StateChange{From: from, To: to, Reason: opts.Reason, At: now})
	if n := len(v.History) - t.c.opts.HistoryLimit; n > 0 {
		v.History = slices.Delete(v.History, 0, n)
	}
	if err := putVersion(mb, v); err != nil {
		return v, err
	}
	t.transitions = append(t.transitions, to)
	return v, t.report(models.Report{At: now, Model: model, Version: version, From: from, To: to, Reason: opts.Reason, Detail: opts.Detail})
}

// UpdateVersion rewrites a version's record in place, for fields that are
// not part of the state machine (a manifest's file digests learned during
// an import). The state must not change.
func (t *Tx) UpdateVersion(v models.VersionInfo) error {
	mb, err := t.modelBucket(v.Model, false)
	if err != nil {
		return err
	}
	old, err := getVersion(mb, v.Model, v.Version)
	if err != nil {
		return err
	}
	if old.State != v.State {
		return fmt.Errorf("update version %s/%s: state %s → %s outside Transition: %w", v.Model, v.Version, old.State, v.State, models.ErrInvalidTransition)
	}
	v.Updated = t.c.opts.Now().UTC()
	return putVersion(mb, v)
}

// DeleteVersion removes a version's record. It refuses (models.ErrInUse) a
// serving version or the model's Active or Canary.
func (t *Tx) DeleteVersion(model, version string) error {
	mb, err := t.modelBucket(model, false)
	if err != nil {
		return err
	}
	v, err := getVersion(mb, model, version)
	if err != nil {
		return err
	}
	if v.State.Serving() || string(mb.Get(keyActive)) == version || string(mb.Get(keyCanary)) == version {
		return fmt.Errorf("delete model %s version %s (%s): %w", model, version, v.State, models.ErrInUse)
	}
	if string(mb.Get(keyPrevious)) == version {
		if err := mb.Delete(keyPrevious); err != nil {
			return err
		}
	}
	return mb.Bucket(bucketVersions).Delete([]byte(version))
}

// SetOverride records o as the model's override (nil clears it), creating
// the model record if needed.
func (t *Tx) SetOverride(model string, o *models.Override) error {
	mb, err := t.modelBucket(model, true)
	if err != nil {
		return err
	}
	if o == nil {
		return mb.Delete(keyOverride)
	}
	b, err := json.Marshal(o)
	if err != nil {
		return err
	}
	return mb.Put(keyOverride, b)
}

func (t *Tx) report(r models.Report) error {
	ob := t.tx.Bucket(bucketOutbox)
	seq, err := ob.NextSequence()
	if err != nil {
		return err
	}
	r.Seq = seq
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := ob.Put(u64(seq), b); err != nil {
		return err
	}
	if max := uint64(t.c.opts.MaxOutbox); seq > max {
		old := u64(seq - max)
		if ob.Get(old) != nil {
			t.c.dropped.Inc()
			return ob.Delete(old)
		}
	}
	return nil
}

// Reports returns up to limit pending reports, oldest first.
func (t *Tx) Reports(limit int) ([]models.Report, error) {
	var out []models.Report
	c := t.tx.Bucket(bucketOutbox).Cursor()
	for k, b := c.First(); k != nil && (limit <= 0 || len(out) < limit); k, b = c.Next() {
		var r models.Report
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("outbox %x: corrupt report: %w", k, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// AckReports deletes reports with Seq ≤ upTo.
func (t *Tx) AckReports(upTo uint64) error {
	c := t.tx.Bucket(bucketOutbox).Cursor()
	for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= upTo; k, _ = c.First() {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// IndexChunks records where each of a stored file's chunks lives (the
// first blob to hold a chunk keeps the entry).
func (t *Tx) IndexChunks(f models.FileRef) error {
	cb := t.tx.Bucket(bucketChunks)
	var off int64
	for _, ch := range f.Chunks {
		if cb.Get([]byte(ch.SHA256)) == nil {
			b, err := json.Marshal(models.ChunkLocation{Chunk: ch.SHA256, Blob: f.SHA256, Offset: off, Size: ch.Size})
			if err != nil {
				return err
			}
			if err := cb.Put([]byte(ch.SHA256), b); err != nil {
				return err
			}
		}
		off += ch.Size
	}
	return nil
}

// LookupChunk returns where a chunk lives, or models.ErrNotFound.
func (t *Tx) LookupChunk(chunk string) (models.ChunkLocation, error) {
	var loc models.ChunkLocation
	b := t.tx.Bucket(bucketChunks).Get([]byte(chunk))
	if b == nil {
		return loc, fmt.Errorf("chunk %s: %w", chunk, models.ErrNotFound)
	}
	if err := json.Unmarshal(b, &loc); err != nil {
		return loc, fmt.Errorf("chunk %s: corrupt entry: %w", chunk, err)
	}
	return loc, nil
}

// UnindexBlob removes every chunk entry that points into blob.
func (t *Tx) UnindexBlob(blob string) error {
	c := t.tx.Bucket(bucketChunks).Cursor()
	for k, b := c.First(); k != nil; {
		var loc models.ChunkLocation
		if err := json.Unmarshal(b, &loc); err != nil || loc.Blob == blob {
			if err := c.Delete(); err != nil {
				return err
			}
			k, b = c.Seek(k)
			continue
		}
		k, b = c.Next()
	}
	return nil
}

// IngestRecord is the durable progress of a chunked blob ingest.
type IngestRecord struct {
	Blob    string         `json:"blob"`
	Size    int64          `json:"size"`
	Done    []models.Range `json:"done"` // sorted, merged
	Started time.Time      `json:"started"`
}

// PutIngest stores an ingest record.
func (t *Tx) PutIngest(r IngestRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return t.tx.Bucket(bucketIngests).Put([]byte(r.Blob), b)
}

// Ingest returns an ingest record, or models.ErrNotFound.
func (t *Tx) Ingest(blob string) (IngestRecord, error) {
	var r IngestRecord
	b := t.tx.Bucket(bucketIngests).Get([]byte(blob))
	if b == nil {
		return r, fmt.Errorf("ingest %s: %w", blob, models.ErrNotFound)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("ingest %s: corrupt record: %w", blob, err)
	}
	return r, nil
}

// DeleteIngest removes an ingest record.
func (t *Tx) DeleteIngest(blob string) error {
	return t.tx.Bucket(bucketIngests).Delete([]byte(blob))
}

// Ingests returns every ingest record.
func (t *Tx) Ingests() ([]IngestRecord, error) {
	var out []IngestRecord
	err := t.tx.Bucket(bucketIngests).ForEach(func(k, b []byte) error {
		var r IngestRecord
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("ingest %s: corrupt record: %w", k, err)
		}
		out = append(out, r)
		return nil
	})
	return out, err
}

// AddRange merges [start, end) into a sorted, merged range list.
func AddRange(rs []models.Range, start, end int64) []models.Range {
	rs = append(rs, models.Range{Start: start, End: end})
	sort.Slice(rs, func(i, j int) bool { return rs[i].Start < rs[j].Start })
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if r.Start <= last.End {
			last.End = max(last.End, r.End)
		} else {
			out = append(out, r)
		}
	}
	return out
}

// Covered reports whether [start, end) lies inside the merged list rs.
func Covered(rs []models.Range, start, end int64) bool {
	for _, r := range rs {
		if r.Start <= start && end <= r.End {
			return true
		}
	}
	return false
}

// Gaps returns the parts of [0, size) not covered by the merged list rs.
func Gaps(rs []models.Range, size int64) []models.Range {
	var out []models.Range
	var pos int64
	for _, r := range rs {
		if r.Start > pos {
			out = append(out, models.Range{Start: pos, End: min(r.Start, size)})
		}
		pos = max(pos, r.End)
	}
	if pos < size {
		out = append(out, models.Range{Start: pos, End: size})
	}
	return out
}

// Rollout returns a model's latest rollout, or models.ErrNotFound.
func (t *Tx) Rollout(model string) (models.Rollout, error) {
	var r models.Rollout
	b := t.tx.Bucket(bucketRollouts).Get([]byte(model))
	if b == nil {
		return r, fmt.Errorf("rollout of model %s: %w", model, models.ErrNotFound)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("rollout of model %s: corrupt record: %w", model, err)
	}
	return r, nil
}

// Rollouts returns every model's latest rollout, by model name.
func (t *Tx) Rollouts() ([]models.Rollout, error) {
	var out []models.Rollout
	err := t.tx.Bucket(bucketRollouts).ForEach(func(k, b []byte) error {
		var r models.Rollout
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("rollout of model %s: corrupt record: %w", k, err)
		}
		out = append(out, r)
		return nil
	})
	return out, err
}

// PutRollout appends d to r (keeping the last models.MaxDecisions), sets
// its phase, stores it as the model's latest rollout and writes the
// decision's outbox report; state is the candidate's state to report.
func (t *Tx) PutRollout(r models.Rollout, phase models.RolloutPhase, d models.Decision, state models.State) (models.Rollout, error) {
	now := t.c.opts.Now().UTC()
	if d.At.IsZero() {
		d.At = now
	}
	r.Phase, r.Updated = phase, now
	if r.Started.IsZero() {
		r.Started = now
	}
	r.Decisions = append(r.Decisions, d)
	if n := len(r.Decisions) - models.MaxDecisions; n > 0 {
		r.Decisions = slices.Delete(r.Decisions, 0, n)
	}
	b, err := json.Marshal(r)
	if err != nil {
		return r, err
	}
	if err := t.tx.Bucket(bucketRollouts).Put([]byte(r.Model), b); err != nil {
		return r, err
	}
	return r, t.report(models.Report{At: d.At, Model: r.Model, Version: r.Version, To: state,
		Detail: d.Reason, Event: d.Event, Phase: phase, Figures: d.Figures})
}
