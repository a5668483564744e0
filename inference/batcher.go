package inference

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// batcher is a Session's dynamic batcher (SessionConfig.DynamicBatching):
// requests wait in a bounded queue; one goroutine (loop) forms batches of
// requests that agree on everything but the batch dimension and runs each
// batch as one ONNX Runtime Run, as many at a time as max_concurrency
// allows (default: one per ORT session instance).
//
// A batch of one request runs on that request's own tensors and allocator,
// as an unbatched Run does. A bigger batch copies the requests' inputs into
// one Go buffer per input and runs with ORT-allocated outputs; each request
// gets its slice of every output: a sub-slice of the batch's buffer where
// the batch dimension is the outermost (no copy), a strided copy otherwise.
type batcher struct {
	s   *Session
	cfg DynamicBatching
	// inDims and outDims are each model input's and output's batch
	// dimension, -1 for none.
	inDims, outDims []int
	preferred       int
	queueSize       int

	// mu guards waiting, the requests in arrival order not yet taken
	// into a batch, and closed, set once the loop stopped taking them.
	mu      sync.Mutex
	waiting []*batchItem
	closed  bool
	wake    chan struct{} // a request arrived (capacity 1)
	slots   chan struct{} // batches running at once
	done    chan struct{} // closed when loop has returned

	// sizes[n] counts batches of n inferences; queue is their requests'
	// time in the queue (latency histogram buckets).
	sizes      []atomic.Uint64
	queue      [latencyBuckets]atomic.Uint64
	queueNanos atomic.Uint64
}

// batchItem is one request in the batcher's queue.
type batchItem struct {
	ctx    context.Context
	inputs []*Tensor
	want   []int
	alloc  Allocator
	n      int64  // inferences: the batch dimension's size
	key    string // what must agree within a batch
	at     time.Time

	// released is closed once the batcher no longer touches the request's
	// tensors or allocator; res then holds the result.
	released chan struct{}
	res      []Tensor
	st       RunStats
	err      error
}

// newBatcher checks the batching config against the model and starts the
// batcher's loop.
func newBatcher(s *Session) (*batcher, error) {
	cfg := *s.cfg.DynamicBatching
	b := &batcher{
		s: s, cfg: cfg, preferred: cfg.Preferred(), queueSize: cfg.QueueSize(),
		wake:  make(chan struct{}, 1),
		done:  make(chan struct{}),
		sizes: make([]atomic.Uint64, cfg.MaxBatchSize+1),
	}
	// A batch is one Run: max_concurrency bounds how many run at once,
	// else one per ORT session instance.
	inFlight := max(len(s.all), 1)
	if s.cfg.MaxConcurrency > 0 {
		inFlight = s.cfg.MaxConcurrency
	}
	b.slots = make(chan struct{}, inFlight)
	known := map[string]bool{}
	dims := func(ts []TensorInfo) ([]int, bool, error) {
		out := make([]int, len(ts))
		batched := false
		for i, t := range ts {
			known[t.Name] = true
			out[i] = cfg.BatchDim(t.Name, len(t.Shape))
			if d, ok := cfg.BatchDims[t.Name]; ok && d >= len(t.Shape) {
				return nil, false, fmt.Errorf("dynamic_batching: batch_dims[%q] is %d but %q has rank %d: %w", t.Name, d, t.Name, len(t.Shape), ErrInvalidArgument)
			}
			if out[i] < 0 {
				continue
			}
			if t.DataType == Bytes {
				return nil, false, fmt.Errorf("dynamic_batching: %q is a BYTES tensor, which is not batched: %w", t.Name, ErrUnsupported)
			}
			if t.Shape[out[i]] >= 0 {
				return nil, false, fmt.Errorf("dynamic_batching: dimension %d of %q is fixed at %d in the model %v: it cannot be a batch dimension (set batch_dims): %w",
					out[i], t.Name, t.Shape[out[i]], t.Shape, ErrInvalidArgument)
			}
			batched = true
		}
		return out, batched, nil
	}
	var err error
	var batchedIn, batchedOut bool
	if b.inDims, batchedIn, err = dims(s.inputs); err != nil {
		return nil, err
	}
	if b.outDims, batchedOut, err = dims(s.outputs); err != nil {
		return nil, err
	}
	if !batchedIn || !batchedOut {
		return nil, fmt.Errorf("dynamic_batching: the model needs an input and an output with a batch dimension: %w", ErrInvalidArgument)
	}
	for name := range cfg.BatchDims {
		if !known[name] {
			return nil, fmt.Errorf("dynamic_batching: batch_dims names %q, which is not an input or output of the model: %w", name, ErrInvalidArgument)
		}
	}
	go b.loop()
	return b, nil
}

// run queues one validated request and waits for its batch's result.
func (b *batcher) run(ctx context.Context, inputs []*Tensor, want []int, alloc Allocator) ([]Tensor, RunStats, error) {
	it, err := b.item(ctx, inputs, want, alloc)
	if err != nil {
		return nil, RunStats{}, err
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, RunStats{}, fmt.Errorf("%s/%s is closing: %w", b.s.name, b.s.version, ErrUnavailable)
	}
	if len(b.waiting) >= b.queueSize {
		b.mu.Unlock()
		return nil, RunStats{}, fmt.Errorf("%s/%s: the batch queue is full (%d requests): %w", b.s.name, b.s.version, b.queueSize, ErrUnavailable)
	}
	b.waiting = append(b.waiting, it)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}

	var timeout <-chan time.Time
	if b.cfg.Timeout > 0 {
		t := time.NewTimer(b.cfg.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	var why error
	select {
	case <-it.released:
		return it.res, it.st, it.err
	case <-ctx.Done():
		why = fmt.Errorf("%s/%s: waiting in the batch queue: %w: %w", b.s.name, b.s.version, ErrUnavailable, ctx.Err())
	case <-timeout:
		why = fmt.Errorf("%s/%s: still in the batch queue after %v (timeout): %w", b.s.name, b.s.version, b.cfg.Timeout, ErrUnavailable)
	}
	if b.withdraw(it) {
		return nil, RunStats{}, why
	}
	// Already in a batch: the request's memory is in use until released
	// (a cancelled ctx ends a single run early; a batch is one Run), and
	// the request gets the batch's answer.
	<-it.released
	return it.res, it.st, it.err
}

// item checks that the request's batched inputs agree on their batch size
// and builds its queue entry.
func (b *batcher) item(ctx context.Context, inputs []*Tensor, want []int, alloc Allocator) (*batchItem, error) {
	it := &batchItem{ctx: ctx, inputs: inputs, want: want, alloc: alloc, n: -1, at: time.Now(), released: make(chan struct{})}
	var key []byte
	for i, t := range inputs {
		d := b.inDims[i]
		key = append(key, byte(len(t.Shape)))
		for j, x := range t.Shape {
			if j != d {
				key = appendInt64(key, x)
			}
		}
		if d < 0 {
			key = appendInt64(key, int64(len(t.Data)))
			key = append(key, t.Data...)
			continue
		}
		switch n := t.Shape[d]; {
		case it.n < 0:
			it.n = n
		case n != it.n:
			return nil, b.s.invalid("input %q has batch size %d (dimension %d), input %q has %d", t.Name, n, d, b.s.inputs[firstBatched(b.inDims)].Name, it.n)
		}
	}
	if it.n < 1 || it.n > int64(b.cfg.MaxBatchSize) {
		return nil, b.s.invalid("batch size %d: want 1–%d (dynamic_batching max_batch_size)", it.n, b.cfg.MaxBatchSize)
	}
	it.key = string(key)
	return it, nil
}

func firstBatched(dims []int) int {
	for i, d := range dims {
		if d >= 0 {
			return i
		}
	}
	return 0
}

func appendInt64(b []byte, x int64) []byte {
	for i := 0; i < 8; i++ {
		b = append(b, byte(x>>(8*i)))
	}
	return b
}

// withdraw takes it out of the queue; false means a batch has it.
func (b *batcher) withdraw(it *batchItem) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if i := slices.Index(b.waiting, it); i >= 0 {
		b.waiting = slices.Delete(b.waiting, i, i+1)
		return true
	}
	return false
}

// loop forms and starts batches until the session closes, then fails the
// requests still queued.
func (b *batcher) loop() {
	defer close(b.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case b.slots <- struct{}{}:
		case <-b.s.closing:
			b.failWaiting()
			return
		}
		batch := b.next(timer)
		if batch == nil {
			b.failWaiting()
			return
		}
		go func() {
			defer func() { <-b.slots }()
			b.execute(batch)
		}()
	}
}

// next waits for a batch to be ready and takes it out of the queue: the
// first waiting request and the later ones that agree with it, in arrival
// order, up to max_batch_size inferences; ready when it holds
// preferred_batch_size inferences, or no more can fit, or the first
// request has waited max_queue_delay. nil means the session is closing.
func (b *batcher) next(timer *time.Timer) []*batchItem {
	for {
		b.mu.Lock()
		if len(b.waiting) > 0 {
			first := b.waiting[0]
			picked, size := b.compatibleLocked(first)
			wait := time.Until(first.at.Add(b.cfg.MaxQueueDelay))
			if size >= int64(b.preferred) || wait <= 0 || size == int64(b.cfg.MaxBatchSize) {
				batch := make([]*batchItem, len(picked))
				for i, j := range picked {
					batch[i] = b.waiting[j]
				}
				b.waiting = removeIndexes(b.waiting, picked)
				b.mu.Unlock()
				return batch
			}
			b.mu.Unlock()
			timer.Reset(wait)
			select {
			case <-b.wake:
			case <-timer.C:
			case <-b.s.closing:
				return nil
			}
			timer.Stop()
			continue
		}
		b.mu.Unlock()
		select {
		case <-b.wake:
		case <-b.s.closing:
			return nil
		}
	}
}

// compatibleLocked returns the indexes in waiting of the requests that can
// join first's batch, and the batch's size.
func (b *batcher) compatibleLocked(first *batchItem) ([]int, int64) {
	var picked []int
	var size int64
	for i, it := range b.waiting {
		if it.key != first.key || size+it.n > int64(b.cfg.MaxBatchSize) {
			continue
		}
		picked = append(picked, i)
		size += it.n
		if size == int64(b.cfg.MaxBatchSize) {
			break
		}
	}
	return picked, size
}

// removeIndexes removes the elements at the ascending indexes idx.
func removeIndexes(s []*batchItem, idx []int) []*batchItem {
	out := s[:0]
	k := 0
	for i, it := range s {
		if k < len(idx) && idx[k] == i {
			k++
			continue
		}
		out = append(out, it)
	}
	clear(s[len(out):])
	return out
}

func (b *batcher) failWaiting() {
	b.mu.Lock()
	waiting := b.waiting
	b.waiting, b.closed = nil, true
	b.mu.Unlock()
	for _, it := range waiting {
		it.err = fmt.Errorf("%s/%s is closing: %w", b.s.name, b.s.version, ErrUnavailable)
		close(it.released)
	}
}

// execute runs one batch and hands each request its result. A request
// whose context is done by the time its batch starts is answered with the
// error at once and left out.
func (b *batcher) execute(batch []*batchItem) {
	start := time.Now()
	var size int64
	live := batch[:0]
	for _, it := range batch {
		if err := it.ctx.Err(); err != nil {
			it.err = fmt.Errorf("%s/%s: waiting in the batch queue: %w: %w", b.s.name, b.s.version, ErrUnavailable, err)
			close(it.released)
			continue
		}
		live = append(live, it)
	}
	if batch = live; len(batch) == 0 {
		return
	}
	for _, it := range batch {
		size += it.n
		q := start.Sub(it.at)
		b.queue[latencyBucket(q)].Add(1)
		b.queueNanos.Add(uint64(max(q, 0)))
		it.st.Queue = q
	}
	b.sizes[size].Add(1)
	if len(batch) == 1 {
		it := batch[0]
		it.res, it.err = b.runOne(it)
		it.st.Compute = time.Since(start)
		close(it.released)
		return
	}
	outs, st, err := b.runBatch(batch, size)
	compute := time.Since(start)
	var off int64
	for i, it := range batch {
		it.st.Compute, it.st.Runs, it.st.SharedRun = compute, st.Runs, i > 0
		if err != nil {
			it.err = err
		} else {
			it.res, it.err = b.split(outs, it, off, size)
		}
		off += it.n
		close(it.released)
	}
}

// runOne runs a batch of one request as an unbatched Run.
func (b *batcher) runOne(it *batchItem) ([]Tensor, error) {
	ds, release, err := b.s.acquire(it.ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	return b.s.run(it.ctx, ds, it.inputs, it.want, it.alloc, &it.st)
}

// runBatch concatenates the requests' inputs along their batch dimensions
// and runs the batch for all outputs, on the Go heap. The batch runs to
// its end whatever the requests' contexts do: it is one Run for all.
func (b *batcher) runBatch(batch []*batchItem, size int64) ([]Tensor, RunStats, error) {
	var st RunStats
	first := batch[0]
	ins := make([]*Tensor, len(first.inputs))
	for i, t := range first.inputs {
		d := b.inDims[i]
		if d < 0 {
			// Equal in every request (the key): the first one's bytes.
			ins[i] = &Tensor{Name: t.Name, DataType: t.DataType, Shape: t.Shape, Data: bytes.Clone(t.Data)}
			continue
		}
		shape := cloneShape(t.Shape)
		shape[d] = size
		n, _ := ElementCount(shape)
		data := make([]byte, int(n)*t.DataType.Size())
		outer, inner := strides(shape, d, t.DataType.Size())
		var off int64
		for _, it := range batch {
			src := it.inputs[i].Data
			interleave(data, src, outer, inner, off, it.n, size)
			off += it.n
		}
		ins[i] = &Tensor{Name: t.Name, DataType: t.DataType, Shape: shape, Data: data}
	}
	all := make([]int, len(b.s.outputs))
	for j := range all {
		all[j] = j
	}
	ds, release, err := b.s.acquire(context.Background())
	if err != nil {
		return nil, st, err
	}
	defer release()
	outs, err := b.s.run(context.Background(), ds, ins, all, HeapAllocator{}, &st)
	return outs, st, err
}

// strides returns, for a tensor of shape batched along dimension d, how
// many blocks precede the batch dimension (outer) and the bytes one batch
// element holds in each block (inner).
func strides(shape []int64, d, elem int) (outer, inner int64) {
	outer, inner = 1, int64(elem)
	for i, x := range shape {
		switch {
		case i < d:
			outer *= x
		case i > d:
			inner *= x
		}
	}
	return outer, inner
}

// interleave copies a request's n batch elements (src, whose batch
// dimension is n) to positions [off, off+n) of the batch tensor dst (whose
// batch dimension is size), block by block.
func interleave(dst, src []byte, outer, inner, off, n, size int64) {
	for o := int64(0); o < outer; o++ {
		copy(dst[(o*size+off)*inner:(o*size+off+n)*inner], src[o*n*inner:(o+1)*n*inner])
	}
}

// split cuts a request's part out of the batch's outputs: positions
// [off, off+it.n) along each output's batch dimension.
func (b *batcher) split(outs []Tensor, it *batchItem, off, size int64) ([]Tensor, error) {
	res := make([]Tensor, len(it.want))
	for i, j := range it.want {
		o := outs[j]
		d := b.outDims[j]
		if d < 0 {
			res[i] = o
			continue
		}
		if len(o.Shape) <= d || o.Shape[d] != size {
			return nil, fmt.Errorf("%s/%s: output %q has shape %v for a batch of %d along dimension %d: %w", b.s.name, b.s.version, o.Name, o.Shape, size, d, ErrRunFailed)
		}
		shape := cloneShape(o.Shape)
		shape[d] = it.n
		outer, inner := strides(o.Shape, d, o.DataType.Size())
		var data []byte
		if outer == 1 {
			data = o.Data[off*inner : (off+it.n)*inner : (off+it.n)*inner]
		} else {
			data = make([]byte, outer*it.n*inner)
			for k := int64(0); k < outer; k++ {
				copy(data[k*it.n*inner:(k+1)*it.n*inner], o.Data[(k*size+off)*inner:(k*size+off+it.n)*inner])
			}
		}
		res[i] = Tensor{Name: o.Name, DataType: o.DataType, Shape: shape, Data: data}
	}
	return res, nil
}

// BatchStats are a batching version's counters (Session.BatchStats).
type BatchStats struct {
	// Sizes[n] counts batches of n inferences.
	Sizes []uint64
	// Queue[i] counts requests that waited in the queue for a time in
	// latency bucket i (LatencyBound); QueueSum is their total.
	Queue    [latencyBuckets]uint64
	QueueSum time.Duration
}

func (b *batcher) stats() BatchStats {
	out := BatchStats{Sizes: make([]uint64, len(b.sizes)), QueueSum: time.Duration(b.queueNanos.Load())}
	for i := range b.sizes {
		out.Sizes[i] = b.sizes[i].Load()
	}
	for i := range b.queue {
		out.Queue[i] = b.queue[i].Load()
	}
	return out
}
