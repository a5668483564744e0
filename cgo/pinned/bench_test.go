package pinned

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// tensor4_9MB is the size of a 1×3×640×640 float32 image tensor (4.9 MB).
const tensor4_9MB = 3 * 640 * 640 * 4

func newBenchPool(b *testing.B) *Pool {
	b.Helper()
	opts := DefaultOptions()
	opts.DisableCUDA = true
	p, err := NewPool(opts, zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	return p
}

// reportCAllocs reports the C allocations per op after warm-up (want 0).
func reportCAllocs(b *testing.B, p *Pool, before int64) {
	b.ReportMetric(float64(p.Stats().CAllocs-before)/float64(b.N), "C-allocs/op")
}

// BenchmarkGetPut is Get (which zeroes the n bytes) and Put of one buffer.
func BenchmarkGetPut(b *testing.B) {
	for _, bc := range []struct {
		name string
		n    int
	}{{"4KiB", 4 << 10}, {"4.9MB", tensor4_9MB}} {
		b.Run(bc.name, func(b *testing.B) {
			p := newBenchPool(b)
			ctx := context.Background()
			p.Put(mustGet(b, p, bc.n)) // warm-up
			before := p.Stats().CAllocs
			b.SetBytes(int64(bc.n))
			b.ReportAllocs()
			for b.Loop() {
				buf, err := p.Get(ctx, bc.n)
				if err != nil {
					b.Fatal(err)
				}
				p.Put(buf)
			}
			reportCAllocs(b, p, before)
		})
	}
}

// BenchmarkZero4_9MB is the zeroing Get does, alone: its share of GetPut.
func BenchmarkZero4_9MB(b *testing.B) {
	p := newBenchPool(b)
	buf := mustGet(b, p, tensor4_9MB)
	defer p.Put(buf)
	b.SetBytes(tensor4_9MB)
	for b.Loop() {
		clear(buf.Bytes())
	}
}

// BenchmarkLease is one request: a lease, an input tensor of 4.9 MB and two
// small outputs, then Release; zeroed (Alloc) or not (AllocOverwrite, what
// the decoders and ONNX Runtime's outputs use).
func BenchmarkLease(b *testing.B) {
	b.Run("Alloc", func(b *testing.B) { benchmarkLease(b, (*Lease).Alloc) })
	b.Run("AllocOverwrite", func(b *testing.B) { benchmarkLease(b, (*Lease).AllocOverwrite) })
}

func benchmarkLease(b *testing.B, alloc func(*Lease, context.Context, int) ([]byte, error)) {
	p := newBenchPool(b)
	ctx := context.Background()
	run := func() {
		l := p.Lease()
		for _, n := range []int{tensor4_9MB, 16 << 10, 400} {
			if _, err := alloc(l, ctx, n); err != nil {
				b.Fatal(err)
			}
		}
		l.Release()
	}
	run() // warm-up
	before := p.Stats().CAllocs
	b.ReportAllocs()
	for b.Loop() {
		run()
	}
	reportCAllocs(b, p, before)
}

// BenchmarkGetPutParallel measures contention on the pool's mutex.
func BenchmarkGetPutParallel(b *testing.B) {
	p := newBenchPool(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			buf, err := p.Get(ctx, 64<<10)
			if err != nil {
				b.Error(err)
				return
			}
			p.Put(buf)
		}
	})
}
