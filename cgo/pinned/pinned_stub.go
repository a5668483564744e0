//go:build !cgo || !linux

// Stub for builds without cgo: the same API, always Plain mode, memory from
// the Go heap (no page-alignment guarantee, nothing locked, no CUDA).

package pinned

import "errors"

func detect(Options) (backend, Mode, string) {
	return heapBackend{}, Plain, "built without cgo: Go heap memory, not pinned"
}

type heapBackend struct{}

func (heapBackend) alloc(size int) ([]byte, bool, error) { return make([]byte, size), false, nil }
func (heapBackend) free([]byte) error                    { return nil }
func (heapBackend) register([]byte) (Mode, error)        { return Plain, nil }
func (heapBackend) unregister(Mode, []byte) error        { return nil }

// cudaLib is never opened in stub builds.
type cudaLib struct{}

func openCUDA(string) (*cudaLib, error) { return nil, errors.New("built without cgo") }

func (*cudaLib) int64Symbol(string) (int64, error) { return 0, errors.New("built without cgo") }
