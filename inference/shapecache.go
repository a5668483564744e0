package inference

import (
	"encoding/binary"
	"sync"
)

// maxShapeCacheEntries bounds a session's cache of output shapes. A model
// served at a handful of input shapes (fixed frame sizes, a few image
// sizes, batch sizes up to max_batch) fits; beyond that entries are evicted
// in no particular order and the affected runs let ONNX Runtime allocate.
const maxShapeCacheEntries = 64

// shapeCache maps the input shapes of a run to the output shapes ONNX
// Runtime produced for them, so that the next run with the same input
// shapes can preallocate its outputs.
type shapeCache struct {
	// mu guards m.
	mu sync.RWMutex
	m  map[string][][]int64 // shapeKey → output shapes (never modified after put)
}

// shapeKey appends a key for the input shapes to dst (varints: rank, dims).
func shapeKey(dst []byte, inputs []*Tensor) []byte {
	for _, t := range inputs {
		dst = binary.AppendUvarint(dst, uint64(len(t.Shape)))
		for _, d := range t.Shape {
			dst = binary.AppendVarint(dst, d)
		}
	}
	return dst
}

func (c *shapeCache) get(key []byte) [][]int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.m[string(key)] // no allocation for the lookup
}

func (c *shapeCache) put(key []byte, shapes [][]int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[string(key)]; ok {
		return
	}
	if len(c.m) >= maxShapeCacheEntries {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[string(key)] = shapes
}

func (c *shapeCache) forget(key []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, string(key))
}
