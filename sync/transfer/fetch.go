// Package transfer moves model weights over the cloud link as content-defined
// chunks (docs/protocol.md, "Chunks and weight transfer"): the node-side
// Fetcher subscribes, a window at a time, to the retained chunk topics of the
// chunks no stored version already has, verifies each chunk and each whole
// file, and resumes from the store's record of written chunks after any
// disconnect or restart. The cloud side (publishing) is sync/fleet.
package transfer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/mqttlink"
	"github.com/edgeai/edge-node/sync/wire"
)

// ErrUnsatisfiable is wrapped by a Fetch that no publisher can complete:
// the manifest's chunk list cannot describe its files (it fails
// models.Manifest.Validate, or lists no chunks for a non-empty file), a
// chunk whose bytes verify against its sha256 has another size than the
// manifest says (the sha256 fixes the bytes, so no copy can fit), or the
// broker's retained copy of a chunk, re-sent on a re-subscription, is bytes
// of another size that do not verify. It wraps ErrChecksumMismatch, so a
// caller that fails a version on a checksum mismatch fails these too,
// without retrying.
var ErrUnsatisfiable = fmt.Errorf("manifest cannot be satisfied: %w", ErrChecksumMismatch)

// ErrStalled is wrapped by a Fetch that made no progress for
// Config.StallTimeout while the link was connected: a chunk that is not
// published (or whose retained copy is wrong but of the right size, which a
// republish can repair). It is not a checksum error: what was written stays
// in the sink and a later Fetch resumes; the caller decides how many stalled
// attempts a version gets.
var ErrStalled = errors.New("transfer stalled")

// Link is what the Fetcher needs from the MQTT session (*mqttlink.Link).
type Link interface {
	Subscribe(ctx context.Context, h mqttlink.Handler, filters ...string) error
	Unsubscribe(ctx context.Context, filters ...string) error
	HandleUnmatched(filter string, h mqttlink.Handler)
	// Connected returns a channel closed while the session is up; a fresh
	// one is handed out after each disconnect. Time without a session does
	// not count towards StallTimeout.
	Connected() <-chan struct{}
}

// Config configures a Fetcher.
type Config struct {
	Topics wire.Topics
	// Window is how many chunk topics are subscribed at once (default 16).
	Window int
	// StallTimeout: when no wanted chunk arrived for half of it while
	// connected, the window is re-subscribed, which makes the broker re-send
	// the retained chunks; when none arrived for all of it, the Fetch ends
	// with ErrStalled (or ErrUnsatisfiable, when what the re-subscription
	// brought was a wrong copy of another size). Default 15s.
	StallTimeout time.Duration
	// DownloadRate bounds the chunk bytes the Fetcher asks the broker for,
	// in bytes per second over all its Fetches (0: unlimited). A chunk is
	// subscribed only once a token bucket holds its size, so the broker never
	// sends faster than this in the long run; the bucket holds at most one
	// chunk of wire.MaxChunkBytes (the burst), and it starts full.
	DownloadRate int64
	// FetchWindow is the daily window of local time in which chunks are
	// asked for (the zero value: always). Outside it a Fetch subscribes no
	// chunk and reports Progress.OutsideWindow; the chunks it had
	// subscribed when the window ended still arrive and are written.
	FetchWindow FetchWindow
	// Now and After are the clock the download budget is measured and
	// waited on (default time.Now and time.After); tests pass a simulated
	// one.
	Now   func() time.Time
	After func(time.Duration) <-chan time.Time
}

// Progress is reported after every chunk.
type Progress struct {
	Model, Version          string
	BytesDone, BytesTotal   int64
	ChunksDone, ChunksTotal int
	// OutsideWindow: the Fetch waits for Config.FetchWindow to open
	// before it asks for more chunks (a progress report is made each time
	// this changes).
	OutsideWindow bool
}

// Result says where the bytes of one Fetch came from.
type Result struct {
	Files         int   // files in the manifest
	FilesStored   int   // already stored before the fetch
	ChunksNetwork int   // chunks received from the broker and written
	BytesNetwork  int64 // their bytes
	ChunksLocal   int   // copied from blobs already stored (dedup)
	BytesLocal    int64
	ChunksResumed int // already written by an earlier, interrupted attempt
	BytesResumed  int64
	Duplicates    int // chunk messages received again after being written
	Resubscribes  int // window re-subscriptions after StallTimeout/2 without progress
	BytesTotal    int64
	UniqueMissing int // distinct chunks that had to come from the network
}

type placement struct {
	blob   string
	offset int64
}

// Fetcher downloads manifests' chunks into a ChunkSink. Fetches run
// concurrently (one per model being fetched: a stuck transfer never holds
// up another); a chunk message goes to every Fetch that wants it, and a
// chunk topic stays subscribed while any Fetch wants it. Two Fetches that
// need the same file take turns on it: the second finds it stored.
type Fetcher struct {
	cfg  Config
	link Link
	sink ChunkSink
	rej  *wire.Rejecter
	log  zerolog.Logger

	bytes  *prometheus.CounterVec
	chunks *prometheus.CounterVec
	// budget is the download rate limit (Config.DownloadRate), shared by
	// all Fetches; nil when unlimited. rate.Limiter is safe for concurrent
	// use.
	budget *rate.Limiter

	mu     sync.Mutex               // guards the fields below
	active map[*fetchState]struct{} // the Fetches past their set-up
	subs   map[string]int           // chunk topic → Fetches subscribed to it
	blobs  map[string]chan struct{} // file sha256 → closed when the Fetch assembling it ends
	stale  sync.Map                 // chunk topics already being unsubscribed
}

// fetchState is one Fetch's bookkeeping.
type fetchState struct {
	ctx context.Context // the Fetch's: bounds the sink writes of chunk handlers
	// claimed are the file blobs this Fetch assembles (guarded by the
	// Fetcher's mu): file sha256 → the channel closed when it lets go.
	claimed map[string]chan struct{}

	mu        sync.Mutex             // guards the fields below
	wanted    map[string][]placement // chunk sha -> where it goes; deleted once written
	sizes     map[string]int64       // chunk sha -> its size in the manifest (set before the Fetch is visible to handlers)
	wrongCopy map[string]int         // chunk sha -> size of the last delivery that did not verify, since the last (re-)subscription
	remaining map[string]int         // blob -> chunks still to write
	res       Result
	done      int64
	nDone     int
	got       map[string]bool // chunk sha -> written from the network
	err       error           // first write error, or the ErrUnsatisfiable a handler found
	arrived   chan string     // written chunks; capacity: distinct missing chunks + 1
	failed    chan struct{}   // signalled (capacity 1, never blocking) when err is set
}

// NewFetcher builds a Fetcher. rej counts and logs rejected chunk messages.
func NewFetcher(cfg Config, link Link, sink ChunkSink, rej *wire.Rejecter, log zerolog.Logger, reg prometheus.Registerer) (*Fetcher, error) {
	if cfg.Topics.Root == "" {
		cfg.Topics.Root = wire.DefaultRoot
	}
	if cfg.Window <= 0 {
		cfg.Window = 16
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = 15 * time.Second
	}
	if cfg.DownloadRate < 0 {
		return nil, fmt.Errorf("transfer: download rate %d bytes/s is negative", cfg.DownloadRate)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	f := &Fetcher{
		cfg: cfg, link: link, sink: sink, rej: rej,
		active: map[*fetchState]struct{}{}, subs: map[string]int{}, blobs: map[string]chan struct{}{},
		log: log.With().Str("component", "transfer").Logger(),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edge_transfer_bytes_total",
			Help: "Model bytes placed by transfers, by source (network, local, resumed)."}, []string{"source"}),
		chunks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edge_transfer_chunks_total",
			Help: "Chunks placed by transfers, by source (network, local, resumed, duplicate)."}, []string{"source"}),
	}
	if cfg.DownloadRate > 0 {
		f.budget = rate.NewLimiter(rate.Limit(cfg.DownloadRate), wire.MaxChunkBytes)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{f.bytes, f.chunks} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	// Chunk messages for subscriptions this process did not make (a
	// persistent session from before a restart) still land here.
	link.HandleUnmatched(cfg.Topics.Chunk("+"), f.onChunk)
	return f, nil
}

// Fetch makes every file of m present and verified in the sink. It returns
// when all files are committed; with an error wrapping ErrUnsatisfiable (a
// manifest no publisher can complete), ErrChecksumMismatch (a file whose
// chunks do not hash to it), or ErrStalled (no progress for StallTimeout
// while connected); on a write error; or when ctx ends. Progress so far is
// kept by the sink; a later Fetch resumes.
func (f *Fetcher) Fetch(ctx context.Context, m models.Manifest, progress func(Progress)) (Result, error) {
	if err := checkChunkLists(m); err != nil {
		return Result{Files: len(m.Files)}, err
	}
	st := &fetchState{ctx: ctx, claimed: map[string]chan struct{}{}, wanted: map[string][]placement{}, sizes: map[string]int64{}, wrongCopy: map[string]int{},
		remaining: map[string]int{}, got: map[string]bool{}, failed: make(chan struct{}, 1)}
	st.res.Files = len(m.Files)
	defer f.releaseBlobs(st)
	var order []string // missing chunks, first occurrence order
	var commitNow []string
	for _, file := range m.Files {
		st.res.BytesTotal += file.Size
		ok, err := f.claimBlob(ctx, st, file.SHA256)
		if err != nil {
			return st.result(), err
		}
		if ok {
			st.res.FilesStored++
			st.done += file.Size
			continue
		}
		if _, dup := st.remaining[file.SHA256]; dup {
			st.done += file.Size // same content twice in one version
			continue
		}
		written, err := f.sink.Begin(ctx, file)
		if err != nil {
			return st.result(), fmt.Errorf("transfer: begin %s: %w", file.Path, err)
		}
		n := 0
		var off int64
		for _, c := range file.Chunks {
			switch {
			case written[off]:
				st.res.ChunksResumed++
				st.res.BytesResumed += c.Size
				st.done += c.Size
			default:
				data, ok, err := f.sink.LocalChunk(ctx, c.SHA256)
				if err != nil {
					return st.result(), err
				}
				if ok {
					if int64(len(data)) != c.Size {
						// The store verified these bytes against the sha256.
						return st.result(), fmt.Errorf("transfer: %w: file %s: chunk %s at %d: the manifest says %d bytes, the chunk (stored, verified) is %d",
							ErrUnsatisfiable, file.Path, c.SHA256[:16], off, c.Size, len(data))
					}
					if err := f.sink.WriteChunk(ctx, file.SHA256, off, data); err != nil {
						return st.result(), fmt.Errorf("transfer: local copy into %s: %w", file.Path, err)
					}
					st.res.ChunksLocal++
					st.res.BytesLocal += c.Size
					st.done += c.Size
					break
				}
				if _, seen := st.wanted[c.SHA256]; !seen {
					order = append(order, c.SHA256)
				}
				st.wanted[c.SHA256] = append(st.wanted[c.SHA256], placement{file.SHA256, off})
				st.sizes[c.SHA256] = c.Size
				n++
			}
			off += c.Size
		}
		st.remaining[file.SHA256] = n
		if n == 0 {
			commitNow = append(commitNow, file.SHA256)
		}
	}
	f.bytes.WithLabelValues("local").Add(float64(st.res.BytesLocal))
	f.bytes.WithLabelValues("resumed").Add(float64(st.res.BytesResumed))
	f.chunks.WithLabelValues("local").Add(float64(st.res.ChunksLocal))
	f.chunks.WithLabelValues("resumed").Add(float64(st.res.ChunksResumed))
	st.res.UniqueMissing = len(order)
	st.arrived = make(chan string, len(order)+1)
	total := 0
	for _, file := range m.Files {
		total += len(file.Chunks)
	}
	st.nDone = st.res.ChunksLocal + st.res.ChunksResumed
	outside := false // waiting for Config.FetchWindow (only this goroutine reports)
	report := func() {
		if progress != nil {
			st.mu.Lock()
			p := Progress{Model: m.Model, Version: m.Version, BytesDone: st.done, BytesTotal: st.res.BytesTotal,
				ChunksDone: st.nDone, ChunksTotal: total, OutsideWindow: outside}
			st.mu.Unlock()
			progress(p)
		}
	}
	report()
	for _, b := range commitNow {
		if err := f.sink.Commit(ctx, b); err != nil {
			return st.result(), fmt.Errorf("transfer: commit %s: %w", b, err)
		}
		f.releaseBlobs(st, b)
		st.remaining[b] = -1
	}
	if len(order) == 0 {
		return st.result(), nil
	}
	f.log.Info().Str("model", m.Model).Str("version", m.Version).Int("chunks_missing", len(order)).
		Int("chunks_local", st.res.ChunksLocal).Int("chunks_resumed", st.res.ChunksResumed).Msg("fetching")

	toCommit := len(st.remaining) - len(commitNow)
	f.mu.Lock()
	f.active[st] = struct{}{}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.active, st)
		f.mu.Unlock()
	}()

	inflight := map[string]bool{}
	topics := func() []string {
		var ts []string
		for sha := range inflight {
			ts = append(ts, f.cfg.Topics.Chunk(sha))
		}
		return ts
	}
	defer func() {
		if ts := topics(); len(ts) > 0 {
			uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			f.unsubscribe(uctx, ts...)
			cancel()
		}
	}()
	next := 0
	committed := 0
	// The download budget (Config.DownloadRate): order[next] is subscribed
	// only once the bucket holds its bytes. pending is its reservation,
	// made once and kept across loop turns; waitBudget fires when it is
	// due. A reservation not used is handed back.
	var pending *rate.Reservation
	var waitBudget <-chan time.Time
	// The fetch window (Config.FetchWindow): outside it no chunk is
	// subscribed, so a transfer running at its end pauses at a chunk
	// boundary; waitWindow fires when it opens again.
	var waitWindow <-chan time.Time
	defer func() {
		if pending != nil {
			pending.CancelAt(f.cfg.Now())
		}
	}()
	// Stall detection: a quiet interval is StallTimeout/2 without a wanted
	// chunk. It counts only if one session was up for all of it (time
	// offline is not a stall; after a reconnect the link re-subscribes
	// everything itself). The first quiet interval re-subscribes the
	// window; the second ends the Fetch.
	half := max(f.cfg.StallTimeout/2, time.Millisecond)
	quiet := time.NewTimer(half)
	defer quiet.Stop()
	session := f.link.Connected()
	upAtStart := isClosed(session)
	resubscribed := false
	restart := func() {
		session = f.link.Connected()
		upAtStart = isClosed(session)
		quiet.Reset(half)
	}
	for committed < toCommit {
		// Fill the window.
		var add []string
		var budgetDelay time.Duration // until the bucket holds order[next]'s bytes
		wasEmpty := len(inflight) == 0
		if waitWindow == nil && waitBudget == nil && len(inflight) < f.cfg.Window && next < len(order) {
			now := f.cfg.Now()
			open, opens := f.cfg.FetchWindow.Open(now)
			if !open {
				waitWindow = f.cfg.After(opens.Sub(now))
			}
			if outside != !open {
				outside = !open
				f.log.Info().Str("model", m.Model).Str("version", m.Version).Bool("outside", outside).
					Str("fetch_window", f.cfg.FetchWindow.String()).Msg("fetch window")
				report()
			}
		}
		for waitWindow == nil && waitBudget == nil && len(inflight) < f.cfg.Window && next < len(order) {
			if f.budget != nil {
				now := f.cfg.Now()
				if pending == nil {
					pending = f.budget.ReserveN(now, int(min(st.sizes[order[next]], wire.MaxChunkBytes)))
				}
				if budgetDelay = pending.DelayFrom(now); budgetDelay > 0 {
					break
				}
				pending = nil
			}
			inflight[order[next]] = true
			add = append(add, f.cfg.Topics.Chunk(order[next]))
			next++
		}
		if len(add) > 0 {
			if err := f.subscribe(ctx, add...); err != nil && ctx.Err() == nil {
				// Not fatal: the link restores it on reconnect; the stall timer retries.
				f.log.Debug().Err(err).Msg("subscribe chunks")
			}
			if wasEmpty {
				// Nothing was asked for while the window was empty (waiting
				// for the budget or the fetch window): the quiet interval
				// starts now.
				resubscribed = false
				restart()
			}
		}
		if budgetDelay > 0 {
			waitBudget = f.cfg.After(budgetDelay)
		}
		select {
		case <-ctx.Done():
			return st.result(), ctx.Err()
		case <-waitBudget:
			waitBudget = nil
		case <-waitWindow:
			waitWindow = nil
		case <-st.failed:
			st.mu.Lock()
			err := st.err
			st.mu.Unlock()
			return st.result(), err
		case <-quiet.C:
			if len(inflight) == 0 {
				// Every chunk asked for arrived; the next waits for the
				// download budget or the fetch window. That is not a stall.
				resubscribed = false
				restart()
				continue
			}
			if now := f.link.Connected(); !upAtStart || now != session || !isClosed(now) {
				resubscribed = false // the link was down for some of it
				restart()
				continue
			}
			if resubscribed {
				return st.result(), st.stallError(inflight, f.cfg.StallTimeout)
			}
			resubscribed = true
			st.mu.Lock()
			st.res.Resubscribes++
			for sha := range inflight {
				delete(st.wrongCopy, sha) // judge the copies the re-subscription brings
			}
			st.mu.Unlock()
			if ts := topics(); len(ts) > 0 {
				f.log.Info().Int("chunks", len(ts)).Msg("no chunk for a while: re-subscribing the window")
				// Subscribing again (not counted) makes the broker re-send the
				// retained chunks.
				if err := f.link.Subscribe(ctx, f.onChunk, ts...); err != nil && ctx.Err() == nil {
					f.log.Debug().Err(err).Msg("re-subscribe chunks")
				}
			}
			restart()
		case sha := <-st.arrived:
			st.mu.Lock()
			err := st.err
			st.mu.Unlock()
			if err != nil {
				return st.result(), err
			}
			resubscribed = false
			restart()
			delete(inflight, sha)
			f.unsubscribe(ctx, f.cfg.Topics.Chunk(sha))
			report()
			// Commit blobs whose last chunk this was.
			st.mu.Lock()
			var ready []string
			for b, n := range st.remaining {
				if n == 0 {
					ready = append(ready, b)
					st.remaining[b] = -1
				}
			}
			st.mu.Unlock()
			for _, b := range ready {
				if err := f.sink.Commit(ctx, b); err != nil {
					return st.result(), fmt.Errorf("transfer: commit %s: %w", b, err)
				}
				f.releaseBlobs(st, b)
				committed++
			}
		}
	}
	return st.result(), nil
}

// checkChunkLists refuses, before any work, a manifest whose chunk lists
// cannot describe its files. The link's decoder (wire.ValidateManifest)
// refuses these too; this guards callers that hand the Fetcher a manifest
// from elsewhere.
func checkChunkLists(m models.Manifest) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("transfer: %w: %w", ErrUnsatisfiable, err)
	}
	for _, f := range m.Files {
		if len(f.Chunks) == 0 && f.Size > 0 {
			return fmt.Errorf("transfer: %w: file %s of %d bytes lists no chunks", ErrUnsatisfiable, f.Path, f.Size)
		}
	}
	return nil
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// stallError says why a Fetch stalled: ErrUnsatisfiable when what the
// re-subscription brought for a chunk of the window was bytes of another
// size than the manifest's that do not verify; ErrStalled otherwise.
func (st *fetchState) stallError(inflight map[string]bool, timeout time.Duration) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	missing := make([]string, 0, len(inflight))
	for sha := range inflight {
		missing = append(missing, sha)
	}
	slices.Sort(missing)
	for _, sha := range missing {
		if n, ok := st.wrongCopy[sha]; ok && int64(n) != st.sizes[sha] {
			return fmt.Errorf("transfer: %w: the broker's copy of chunk %s is %d bytes that do not hash to it; the manifest says %d",
				ErrUnsatisfiable, sha[:16], n, st.sizes[sha])
		}
	}
	first := ""
	if len(missing) > 0 {
		first = missing[0][:16]
	}
	return fmt.Errorf("%w: no wanted chunk for %s while connected, after re-subscribing; %d chunks of the window missing (%s…)",
		ErrStalled, timeout, len(missing), first)
}

// onChunk handles one chunk message (runs on the link's handler goroutines).
func (f *Fetcher) onChunk(topic string, payload []byte) {
	sha, err := f.cfg.Topics.ParseChunk(topic)
	if err != nil {
		f.rej.Observe(topic, err)
		return
	}
	if len(payload) == 0 {
		return // a retained chunk being deleted by the cloud
	}
	f.mu.Lock()
	sts := make([]*fetchState, 0, len(f.active))
	for st := range f.active {
		sts = append(sts, st)
	}
	f.mu.Unlock()
	wanted, duplicate := false, false
	for _, st := range sts {
		st.mu.Lock()
		w, d := len(st.wanted[sha]) > 0, st.got[sha]
		st.mu.Unlock()
		if w {
			wanted = true
			f.place(st, topic, sha, payload)
		} else if d {
			duplicate = true
			st.mu.Lock()
			st.res.Duplicates++
			st.mu.Unlock()
		}
	}
	if !wanted {
		if duplicate {
			f.chunks.WithLabelValues("duplicate").Inc()
			return
		}
		f.rej.Observe(topic, wire.Reject(wire.KindChunk, wire.ReasonUnsolicitedChunk, "chunk %s is not wanted by any transfer", sha[:16]))
		// A leftover subscription of a persistent session: drop it (unless
		// a Fetch holds the topic: a late copy of a chunk it just got).
		f.mu.Lock()
		held := f.subs[topic] > 0
		f.mu.Unlock()
		if held {
			return
		}
		if _, busy := f.stale.LoadOrStore(topic, true); !busy {
			go func() {
				defer f.stale.Delete(topic)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_ = f.link.Unsubscribe(ctx, topic)
			}()
		}
	}
}

// place writes one verified-by-name chunk message into one Fetch that
// wants it.
func (f *Fetcher) place(st *fetchState, topic, sha string, payload []byte) {
	size := st.sizes[sha] // written before st was published under f.mu; read-only since
	if err := wire.CheckChunk(sha, payload); err != nil {
		f.rej.Observe(topic, err)
		st.mu.Lock()
		st.wrongCopy[sha] = len(payload)
		st.mu.Unlock()
		return
	}
	if int64(len(payload)) != size {
		// The bytes are the chunk (they hash to its name), so the manifest's
		// size is wrong: no copy can ever fit.
		f.rej.Observe(topic, wire.Reject(wire.KindChunk, wire.ReasonChunkSize, "chunk %s is %d bytes, the manifest says %d", sha[:16], len(payload), size))
		st.fail(fmt.Errorf("transfer: %w: chunk %s is %d bytes (its sha256 verifies), the manifest says %d", ErrUnsatisfiable, sha[:16], len(payload), size))
		return
	}
	st.mu.Lock()
	places := st.wanted[sha]
	delete(st.wanted, sha) // claim it: a concurrent duplicate becomes a no-op
	st.mu.Unlock()
	if len(places) == 0 {
		st.mu.Lock()
		st.res.Duplicates++
		st.mu.Unlock()
		return
	}
	var werr error
	for _, p := range places {
		if err := f.sink.WriteChunk(st.ctx, p.blob, p.offset, payload); err != nil {
			werr = fmt.Errorf("transfer: write chunk %s: %w", sha[:16], err)
			break
		}
	}
	st.mu.Lock()
	if werr != nil {
		st.wanted[sha] = places // let a retry have it
	} else {
		st.got[sha] = true
		st.res.ChunksNetwork++
		st.res.BytesNetwork += int64(len(payload))
		st.done += int64(len(payload)) * int64(len(places))
		st.nDone += len(places)
		for _, p := range places {
			st.remaining[p.blob]--
		}
	}
	st.mu.Unlock()
	if werr != nil {
		st.fail(werr)
		return
	}
	f.bytes.WithLabelValues("network").Add(float64(len(payload)))
	f.chunks.WithLabelValues("network").Inc()
	f.log.Debug().Str("chunk", sha).Int("bytes", len(payload)).Msg("chunk stored")
	st.arrived <- sha // at most once per distinct chunk: fits the capacity
}

// subscribe subscribes the chunk topics for one Fetch: the broker is asked
// for each topic no other Fetch holds.
func (f *Fetcher) subscribe(ctx context.Context, topics ...string) error {
	f.mu.Lock()
	var fresh []string
	for _, t := range topics {
		if f.subs[t]++; f.subs[t] == 1 {
			fresh = append(fresh, t)
		}
	}
	f.mu.Unlock()
	if len(fresh) == 0 {
		return nil
	}
	return f.link.Subscribe(ctx, f.onChunk, fresh...)
}

// unsubscribe drops one Fetch's hold on the chunk topics; the broker is
// told for each topic no Fetch holds any more.
func (f *Fetcher) unsubscribe(ctx context.Context, topics ...string) {
	f.mu.Lock()
	var gone []string
	for _, t := range topics {
		if f.subs[t]--; f.subs[t] <= 0 {
			delete(f.subs, t)
			gone = append(gone, t)
		}
	}
	f.mu.Unlock()
	if len(gone) == 0 {
		return
	}
	if err := f.link.Unsubscribe(ctx, gone...); err != nil && ctx.Err() == nil {
		f.log.Debug().Err(err).Msg("unsubscribe chunks")
	}
}

// claimBlob reports whether the file blob is stored; if not, it makes st
// the only Fetch assembling it (two versions may share a file), waiting
// while another Fetch assembles it — that one commits it, or gives it up
// when it ends. A blob st already claimed (the same file twice in one
// manifest) is not stored and not claimed again.
func (f *Fetcher) claimBlob(ctx context.Context, st *fetchState, blob string) (stored bool, err error) {
	for {
		ok, err := f.sink.HasBlob(ctx, blob)
		if err != nil || ok {
			return ok, err
		}
		f.mu.Lock()
		if _, mine := st.claimed[blob]; mine {
			f.mu.Unlock()
			return false, nil
		}
		busy, held := f.blobs[blob]
		if !held {
			ch := make(chan struct{})
			f.blobs[blob], st.claimed[blob] = ch, ch
			f.mu.Unlock()
			return false, nil
		}
		f.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

// releaseBlobs gives up st's claims on blobs (all of them when none is
// named), waking the Fetches waiting for them.
func (f *Fetcher) releaseBlobs(st *fetchState, blobs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(blobs) == 0 {
		for b := range st.claimed {
			blobs = append(blobs, b)
		}
	}
	for _, b := range blobs {
		ch, ok := st.claimed[b]
		if !ok {
			continue
		}
		delete(st.claimed, b)
		if f.blobs[b] == ch {
			delete(f.blobs, b)
		}
		close(ch)
	}
}

// fail records the Fetch's first error and wakes it; one signal is
// enough, and a handler never blocks on it.
func (st *fetchState) fail(err error) {
	st.mu.Lock()
	if st.err == nil {
		st.err = err
	}
	st.mu.Unlock()
	select {
	case st.failed <- struct{}{}:
	default:
	}
}

func (st *fetchState) result() Result {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.res
}
