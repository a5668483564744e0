package pinned

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Mode is how the pool's buffers are backed.
type Mode int

const (
	// Plain: page-aligned memory, not locked.
	Plain Mode = iota
	// Mlock: page-aligned memory locked with mlock.
	Mlock
	// CUDAHost: page-locked memory from cudaHostAlloc.
	CUDAHost
)

// String returns the mode's name as it appears in logs and metrics.
func (m Mode) String() string {
	switch m {
	case Plain:
		return "plain"
	case Mlock:
		return "mlock"
	case CUDAHost:
		return "cuda_host"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

var allModes = []Mode{Plain, Mlock, CUDAHost}

// Sentinel errors; errors from this package wrap one of them.
var (
	// ErrExhausted: the budget stayed full for MaxWait (or until the
	// context was done), or C memory could not be allocated. Retry later:
	// HTTP 503 with Retry-After.
	ErrExhausted = errors.New("pinned: buffer pool exhausted")
	// ErrTooLarge: the request exceeds MaxClass or the whole budget;
	// waiting cannot help.
	ErrTooLarge = errors.New("pinned: request larger than the pool allows")
	// ErrClosed: the pool is closed.
	ErrClosed = errors.New("pinned: pool closed")
	// ErrReleased: Alloc on a Lease that was released.
	ErrReleased = errors.New("pinned: lease released")
	// ErrInvalidSize: a negative size.
	ErrInvalidSize = errors.New("pinned: invalid size")
)

// ExhaustedError is returned by Get and Lease.Alloc when no buffer became
// free in time or C memory could not be allocated. It wraps ErrExhausted
// and its Cause (the context's error when the context ended the wait).
type ExhaustedError struct {
	Size       int           // bytes requested
	Waited     time.Duration // how long the request waited
	RetryAfter time.Duration // a suggested Retry-After (MaxWait rounded up to a second)
	Cause      error         // ctx.Err() if the context ended the wait, the C allocation's error if that failed, else nil
}

func (e *ExhaustedError) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("%v: %d bytes after waiting %v: %v", ErrExhausted, e.Size, e.Waited.Round(time.Microsecond), e.Cause)
	}
	return fmt.Sprintf("%v: %d bytes after waiting %v", ErrExhausted, e.Size, e.Waited.Round(time.Microsecond))
}

// Unwrap returns ErrExhausted and the cause, if any.
func (e *ExhaustedError) Unwrap() []error {
	if e.Cause != nil {
		return []error{ErrExhausted, e.Cause}
	}
	return []error{ErrExhausted}
}

// Options configures a Pool. Sizes are in bytes.
type Options struct {
	// CUDARuntimePath is the libcudart to dlopen; "" searches
	// libcudart.so, libcudart.so.12 and libcudart.so.11.0 on the dynamic
	// loader's path.
	CUDARuntimePath string
	// DisableCUDA skips the CUDA runtime even when present.
	DisableCUDA bool
	// Budget bounds the C bytes the pool holds, idle and in use.
	Budget int64
	// MaxWait bounds how long Get waits for the budget (0: do not wait).
	MaxWait time.Duration
	// MinClass and MaxClass bound the size classes; both are rounded up to
	// the page size.
	MinClass, MaxClass int
	// ClassesPerDoubling is the number of size classes per power of two
	// (1: powers of two only; 4: at most 25% waste).
	ClassesPerDoubling int
}

// DefaultOptions returns a fresh Options: 256 MiB budget, 4 KiB to 64 MiB
// classes, 4 classes per doubling, 250 ms MaxWait, CUDA when present.
func DefaultOptions() Options {
	return Options{
		Budget:             256 << 20,
		MaxWait:            250 * time.Millisecond,
		MinClass:           4 << 10,
		MaxClass:           64 << 20,
		ClassesPerDoubling: 4,
	}
}

// Stats is a snapshot of the pool's counters.
type Stats struct {
	Mode           Mode
	Budget         int64
	HeldBytes      int64 // C bytes held by the pool: idle + in use (+ being allocated)
	InUseBytes     int64 // class bytes of buffers out
	RequestedBytes int64 // requested bytes of buffers out (InUseBytes-RequestedBytes is class waste)
	IdleBytes      int64 // class bytes of idle buffers
	Gets           int64 // successful and failed Gets
	Waits          int64 // Gets that had to wait
	Exhausted      int64 // Gets that failed with ErrExhausted
	TooLarge       int64 // Gets that failed with ErrTooLarge
	CAllocs        int64 // buffers allocated from C (the Go heap in the no-cgo stub)
	CAllocBytes    int64 // bytes of those allocations
	CFrees         int64 // buffers freed back to C
	Evictions      int64 // idle buffers freed to make room for another class
	MlockFailures  int64 // buffers whose mlock failed (Mlock mode; used unlocked)
}

// Buffer is one pooled C buffer, owned by the caller between Get and Put.
type Buffer struct {
	pool  *Pool
	mem   []byte // the whole class, C memory; cap = class size
	class int
	b     []byte // mem[:n:n], what the holder sees
	out   bool   // guarded by pool.mu
}

// Bytes returns the buffer's memory: len and cap are the size requested
// from Get. It is C memory (pinned, page-aligned in cgo builds), valid until
// Put.
func (b *Buffer) Bytes() []byte { return b.b }

type waiter struct {
	class, n int
	ch       chan grant // buffered 1; written once, under pool.mu
}

// grant is what a waiter is given: a buffer, or budget reserved for a new
// allocation that the waiter makes itself, or an error.
type grant struct {
	buf     *Buffer
	reserve bool
	err     error
}

// Pool is a bounded pool of C buffers by size class. Its methods are safe
// for concurrent use.
type Pool struct {
	opts    Options
	log     zerolog.Logger
	be      backend
	mode    Mode
	classes []int // ascending, page multiples
	m       *metrics

	mu        sync.Mutex // guards everything below, and Buffer.out
	free      [][]*Buffer
	idleBytes int64
	held      int64
	inUse     int64
	requested int64
	waiters   list.List // of *waiter, FIFO
	closed    bool
	st        Stats // counters only; gauges are computed in Stats()
}

// NewPool detects the mode, logs it and returns an empty pool; buffers are
// allocated on first use. reg may be nil (no metrics registered).
func NewPool(opts Options, logger zerolog.Logger, reg prometheus.Registerer) (*Pool, error) {
	if opts.Budget <= 0 {
		return nil, fmt.Errorf("pinned: budget %d must be positive", opts.Budget)
	}
	if opts.MaxWait < 0 {
		return nil, fmt.Errorf("pinned: MaxWait %v must not be negative", opts.MaxWait)
	}
	page := os.Getpagesize()
	classes, err := sizeClasses(opts.MinClass, opts.MaxClass, opts.ClassesPerDoubling, page)
	if err != nil {
		return nil, err
	}
	log := logger.With().Str("component", "pinned").Logger()
	be, mode, reason := detect(opts)
	p := &Pool{
		opts:    opts,
		log:     log,
		be:      be,
		mode:    mode,
		classes: classes,
		free:    make([][]*Buffer, len(classes)),
	}
	p.st.Mode = mode
	p.st.Budget = opts.Budget
	p.m, err = newMetrics(reg, p)
	if err != nil {
		return nil, err
	}
	log.Info().Str("mode", mode.String()).Str("reason", reason).
		Int64("budget_bytes", opts.Budget).Int("classes", len(classes)).
		Int("min_class", classes[0]).Int("max_class", classes[len(classes)-1]).
		Dur("max_wait", opts.MaxWait).Msg("pinned buffer pool ready")
	return p, nil
}

// sizeClasses returns the ascending, deduplicated class sizes.
func sizeClasses(minC, maxC, perDoubling, page int) ([]int, error) {
	if minC <= 0 || maxC < minC {
		return nil, fmt.Errorf("pinned: classes %d..%d: need 0 < MinClass <= MaxClass", minC, maxC)
	}
	if perDoubling < 1 || perDoubling > 16 {
		return nil, fmt.Errorf("pinned: ClassesPerDoubling %d not in 1..16", perDoubling)
	}
	if maxC > 1<<40 {
		return nil, fmt.Errorf("pinned: MaxClass %d too large", maxC)
	}
	up := func(n int) int { return (n + page - 1) / page * page }
	minC, maxC = up(minC), up(maxC)
	var out []int
	for base := minC; ; base *= 2 {
		for i := 0; i < perDoubling; i++ {
			s := up(base + base*i/perDoubling)
			if s > maxC {
				s = maxC
			}
			if len(out) == 0 || s > out[len(out)-1] {
				out = append(out, s)
			}
			if s == maxC {
				return out, nil
			}
		}
	}
}

// Mode returns the mode in force.
func (p *Pool) Mode() Mode { return p.mode }

// Classes returns a copy of the class sizes.
func (p *Pool) Classes() []int { return append([]int(nil), p.classes...) }

// classFor returns the index of the smallest class >= n.
func (p *Pool) classFor(n int) (int, bool) {
	i := sort.SearchInts(p.classes, n)
	return i, i < len(p.classes)
}

// Get returns a buffer of n bytes, zeroed. When the budget is full it waits
// up to MaxWait or until ctx is done, then fails with an *ExhaustedError.
// A request over MaxClass or the budget fails at once with ErrTooLarge.
func (p *Pool) Get(ctx context.Context, n int) (*Buffer, error) { return p.get(ctx, n, true) }

// get is Get; zero false leaves the bytes as their last user wrote them.
func (p *Pool) get(ctx context.Context, n int, zero bool) (*Buffer, error) {
	if n < 0 {
		return nil, fmt.Errorf("%w: %d", ErrInvalidSize, n)
	}
	ci, ok := p.classFor(n)
	if !ok || int64(p.classes[ci]) > p.opts.Budget {
		p.mu.Lock()
		p.st.Gets++
		p.st.TooLarge++
		p.mu.Unlock()
		p.m.gets.Inc()
		p.m.tooLarge.Inc()
		return nil, fmt.Errorf("%w: %d bytes (max class %d, budget %d)", ErrTooLarge, n, p.classes[len(p.classes)-1], p.opts.Budget)
	}
	p.m.gets.Inc()
	p.mu.Lock()
	p.st.Gets++
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	if p.waiters.Len() == 0 {
		b, reserve, victims := p.acquireLocked(ci, n)
		if b != nil || reserve {
			p.mu.Unlock()
			p.freeAll(victims)
			return p.finish(grant{buf: b, reserve: reserve}, ci, n, zero)
		}
	}
	if err := ctx.Err(); err != nil || p.opts.MaxWait == 0 {
		p.st.Exhausted++
		p.mu.Unlock()
		p.m.exhausted.Inc()
		return nil, p.exhausted(n, 0, err)
	}
	p.st.Waits++
	w := &waiter{class: ci, n: n, ch: make(chan grant, 1)}
	elem := p.waiters.PushBack(w)
	p.mu.Unlock()
	p.m.waits.Inc()

	start := time.Now()
	timer := time.NewTimer(p.opts.MaxWait)
	defer timer.Stop()
	var cause error
	select {
	case g := <-w.ch:
		return p.finish(g, ci, n, zero)
	case <-ctx.Done():
		cause = ctx.Err()
	case <-timer.C:
	}
	p.mu.Lock()
	select {
	case g := <-w.ch:
		// Served while we were giving up.
		p.mu.Unlock()
		if cause == nil || g.err != nil {
			return p.finish(g, ci, n, zero)
		}
		// The caller is gone: hand the grant back.
		if b, err := p.finish(g, ci, n, zero); err == nil {
			p.Put(b)
		}
		p.mu.Lock()
		p.st.Exhausted++
		p.mu.Unlock()
		p.m.exhausted.Inc()
		return nil, p.exhausted(n, time.Since(start), cause)
	default:
	}
	p.waiters.Remove(elem)
	p.st.Exhausted++
	// The head may have been blocking smaller requests behind it.
	victims := p.serveWaitersLocked()
	p.mu.Unlock()
	p.freeAll(victims)
	p.m.exhausted.Inc()
	return nil, p.exhausted(n, time.Since(start), cause)
}

func (p *Pool) exhausted(n int, waited time.Duration, cause error) error {
	ra := (p.opts.MaxWait + time.Second - 1).Truncate(time.Second)
	if ra < time.Second {
		ra = time.Second
	}
	return &ExhaustedError{Size: n, Waited: waited, RetryAfter: ra, Cause: cause}
}

// finish turns a grant into a buffer ready for the caller: it allocates
// from C when budget was reserved, and zeroes the n bytes handed out.
func (p *Pool) finish(g grant, ci, n int, zero bool) (*Buffer, error) {
	if g.err != nil {
		return nil, g.err
	}
	b := g.buf
	if g.reserve {
		size := p.classes[ci]
		mem, degraded, err := p.be.alloc(size)
		if err != nil {
			p.mu.Lock()
			p.held -= int64(size)
			p.inUse -= int64(size)
			p.requested -= int64(n)
			p.st.Exhausted++
			victims := p.serveWaitersLocked()
			p.mu.Unlock()
			p.freeAll(victims)
			p.m.exhausted.Inc()
			p.log.Error().Err(err).Int("size", size).Msg("allocating a pinned buffer failed")
			return nil, p.exhausted(n, 0, err)
		}
		b = &Buffer{pool: p, mem: mem, class: ci, out: true}
		p.mu.Lock()
		p.st.CAllocs++
		p.st.CAllocBytes += int64(size)
		if degraded {
			p.st.MlockFailures++
		}
		p.mu.Unlock()
		p.m.cAllocs.Inc()
		p.m.cAllocBytes.Add(float64(size))
		if degraded {
			p.m.mlockFailures.Inc()
		}
	}
	b.b = b.mem[:n:n]
	if zero {
		clear(b.b)
	}
	return b, nil
}

// acquireLocked takes an idle buffer of class ci, or reserves budget for a
// new one (reserve), freeing idle buffers of other classes (victims, to be
// freed by the caller after unlocking) if that makes room. It returns
// neither when the request must wait. On success the bytes are counted as in
// use.
func (p *Pool) acquireLocked(ci, n int) (b *Buffer, reserve bool, victims []*Buffer) {
	size := int64(p.classes[ci])
	if k := len(p.free[ci]); k > 0 {
		b = p.free[ci][k-1]
		p.free[ci][k-1] = nil
		p.free[ci] = p.free[ci][:k-1]
		p.idleBytes -= size
		b.out = true
	} else if p.held+size <= p.opts.Budget {
		p.held += size
		reserve = true
	} else if deficit := p.held + size - p.opts.Budget; p.idleBytes >= deficit {
		// Evict the largest idle buffers first: fewest frees.
		for c := len(p.classes) - 1; c >= 0 && deficit > 0; c-- {
			for len(p.free[c]) > 0 && deficit > 0 {
				k := len(p.free[c])
				v := p.free[c][k-1]
				p.free[c][k-1] = nil
				p.free[c] = p.free[c][:k-1]
				cs := int64(p.classes[c])
				p.idleBytes -= cs
				p.held -= cs
				deficit -= cs
				p.st.Evictions++
				p.m.evictions.Inc()
				victims = append(victims, v)
			}
		}
		p.held += size
		reserve = true
	} else {
		return nil, false, nil
	}
	p.inUse += size
	p.requested += int64(n)
	return b, reserve, victims
}

// serveWaitersLocked hands buffers or reservations to waiters in FIFO
// order, stopping at the first it cannot serve.
func (p *Pool) serveWaitersLocked() (victims []*Buffer) {
	for e := p.waiters.Front(); e != nil; e = p.waiters.Front() {
		w := e.Value.(*waiter)
		b, reserve, v := p.acquireLocked(w.class, w.n)
		if b == nil && !reserve {
			break
		}
		victims = append(victims, v...)
		w.ch <- grant{buf: b, reserve: reserve}
		p.waiters.Remove(e)
	}
	return victims
}

// freeAll returns buffers' memory to C; the budget was already adjusted.
func (p *Pool) freeAll(bufs []*Buffer) {
	for _, v := range bufs {
		p.freeBuffer(v)
	}
}

func (p *Pool) freeBuffer(v *Buffer) {
	if err := p.be.free(v.mem); err != nil {
		p.log.Error().Err(err).Int("size", cap(v.mem)).Msg("freeing a pinned buffer failed")
	}
	v.mem, v.b = nil, nil
	p.mu.Lock()
	p.st.CFrees++
	p.mu.Unlock()
	p.m.cFrees.Inc()
}

// Put returns b to the pool (or frees it if the pool is closed). b and its
// Bytes must not be used afterwards. Put of a buffer that is not out panics.
func (p *Pool) Put(b *Buffer) {
	if b == nil || b.pool != p {
		panic("pinned: Put of a buffer from another pool")
	}
	size := int64(p.classes[b.class])
	p.mu.Lock()
	if !b.out {
		p.mu.Unlock()
		panic("pinned: Put of a buffer that is not out (double Put)")
	}
	b.out = false
	p.inUse -= size
	p.requested -= int64(len(b.b))
	b.b = nil
	if p.closed {
		p.held -= size
		p.mu.Unlock()
		p.freeBuffer(b)
		return
	}
	p.free[b.class] = append(p.free[b.class], b)
	p.idleBytes += size
	var victims []*Buffer
	if p.waiters.Len() > 0 {
		victims = p.serveWaitersLocked()
	}
	p.mu.Unlock()
	p.freeAll(victims)
}

// Close fails waiting Gets with ErrClosed, frees all idle buffers, and makes
// later Gets fail. Buffers still out stay valid and are freed by their Put.
// It is idempotent and always returns nil.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	var idle []*Buffer
	for c := range p.free {
		idle = append(idle, p.free[c]...)
		p.free[c] = nil
	}
	p.held -= p.idleBytes
	p.idleBytes = 0
	for e := p.waiters.Front(); e != nil; e = e.Next() {
		e.Value.(*waiter).ch <- grant{err: ErrClosed}
	}
	p.waiters.Init()
	out := p.inUse
	p.mu.Unlock()
	p.freeAll(idle)
	p.m.unregister()
	p.log.Info().Int("freed_buffers", len(idle)).Int64("bytes_still_out", out).Msg("pinned buffer pool closed")
	return nil
}

// Stats returns a snapshot of the pool's counters.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.st
	s.HeldBytes = p.held
	s.InUseBytes = p.inUse
	s.RequestedBytes = p.requested
	s.IdleBytes = p.idleBytes
	return s
}

// Registration is caller-owned memory registered with the pool's mode
// (cudaHostRegister in CUDAHost mode, mlock in Mlock mode, nothing in
// Plain). The caller keeps owning the memory and must Unregister before
// freeing it.
type Registration struct {
	be   backend
	mode Mode
	mu   sync.Mutex // guards mem
	mem  []byte     // nil once unregistered
}

// Mode returns how the memory was registered.
func (r *Registration) Mode() Mode { return r.mode }

// Unregister undoes Register. It is idempotent.
func (r *Registration) Unregister() error {
	r.mu.Lock()
	mem := r.mem
	r.mem = nil
	r.mu.Unlock()
	if mem == nil {
		return nil
	}
	return r.be.unregister(r.mode, mem)
}

// Register pins memory allocated elsewhere (cudaHostRegister in CUDAHost
// mode, mlock in Mlock mode, nothing in Plain mode). In CUDAHost mode the
// CUDA runtime keeps the pointer, so b must not be Go heap memory (cgo
// rules): use memory from mmap or another C allocator. Registrations outlive
// Close; the caller Unregisters them.
func (p *Pool) Register(b []byte) (*Registration, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: register of an empty buffer", ErrInvalidSize)
	}
	mode, err := p.be.register(b)
	if err != nil {
		return nil, err
	}
	return &Registration{be: p.be, mode: mode, mem: b}, nil
}

// Lease is a request-scoped allocator: Alloc hands out pooled buffers and
// Release returns every one of them. It satisfies inference.Allocator
// structurally. Safe for concurrent use.
type Lease struct {
	p      *Pool
	mu     sync.Mutex // guards bufs, done
	bufs   []*Buffer
	inline [4]*Buffer
	done   bool
}

// Lease returns a new, empty lease.
func (p *Pool) Lease() *Lease {
	l := &Lease{p: p}
	l.bufs = l.inline[:0]
	return l
}

// Alloc returns n zeroed bytes of pooled C memory, valid until Release.
// It waits like Get and fails with the same errors; n == 0 returns an empty
// slice without touching the pool.
func (l *Lease) Alloc(ctx context.Context, n int) ([]byte, error) { return l.alloc(ctx, n, true) }

// AllocOverwrite is Alloc without the zeroing, for a caller that writes all
// n bytes before anything reads them (a decoded input, an output ONNX
// Runtime writes in place, a copy): a reused buffer still holds its last
// user's bytes until the caller overwrites them, so the guarantee that a
// later lease never sees an earlier lease's bytes rests on the caller.
func (l *Lease) AllocOverwrite(ctx context.Context, n int) ([]byte, error) {
	return l.alloc(ctx, n, false)
}

func (l *Lease) alloc(ctx context.Context, n int, zero bool) ([]byte, error) {
	if n == 0 {
		return []byte{}, nil
	}
	l.mu.Lock()
	done := l.done
	l.mu.Unlock()
	if done {
		return nil, ErrReleased
	}
	b, err := l.p.get(ctx, n, zero)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	if l.done {
		l.mu.Unlock()
		l.p.Put(b)
		return nil, ErrReleased
	}
	l.bufs = append(l.bufs, b)
	l.mu.Unlock()
	return b.Bytes(), nil
}

// Release returns every buffer Alloc handed out; none of their slices may be
// used afterwards. It is idempotent; Alloc after Release fails.
func (l *Lease) Release() {
	l.mu.Lock()
	bufs := l.bufs
	l.bufs = nil
	l.done = true
	l.mu.Unlock()
	for i, b := range bufs {
		l.p.Put(b)
		bufs[i] = nil
	}
}

// backend allocates and frees buffer memory for one mode; implemented in
// pinned_cgo.go and pinned_stub.go.
type backend interface {
	// alloc returns size bytes (page-aligned in cgo builds); degraded
	// reports memory that could not be locked.
	alloc(size int) (mem []byte, degraded bool, err error)
	free(mem []byte) error
	register(b []byte) (Mode, error)
	unregister(m Mode, b []byte) error
}

type metrics struct {
	reg           prometheus.Registerer
	cs            []prometheus.Collector
	gets          prometheus.Counter
	waits         prometheus.Counter
	exhausted     prometheus.Counter
	tooLarge      prometheus.Counter
	cAllocs       prometheus.Counter
	cAllocBytes   prometheus.Counter
	cFrees        prometheus.Counter
	evictions     prometheus.Counter
	mlockFailures prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, p *Pool) (*metrics, error) {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "edge_pinned_" + name, Help: help})
	}
	m := &metrics{
		reg:           reg,
		gets:          c("gets_total", "Buffer requests (Get and Lease.Alloc)."),
		waits:         c("waits_total", "Buffer requests that waited for the budget."),
		exhausted:     c("exhausted_total", "Buffer requests that failed because the pool stayed exhausted (HTTP 503)."),
		tooLarge:      c("too_large_total", "Buffer requests larger than the largest class or the budget."),
		cAllocs:       c("c_allocs_total", "Buffers allocated from C (0 per request after warm-up)."),
		cAllocBytes:   c("c_alloc_bytes_total", "Bytes allocated from C."),
		cFrees:        c("c_frees_total", "Buffers freed back to C."),
		evictions:     c("evictions_total", "Idle buffers freed to make room for another size class."),
		mlockFailures: c("mlock_failures_total", "Buffers whose mlock failed; they are used unlocked."),
	}
	gauge := func(name, help string, f func(Stats) int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "edge_pinned_" + name, Help: help},
			func() float64 { return float64(f(p.Stats())) })
	}
	mode := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "edge_pinned_mode",
		Help: "1 for the pinned-buffer mode in force (cuda_host, mlock, plain), 0 for the others."}, []string{"mode"})
	for _, md := range allModes {
		v := 0.0
		if md == p.mode {
			v = 1
		}
		mode.WithLabelValues(md.String()).Set(v)
	}
	m.cs = []prometheus.Collector{m.gets, m.waits, m.exhausted, m.tooLarge, m.cAllocs, m.cAllocBytes,
		m.cFrees, m.evictions, m.mlockFailures, mode,
		gauge("budget_bytes", "Byte budget of the pool.", func(s Stats) int64 { return s.Budget }),
		gauge("held_bytes", "C bytes held by the pool, idle and in use.", func(s Stats) int64 { return s.HeldBytes }),
		gauge("in_use_bytes", "Class bytes of buffers handed out.", func(s Stats) int64 { return s.InUseBytes }),
		gauge("requested_bytes", "Requested bytes of buffers handed out.", func(s Stats) int64 { return s.RequestedBytes }),
	}
	if reg == nil {
		return m, nil
	}
	for i, col := range m.cs {
		if err := reg.Register(col); err != nil {
			for _, done := range m.cs[:i] {
				reg.Unregister(done)
			}
			return nil, fmt.Errorf("pinned: registering metrics: %w", err)
		}
	}
	return m, nil
}

// unregister removes the pool's collectors so a new pool can register.
func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, col := range m.cs {
		m.reg.Unregister(col)
	}
}
