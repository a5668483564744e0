package inference

import (
	"context"
	"fmt"
	"math"

	"github.com/edgeai/edge-node/errdefs"
)

// Sentinel errors. Errors returned by this package wrap one of them so that
// callers (the HTTP layer) can map them with errors.Is and
// errdefs.HTTPStatus. They are the errdefs family under this package's
// names: ErrNotFound is errdefs.ErrNotFound, the same value as
// models.ErrNotFound, and so on; ErrRunFailed is this package's own
// sentinel of class errdefs.ErrInternal.
var (
	// ErrInvalidArgument: the request does not fit the model (name, dtype,
	// shape, size). 400.
	ErrInvalidArgument = errdefs.ErrInvalidArgument
	// ErrNotFound: no such model or version. 404.
	ErrNotFound = errdefs.ErrNotFound
	// ErrUnavailable: the model exists but cannot serve now (loading,
	// closing, out of buffers). 503.
	ErrUnavailable = errdefs.ErrUnavailable
	// ErrUnsupported: a feature the model or this build does not support.
	// 501.
	ErrUnsupported = errdefs.ErrUnsupported
	// ErrRunFailed: ONNX Runtime failed while running the model (a kernel
	// error, an input the graph cannot process) or returned something this
	// package cannot map. Retrying the same request will not help. 500.
	ErrRunFailed = errdefs.Sentinel(errdefs.ErrInternal, "model run failed")
)

// TensorInfo describes one model input or output. A dimension of -1 is
// variable.
type TensorInfo struct {
	Name     string
	DataType DataType
	Shape    []int64
}

// Tensor is one named tensor crossing the package boundary.
//
// For fixed-size types Data holds the elements little-endian, row-major and
// unpadded (BOOL one byte each); it may be backed by C memory from an
// Allocator and is then only valid until that allocation is released. For
// Bytes, Strings holds one entry per element and Data is nil.
type Tensor struct {
	Name     string
	DataType DataType
	Shape    []int64
	Data     []byte
	Strings  [][]byte
}

// Allocator hands out byte buffers for tensor data. A request-scoped
// allocator releases everything it handed out when the request ends.
type Allocator interface {
	// Alloc returns a buffer of exactly n bytes; its contents are
	// unspecified. It may block until ctx is done when memory is exhausted,
	// and then returns an error wrapping ErrUnavailable.
	Alloc(ctx context.Context, n int) ([]byte, error)
}

// OverwriteAllocator is an Allocator that can skip clearing a buffer its
// caller overwrites in full before anything reads it (a pooled buffer that
// is reused holds its last user's bytes until then).
type OverwriteAllocator interface {
	AllocOverwrite(ctx context.Context, n int) ([]byte, error)
}

// AllocOverwrite returns n bytes from a that the caller promises to write in
// full before anything reads them: a's AllocOverwrite when it has one (no
// clearing), else a.Alloc.
func AllocOverwrite(ctx context.Context, a Allocator, n int) ([]byte, error) {
	if o, ok := a.(OverwriteAllocator); ok {
		return o.AllocOverwrite(ctx, n)
	}
	return a.Alloc(ctx, n)
}

// HeapAllocator allocates on the Go heap. It is the plain (copying) path.
type HeapAllocator struct{}

// Alloc implements Allocator.
func (HeapAllocator) Alloc(_ context.Context, n int) ([]byte, error) {
	return make([]byte, n), nil
}

// MaxElements bounds the element count of any one tensor (2^31), far above
// what an edge model takes and low enough that byte sizes never overflow.
const MaxElements = 1 << 31

// ElementCount returns the number of elements of shape, or an error wrapping
// ErrInvalidArgument for negative dimensions or a count over MaxElements.
// A rank-0 shape (a scalar) has one element.
func ElementCount(shape []int64) (int64, error) {
	n := int64(1)
	for i, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("dimension %d is %d: %w", i, d, ErrInvalidArgument)
		}
		if d != 0 && n > math.MaxInt64/d {
			return 0, fmt.Errorf("shape %v overflows: %w", shape, ErrInvalidArgument)
		}
		n *= d
		if n > MaxElements {
			return 0, fmt.Errorf("shape %v has more than %d elements: %w", shape, int64(MaxElements), ErrInvalidArgument)
		}
	}
	return n, nil
}
