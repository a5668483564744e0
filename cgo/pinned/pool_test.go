package pinned

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/internal/testwait"
)

const kib = 1 << 10

// newTestPool returns a pool with CUDA disabled (the stub-libcudart tests
// opt in), logging into the returned buffer, closed and checked at cleanup:
// after Close nothing may be held but buffers still out.
func newTestPool(t testing.TB, mod func(*Options)) (*Pool, *bytes.Buffer, *prometheus.Registry) {
	t.Helper()
	opts := DefaultOptions()
	opts.DisableCUDA = true
	opts.Budget = 1 << 20
	opts.MaxWait = time.Minute // tests that want a timeout set it
	if mod != nil {
		mod(&opts)
	}
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	p, err := NewPool(opts, zerolog.New(&logs), reg)
	if err != nil {
		t.Fatalf("NewPool: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		s := p.Stats()
		if s.HeldBytes != s.InUseBytes || s.IdleBytes != 0 {
			t.Errorf("after Close: held %d, in use %d, idle %d", s.HeldBytes, s.InUseBytes, s.IdleBytes)
		}
		if s.InUseBytes == 0 && s.CAllocs != s.CFrees {
			t.Errorf("after Close: %d C allocations, %d frees", s.CAllocs, s.CFrees)
		}
	})
	return p, &logs, reg
}

// waitDeadline only stops a hung test: nothing here asserts timing.
const waitDeadline = time.Minute

func mustGet(t testing.TB, p *Pool, n int) *Buffer {
	t.Helper()
	b, err := p.Get(context.Background(), n)
	if err != nil {
		t.Fatalf("Get(%d): %v", n, err)
	}
	return b
}

func TestModeString(t *testing.T) {
	for m, want := range map[Mode]string{Plain: "plain", Mlock: "mlock", CUDAHost: "cuda_host", Mode(9): "Mode(9)"} {
		if got := m.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(m), got, want)
		}
	}
}

func TestDefaultOptionsFresh(t *testing.T) {
	a := DefaultOptions()
	a.Budget = 1
	if b := DefaultOptions(); b.Budget == 1 {
		t.Fatal("DefaultOptions shares state between calls")
	}
}

func TestSizeClasses(t *testing.T) {
	const page = 4096
	pow2, err := sizeClasses(4*kib, 64*kib, 1, page)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{4 * kib, 8 * kib, 16 * kib, 32 * kib, 64 * kib}; !slices.Equal(pow2, want) {
		t.Errorf("powers of two: %v, want %v", pow2, want)
	}
	quarter, err := sizeClasses(4*kib, 64<<20, 4, page)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range quarter {
		if c%page != 0 || (i > 0 && c <= quarter[i-1]) {
			t.Fatalf("class %d = %d: not ascending page multiples: %v", i, c, quarter)
		}
	}
	// Waste stays under 25% above 16 KiB (below that page rounding
	// dominates), and a 4.9 MB tensor takes the 5 MiB class.
	rng := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		n := 16*kib + rng.IntN(64<<20-16*kib)
		i := classIndex(quarter, n)
		if waste := float64(quarter[i]-n) / float64(quarter[i]); waste >= 0.25 {
			t.Fatalf("n=%d: class %d wastes %.0f%%", n, quarter[i], 100*waste)
		}
	}
	if c := quarter[classIndex(quarter, 4_900_000)]; c != 5<<20 {
		t.Errorf("4.9 MB lands in class %d, want %d", c, 5<<20)
	}
	for _, bad := range [][3]int{{0, 10, 1}, {10, 5, 1}, {4096, 8192, 0}, {4096, 8192, 17}} {
		if _, err := sizeClasses(bad[0], bad[1], bad[2], page); err == nil {
			t.Errorf("sizeClasses%v: no error", bad)
		}
	}
}

func classIndex(classes []int, n int) int {
	for i, c := range classes {
		if c >= n {
			return i
		}
	}
	return -1
}

func TestNewPoolRejectsBadOptions(t *testing.T) {
	for name, mod := range map[string]func(*Options){
		"zero budget":   func(o *Options) { o.Budget = 0 },
		"negative wait": func(o *Options) { o.MaxWait = -1 },
		"bad classes":   func(o *Options) { o.MinClass, o.MaxClass = 8*kib, 4*kib },
	} {
		opts := DefaultOptions()
		opts.DisableCUDA = true
		mod(&opts)
		if _, err := NewPool(opts, zerolog.Nop(), nil); err == nil {
			t.Errorf("%s: NewPool succeeded", name)
		}
	}
}

func TestGetPutReusesBuffers(t *testing.T) {
	p, logs, _ := newTestPool(t, nil)
	b := mustGet(t, p, 5000)
	if got := b.Bytes(); len(got) != 5000 || cap(got) != 5000 {
		t.Fatalf("Bytes: len %d cap %d, want 5000/5000", len(got), cap(got))
	}
	p.Put(b)
	b2 := mustGet(t, p, 6000) // same 8 KiB class
	if b2 != b {
		t.Error("a Put buffer of the same class was not reused")
	}
	p.Put(b2)
	s := p.Stats()
	if s.CAllocs != 1 || s.Gets != 2 || s.InUseBytes != 0 || s.HeldBytes != 8*kib || s.IdleBytes != 8*kib {
		t.Errorf("stats %+v", s)
	}
	if !strings.Contains(logs.String(), `"component":"pinned"`) || !strings.Contains(logs.String(), `"mode"`) {
		t.Errorf("start-up log lacks component or mode: %s", logs)
	}
}

func TestZeroAllocsAfterWarmup(t *testing.T) {
	p, _, _ := newTestPool(t, func(o *Options) { o.Budget = 64 << 20 })
	ctx := context.Background()
	p.Put(mustGet(t, p, 4_900_000)) // warm-up
	before := p.Stats().CAllocs
	allocs := testing.AllocsPerRun(50, func() {
		b, err := p.Get(ctx, 4_900_000)
		if err != nil {
			t.Fatal(err)
		}
		p.Put(b)
	})
	if allocs != 0 {
		t.Errorf("Get/Put: %v Go allocations per run, want 0", allocs)
	}
	if c := p.Stats().CAllocs - before; c != 0 {
		t.Errorf("Get/Put after warm-up: %d C allocations, want 0", c)
	}
}

func TestTooLargeFailsAtOnce(t *testing.T) {
	p, _, _ := newTestPool(t, func(o *Options) { o.MaxClass = 64 * kib; o.Budget = 32 * kib })
	for _, n := range []int{64*kib + 1, 48 * kib} { // over MaxClass; class 64 KiB over the budget
		_, err := p.Get(context.Background(), n)
		if !errors.Is(err, ErrTooLarge) || errors.Is(err, ErrExhausted) {
			t.Errorf("Get(%d) = %v, want ErrTooLarge", n, err)
		}
	}
	if _, err := p.Get(context.Background(), -1); !errors.Is(err, ErrInvalidSize) {
		t.Errorf("Get(-1) = %v, want ErrInvalidSize", err)
	}
	if s := p.Stats(); s.TooLarge != 2 || s.Waits != 0 || s.CAllocs != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestWaitThenSucceedWhenPut(t *testing.T) {
	p, _, _ := newTestPool(t, func(o *Options) { o.Budget = 64 * kib })
	a := mustGet(t, p, 64*kib)
	got := make(chan *Buffer)
	go func() {
		b, err := p.Get(context.Background(), 64*kib)
		if err != nil {
			t.Error(err)
		}
		got <- b
	}()
	testwait.For(t, "1 waiter(s) in Get", func() bool { return p.Stats().Waits == 1 }, waitDeadline)
	p.Put(a)
	b := <-got
	if b != a {
		t.Error("the waiter did not get the buffer that was Put")
	}
	p.Put(b)
	if s := p.Stats(); s.CAllocs != 1 || s.Exhausted != 0 || s.HeldBytes > 64*kib {
		t.Errorf("stats %+v", s)
	}
}

func TestWaitThenExhausted(t *testing.T) {
	const maxWait = 20 * time.Millisecond
	p, _, reg := newTestPool(t, func(o *Options) { o.Budget = 64 * kib; o.MaxWait = maxWait })
	a := mustGet(t, p, 64*kib)
	_, err := p.Get(context.Background(), 4*kib)
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("Get = %v, want ErrExhausted", err)
	}
	var ee *ExhaustedError
	if !errors.As(err, &ee) || ee.Size != 4*kib || ee.Waited < maxWait || ee.RetryAfter != time.Second || ee.Cause != nil {
		t.Errorf("error %#v", ee)
	}
	if s := p.Stats(); s.Waits != 1 || s.Exhausted != 1 || s.HeldBytes != 64*kib {
		t.Errorf("stats %+v", s)
	}
	if v := gatherValue(t, reg, "edge_pinned_exhausted_total", ""); v != 1 {
		t.Errorf("edge_pinned_exhausted_total = %v, want 1", v)
	}
	p.Put(a)
	// The budget is free again: no wait now.
	p.Put(mustGet(t, p, 4*kib))
}

func TestWaitEndsWithContext(t *testing.T) {
	p, _, _ := newTestPool(t, func(o *Options) { o.Budget = 64 * kib })
	a := mustGet(t, p, 64*kib)
	defer p.Put(a)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() {
		_, err := p.Get(ctx, 4*kib)
		errc <- err
	}()
	testwait.For(t, "1 waiter(s) in Get", func() bool { return p.Stats().Waits == 1 }, waitDeadline)
	cancel()
	err := <-errc
	if !errors.Is(err, ErrExhausted) || !errors.Is(err, context.Canceled) {
		t.Errorf("Get = %v, want ErrExhausted and context.Canceled", err)
	}
	// An already-cancelled context does not wait at all.
	if _, err := p.Get(ctx, 4*kib); !errors.Is(err, context.Canceled) {
		t.Errorf("Get with a done context = %v", err)
	}
	if s := p.Stats(); s.Waits != 1 || s.Exhausted != 2 {
		t.Errorf("stats %+v", s)
	}
}

func TestNoWaitWhenMaxWaitZero(t *testing.T) {
	p, _, _ := newTestPool(t, func(o *Options) { o.Budget = 64 * kib; o.MaxWait = 0 })
	a := mustGet(t, p, 64*kib)
	defer p.Put(a)
	if _, err := p.Get(context.Background(), 4*kib); !errors.Is(err, ErrExhausted) {
		t.Errorf("Get = %v, want ErrExhausted", err)
	}
	if s := p.Stats(); s.Waits != 0 || s.Exhausted != 1 {
		t.Errorf("stats %+v", s)
	}
}

// TestFIFOAndEviction: a waiting large request is served before a later
// small one, by freeing idle buffers of other classes.
func TestFIFOAndEviction(t *testing.T) {
	p, _, _ := newTestPool(t, func(o *Options) {
		o.Budget = 16 * kib
		o.MinClass, o.MaxClass, o.ClassesPerDoubling = 4*kib, 16*kib, 1
	})
	a := mustGet(t, p, 8*kib)
	b := mustGet(t, p, 4*kib)
	big := make(chan *Buffer)
	go func() { big <- mustGet(t, p, 16*kib) }()
	testwait.For(t, "1 waiter(s) in Get", func() bool { return p.Stats().Waits == 1 }, waitDeadline)
	small := make(chan *Buffer)
	go func() { small <- mustGet(t, p, 4*kib) }() // 4 KiB of budget is free, but the big one is first
	testwait.For(t, "2 waiter(s) in Get", func() bool { return p.Stats().Waits == 2 }, waitDeadline)
	p.Put(a)
	p.Put(b) // idle 12 KiB: evicted so that the 16 KiB request fits
	bb := <-big
	if s := p.Stats(); s.Evictions != 2 || s.HeldBytes != 16*kib {
		t.Errorf("after serving the big request: %+v", s)
	}
	p.Put(bb) // evicted for the small one
	p.Put(<-small)
	if s := p.Stats(); s.Evictions != 3 || s.CAllocs != 4 || s.CFrees != 3 || s.HeldBytes != 4*kib {
		t.Errorf("end: %+v", s)
	}
}

func TestCloseWakesWaitersAndFreesLater(t *testing.T) {
	var logs bytes.Buffer
	opts := DefaultOptions()
	opts.DisableCUDA, opts.Budget, opts.MaxWait = true, 64*kib, time.Minute
	p, err := NewPool(opts, zerolog.New(&logs), nil)
	if err != nil {
		t.Fatal(err)
	}
	idle := mustGet(t, p, 4*kib)
	out := mustGet(t, p, 32*kib)
	p.Put(idle)
	errc := make(chan error)
	go func() {
		_, err := p.Get(context.Background(), 64*kib)
		errc <- err
	}()
	testwait.For(t, "1 waiter(s) in Get", func() bool { return p.Stats().Waits == 1 }, waitDeadline)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf("waiter got %v, want ErrClosed", err)
	}
	if s := p.Stats(); s.CFrees != 1 || s.HeldBytes != 32*kib {
		t.Errorf("after Close: %+v", s)
	}
	out.Bytes()[0] = 1 // still valid after Close
	p.Put(out)
	if s := p.Stats(); s.CFrees != 2 || s.HeldBytes != 0 {
		t.Errorf("after the last Put: %+v", s)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := p.Get(context.Background(), 1); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close = %v", err)
	}
}

func TestDoublePutPanics(t *testing.T) {
	p, _, _ := newTestPool(t, nil)
	b := mustGet(t, p, 100)
	p.Put(b)
	defer func() {
		if recover() == nil {
			t.Error("double Put did not panic")
		}
	}()
	p.Put(b)
}

// TestNeverSeesEarlierBytes: whatever an earlier holder wrote, a later Get
// (same class, shorter or longer) and a later Lease see zeros only.
func TestNeverSeesEarlierBytes(t *testing.T) {
	p, _, _ := newTestPool(t, func(o *Options) { o.Budget = 16 << 20 })
	ctx := context.Background()
	for _, sizes := range [][2]int{{5000, 8000}, {8000, 5000}, {4_900_000, 4_500_000}, {4_500_000, 4_900_000}} {
		b := mustGet(t, p, sizes[0])
		fill(b.Bytes(), 0xAB)
		p.Put(b)
		b2 := mustGet(t, p, sizes[1])
		if b2 != b {
			t.Fatalf("%v: not the same buffer; the test proves nothing", sizes)
		}
		if i := bytes.IndexFunc(b2.Bytes(), func(r rune) bool { return r != 0 }); i >= 0 {
			t.Errorf("%v: byte %d of the later request is not zero", sizes, i)
		}
		p.Put(b2)
	}
	l := p.Lease()
	d, err := l.Alloc(ctx, 100_000)
	if err != nil {
		t.Fatal(err)
	}
	fill(d, 0xCD)
	l.Release()
	l2 := p.Lease()
	defer l2.Release()
	d2, err := l2.Alloc(ctx, 100_000)
	if err != nil {
		t.Fatal(err)
	}
	if &d2[0] != &d[0] {
		t.Fatal("lease did not reuse the buffer; the test proves nothing")
	}
	if !allZero(d2) {
		t.Error("a later lease sees an earlier lease's bytes")
	}
}

func fill(b []byte, v byte) {
	for i := range b {
		b[i] = v
	}
}

func allZero(b []byte) bool {
	for _, v := range b {
		if v != 0 {
			return false
		}
	}
	return true
}

// allocator is inference.Allocator, restated: cgo/ must not import inference.
type allocator interface {
	Alloc(ctx context.Context, n int) ([]byte, error)
}

var _ allocator = (*Lease)(nil)

func TestLease(t *testing.T) {
	p, _, _ := newTestPool(t, func(o *Options) { o.Budget = 1 << 20 })
	ctx := context.Background()
	l := p.Lease()
	var got [][]byte
	for _, n := range []int{10, 5000, 70_000, 0, 300_000, 4096, 1} {
		b, err := l.Alloc(ctx, n)
		if err != nil {
			t.Fatalf("Alloc(%d): %v", n, err)
		}
		if len(b) != n || cap(b) != n {
			t.Errorf("Alloc(%d): len %d cap %d", n, len(b), cap(b))
		}
		got = append(got, b)
	}
	if s := p.Stats(); s.RequestedBytes != 10+5000+70_000+300_000+4096+1 {
		t.Errorf("requested bytes out: %d", s.RequestedBytes)
	}
	l.Release()
	l.Release() // idempotent
	if s := p.Stats(); s.InUseBytes != 0 || s.RequestedBytes != 0 {
		t.Errorf("after Release: %+v", s)
	}
	if _, err := l.Alloc(ctx, 1); !errors.Is(err, ErrReleased) {
		t.Errorf("Alloc after Release = %v", err)
	}
	// AllocOverwrite does not clear a reused buffer (its caller overwrites
	// every byte); Get still zeroes it.
	l3 := p.Lease()
	b3, err := l3.Alloc(ctx, 5000)
	if err != nil {
		t.Fatal(err)
	}
	fill(b3, 0xAB)
	l3.Release()
	l4 := p.Lease()
	b4, err := l4.AllocOverwrite(ctx, 5000)
	if err != nil {
		t.Fatal(err)
	}
	if &b4[0] != &b3[0] || b4[4999] != 0xAB {
		t.Errorf("Lease.AllocOverwrite of a reused buffer: same buffer %v, last byte %#x, want the previous bytes kept", &b4[0] == &b3[0], b4[4999])
	}
	l4.Release()
	if g := mustGet(t, p, 5000); !allZero(g.Bytes()) {
		t.Error("Get of a reused buffer is not zeroed")
	} else {
		p.Put(g)
	}
	// Errors pass through: a too-large request.
	l2 := p.Lease()
	defer l2.Release()
	if _, err := l2.Alloc(ctx, 2<<20); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Alloc over budget = %v", err)
	}
}

// TestHammer: concurrent Gets, Puts and Leases under a small budget (waits
// and evictions happen); no buffer is ever held by two owners and nobody
// writes into a buffer someone else holds. Leases hold buffers while they
// wait for more, so they can wait on each other until MaxWait: that is what
// MaxWait is for, and ErrExhausted is an expected outcome here.
func TestHammer(t *testing.T) {
	p, _, _ := newTestPool(t, func(o *Options) {
		o.Budget = 256 * kib
		o.MaxClass = 128 * kib
		o.MaxWait = 5 * time.Millisecond
	})
	var (
		mu     sync.Mutex // guards owners
		owners = map[*byte]int{}
	)
	take := func(b []byte, who int) {
		mu.Lock()
		defer mu.Unlock()
		if prev, ok := owners[&b[0]]; ok {
			t.Errorf("memory at %p handed to %d while held by %d", &b[0], who, prev)
		}
		owners[&b[0]] = who
	}
	give := func(b []byte, who int) {
		mu.Lock()
		defer mu.Unlock()
		delete(owners, &b[0])
	}
	check := func(b []byte, v byte) {
		for i, x := range b {
			if x != v {
				t.Errorf("byte %d is %#x, want %#x: another holder wrote it", i, x, v)
				return
			}
		}
	}
	iters := 300
	if testing.Short() {
		iters = 50
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			ctx := context.Background()
			v := byte(g + 1)
			for range iters {
				if rng.IntN(4) == 0 {
					l := p.Lease()
					var held [][]byte
					for range 1 + rng.IntN(3) {
						b, err := l.Alloc(ctx, 1+rng.IntN(100*kib))
						if err != nil {
							if !errors.Is(err, ErrExhausted) {
								t.Error(err)
							}
							break
						}
						if !allZero(b) {
							t.Error("fresh lease memory not zero")
						}
						take(b, g)
						fill(b, v)
						held = append(held, b)
					}
					runtime.Gosched()
					for _, b := range held {
						check(b, v)
						give(b, g)
					}
					l.Release()
					continue
				}
				b, err := p.Get(ctx, 1+rng.IntN(128*kib))
				if err != nil {
					if !errors.Is(err, ErrExhausted) {
						t.Error(err)
					}
					continue
				}
				if !allZero(b.Bytes()) {
					t.Error("fresh memory not zero")
				}
				take(b.Bytes(), g)
				fill(b.Bytes(), v)
				runtime.Gosched()
				check(b.Bytes(), v)
				give(b.Bytes(), g)
				p.Put(b)
			}
		}()
	}
	wg.Wait()
	s := p.Stats()
	if s.InUseBytes != 0 || s.HeldBytes > 256*kib || s.HeldBytes != s.IdleBytes {
		t.Errorf("after the hammer: %+v", s)
	}
	if s.Gets == s.Exhausted {
		t.Error("no Get succeeded")
	}
	t.Logf("hammer: gets %d waits %d exhausted %d evictions %d C allocs %d", s.Gets, s.Waits, s.Exhausted, s.Evictions, s.CAllocs)
}

func TestMetrics(t *testing.T) {
	p, _, reg := newTestPool(t, nil)
	p.Put(mustGet(t, p, 10_000))
	if v := gatherValue(t, reg, "edge_pinned_mode", p.Mode().String()); v != 1 {
		t.Errorf("edge_pinned_mode{mode=%q} = %v, want 1", p.Mode(), v)
	}
	for name, want := range map[string]float64{
		"edge_pinned_gets_total":      1,
		"edge_pinned_c_allocs_total":  1,
		"edge_pinned_budget_bytes":    1 << 20,
		"edge_pinned_held_bytes":      12 * kib,
		"edge_pinned_in_use_bytes":    0,
		"edge_pinned_exhausted_total": 0,
	} {
		if v := gatherValue(t, reg, name, ""); v != want {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}
	// A second pool on the same registry conflicts; after Close it does not.
	opts := DefaultOptions()
	opts.DisableCUDA = true
	if _, err := NewPool(opts, zerolog.Nop(), reg); err == nil {
		t.Error("two pools registered the same metrics")
	}
	p.Close()
	p2, err := NewPool(opts, zerolog.Nop(), reg)
	if err != nil {
		t.Fatalf("after Close: %v", err)
	}
	p2.Close()
}

// gatherValue returns the value of the metric name (with label mode=label
// when label is not ""), or -1.
func gatherValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && (len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}

func TestRegisterPlainOrMlock(t *testing.T) {
	p, _, _ := newTestPool(t, nil)
	mem := make([]byte, 64*kib) // Go memory is fine outside CUDAHost mode
	r, err := p.Register(mem)
	if err != nil {
		t.Fatal(err)
	}
	if r.Mode() != p.Mode() {
		t.Errorf("registration mode %v, pool mode %v", r.Mode(), p.Mode())
	}
	if err := r.Unregister(); err != nil {
		t.Error(err)
	}
	if err := r.Unregister(); err != nil {
		t.Errorf("second Unregister: %v", err)
	}
	if _, err := p.Register(nil); !errors.Is(err, ErrInvalidSize) {
		t.Errorf("Register(nil) = %v", err)
	}
}
