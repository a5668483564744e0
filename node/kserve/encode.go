package kserve

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strconv"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/edgeai/edge-node/inference"
)

// Response JSON is appended with strconv into pooled buffers: no reflection
// over element slices and, once the pool is warm, no per-request garbage
// proportional to the output size.

// maxPooledBuffer is the largest buffer kept for reuse; larger ones (a huge
// JSON output) are left to the collector.
const maxPooledBuffer = 16 << 20

// bufferPool is a bounded free list rather than a sync.Pool: a sync.Pool is
// emptied by every second GC, and a multi-megabyte JSON response makes GCs
// frequent, so it would hand out fresh buffers most of the time. At most
// cap(bufferPool) buffers are kept.
var bufferPool = make(chan *[]byte, 8)

func getBuffer() *[]byte {
	select {
	case b := <-bufferPool:
		return b
	default:
		b := make([]byte, 0, 4096)
		return &b
	}
}

func putBuffer(b *[]byte) {
	if cap(*b) > maxPooledBuffer {
		return
	}
	*b = (*b)[:0]
	select {
	case bufferPool <- b:
	default:
	}
}

// appendResponseHeader appends the JSON response for outs. Outputs with
// binary[i] set get a binary_data_size parameter instead of "data"; their
// bytes follow the header (writeBinarySections). Outputs with a non-empty
// shm[i] (shm may be nil) were written to that shared-memory region: they
// get its name and their byte size instead.
func appendResponseHeader(b []byte, model, version string, id []byte, outs []inference.Tensor, binary []bool, shm []string) ([]byte, error) {
	b = append(b, `{"model_name":`...)
	b, _ = jsontext.AppendQuote(b, model)
	if version != "" {
		b = append(b, `,"model_version":`...)
		b, _ = jsontext.AppendQuote(b, version)
	}
	if id != nil {
		b = append(b, `,"id":`...)
		b = append(b, id...) // the request's literal, already valid JSON
	}
	b = append(b, `,"outputs":[`...)
	for i := range outs {
		t := &outs[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"name":`...)
		b, _ = jsontext.AppendQuote(b, t.Name)
		b = append(b, `,"datatype":"`...)
		b = append(b, t.DataType.String()...)
		b = append(b, `","shape":[`...)
		for j, d := range t.Shape {
			if j > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, d, 10)
		}
		b = append(b, ']')
		if shm != nil && shm[i] != "" {
			b = append(b, `,"parameters":{"shared_memory_region":`...)
			b, _ = jsontext.AppendQuote(b, shm[i])
			b = append(b, `,"shared_memory_byte_size":`...)
			b = strconv.AppendInt(b, RawSize(t), 10)
			b = append(b, "}}"...)
			continue
		}
		if binary[i] {
			b = append(b, `,"parameters":{"binary_data_size":`...)
			b = strconv.AppendInt(b, RawSize(t), 10)
			b = append(b, "}}"...)
			continue
		}
		b = append(b, `,"data":`...)
		var err error
		if b, err = appendTensorData(b, t); err != nil {
			return b, fmt.Errorf("output %q: %w", t.Name, err)
		}
		b = append(b, '}')
	}
	return append(b, "]}"...), nil
}

// RawSize is the size of t in Triton's raw layout (the binary extension's
// section, raw_output_contents, a shared-memory region): its bytes, or for
// BYTES each element as a 4-byte little-endian length and its bytes.
func RawSize(t *inference.Tensor) int64 {
	if t.DataType == inference.Bytes {
		return bytesSectionSize(t.Strings)
	}
	return int64(len(t.Data))
}

// PutRaw writes t in the raw layout into b, which holds at least
// RawSize(t) bytes.
func PutRaw(b []byte, t *inference.Tensor) {
	if t.DataType != inference.Bytes {
		copy(b, t.Data)
		return
	}
	off := 0
	for _, s := range t.Strings {
		binary.LittleEndian.PutUint32(b[off:], uint32(len(s)))
		off += 4 + copy(b[off+4:], s)
	}
}

// appendTensorData appends t's elements as a flat JSON array. JSON has no
// NaN or infinity: a non-finite float is an error (binary output carries
// it).
func appendTensorData(b []byte, t *inference.Tensor) ([]byte, error) {
	b = append(b, '[')
	d := t.Data
	size := t.DataType.Size()
	if t.DataType != inference.Bytes && size > 0 && len(d)%size != 0 {
		return b, fmt.Errorf("%d bytes is not a whole number of %s elements", len(d), t.DataType)
	}
	nonFinite := func(i int) error {
		return fmt.Errorf("element %d is not finite, which JSON cannot carry; ask for binary_data output", i)
	}
	switch t.DataType {
	case inference.Bytes:
		for i, s := range t.Strings {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = jsontext.AppendQuote(b, s); err != nil {
				return b, fmt.Errorf("element %d is not valid UTF-8, which JSON cannot carry; ask for binary_data output", i)
			}
		}
	case inference.Bool:
		for i, x := range d {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendBool(b, x != 0)
		}
	case inference.FP32:
		for i := 0; i < len(d); i += 4 {
			f := math.Float32frombits(binary.LittleEndian.Uint32(d[i:]))
			if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
				return b, nonFinite(i / 4)
			}
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendFloat(b, float64(f), 'g', -1, 32)
		}
	case inference.FP64:
		for i := 0; i < len(d); i += 8 {
			f := math.Float64frombits(binary.LittleEndian.Uint64(d[i:]))
			if math.IsNaN(f) || math.IsInf(f, 0) {
				return b, nonFinite(i / 8)
			}
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendFloat(b, f, 'g', -1, 64)
		}
	case inference.FP16, inference.BF16:
		for i := 0; i < len(d); i += 2 {
			h := binary.LittleEndian.Uint16(d[i:])
			f := inference.FP16ToFloat64(h)
			if t.DataType == inference.BF16 {
				f = inference.BF16ToFloat64(h)
			}
			if math.IsNaN(f) || math.IsInf(f, 0) {
				return b, nonFinite(i / 2)
			}
			if i > 0 {
				b = append(b, ',')
			}
			// Both widen exactly to float32, whose shortest form parses
			// back to the same value.
			b = strconv.AppendFloat(b, f, 'g', -1, 32)
		}
	case inference.Int8:
		for i, x := range d {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, int64(int8(x)), 10)
		}
	case inference.Uint8:
		for i, x := range d {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendUint(b, uint64(x), 10)
		}
	case inference.Int16, inference.Int32, inference.Int64:
		for i := 0; i < len(d); i += size {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, signExtend(getUint(d[i:], size), size), 10)
		}
	case inference.Uint16, inference.Uint32, inference.Uint64:
		for i := 0; i < len(d); i += size {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendUint(b, getUint(d[i:], size), 10)
		}
	default:
		return b, fmt.Errorf("datatype %s cannot be encoded", t.DataType)
	}
	return append(b, ']'), nil
}

func getUint(b []byte, size int) uint64 {
	switch size {
	case 2:
		return uint64(binary.LittleEndian.Uint16(b))
	case 4:
		return uint64(binary.LittleEndian.Uint32(b))
	case 8:
		return binary.LittleEndian.Uint64(b)
	}
	return uint64(b[0])
}

func signExtend(x uint64, size int) int64 {
	shift := 64 - 8*uint(size)
	return int64(x<<shift) >> shift
}

// writeBinarySections writes the binary outputs' bytes after the header,
// straight from the tensors' memory.
func writeBinarySections(w io.Writer, outs []inference.Tensor, binary []bool) error {
	for i := range outs {
		if !binary[i] {
			continue
		}
		t := &outs[i]
		if t.DataType != inference.Bytes {
			if _, err := w.Write(t.Data); err != nil {
				return err
			}
			continue
		}
		var l [4]byte
		for _, s := range t.Strings {
			binaryPutLen(&l, len(s))
			if _, err := w.Write(l[:]); err != nil {
				return err
			}
			if _, err := w.Write(s); err != nil {
				return err
			}
		}
	}
	return nil
}

func binaryPutLen(l *[4]byte, n int) { binary.LittleEndian.PutUint32(l[:], uint32(n)) }
