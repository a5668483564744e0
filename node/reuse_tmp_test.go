package node
import ("context"; "sync"; "github.com/edgeai/edge-node/inference")
// reuseAllocator hands out buffers from free lists by size and takes them
// back when its lease is released: the shape of the pinned pool (whose
// memory is outside the Go heap), so that what the benchmarks and the
// allocation test measure is the HTTP layer's own garbage, not the tensors'.
type reuseAllocator struct {
	mu   sync.Mutex       // guards free
	free map[int][][]byte // by exact size
}

type reuseLease struct {
	a    *reuseAllocator
	mu   sync.Mutex // guards held
	held [][]byte
}

func (a *reuseAllocator) newLease() (inference.Allocator, func()) {
	l := &reuseLease{a: a}
	return l, l.release
}

func (l *reuseLease) Alloc(_ context.Context, n int) ([]byte, error) {
	l.a.mu.Lock()
	var b []byte
	if list := l.a.free[n]; len(list) > 0 {
		b, l.a.free[n] = list[len(list)-1], list[:len(list)-1]
	}
	l.a.mu.Unlock()
	if b == nil {
		b = make([]byte, n)
	}
	l.mu.Lock()
	l.held = append(l.held, b)
	l.mu.Unlock()
	return b, nil
}

func (l *reuseLease) release() {
	l.a.mu.Lock()
	for _, b := range l.held {
		l.a.free[len(b)] = append(l.a.free[len(b)], b)
	}
	l.a.mu.Unlock()
	l.held = nil
}

func newReuseAllocator() *reuseAllocator { return &reuseAllocator{free: map[int][][]byte{}} }
