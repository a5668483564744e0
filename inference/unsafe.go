package inference

// This file holds all of the package's unsafe code: reinterpreting the typed
// slices that onnxruntime_go hands back as the little-endian bytes of a
// Tensor. Every supported target (x86-64, arm64) is little-endian, which is
// also the byte order of Tensor.Data, so a reinterpretation is the encoding.

import (
	"encoding/binary"
	"math"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"
)

// sliceBytes returns the bytes of s without copying. The result aliases s.
func sliceBytes[T any](s []T) []byte {
	if len(s) == 0 {
		return nil
	}
	var zero T
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), len(s)*int(unsafe.Sizeof(zero)))
}

// valueBytes returns the data of a fixed-size ORT value that onnxruntime_go
// allocated in Go memory (an ORT-allocated output after its copy), aliasing
// it. ok is false for values of other kinds.
func valueBytes(v ort.Value) (b []byte, ok bool) {
	switch t := v.(type) {
	case *ort.Tensor[float32]:
		return sliceBytes(t.GetData()), true
	case *ort.Tensor[float64]:
		return sliceBytes(t.GetData()), true
	case *ort.Tensor[int8]:
		return sliceBytes(t.GetData()), true
	case *ort.Tensor[uint8]:
		return sliceBytes(t.GetData()), true
	case *ort.Tensor[int16]:
		return sliceBytes(t.GetData()), true
	case *ort.Tensor[uint16]:
		return sliceBytes(t.GetData()), true
	case *ort.Tensor[int32]:
		return sliceBytes(t.GetData()), true
	case *ort.Tensor[uint32]:
		return sliceBytes(t.GetData()), true
	case *ort.Tensor[int64]:
		return sliceBytes(t.GetData()), true
	case *ort.Tensor[uint64]:
		return sliceBytes(t.GetData()), true
	case *ort.Tensor[bool]:
		// Go's bool is one byte holding 0 or 1, as ONNX's.
		return sliceBytes(t.GetData()), true
	case *ort.CustomDataTensor:
		return t.GetData(), true
	}
	return nil, false
}

// scalarValue makes a rank-0 ORT value holding the one element in data
// (onnxruntime_go's tensors reject rank 0, its Scalar copies the value).
func scalarValue(dt DataType, data []byte) (ort.Value, error) {
	le := binary.LittleEndian
	switch dt {
	case Bool:
		return ort.NewScalar(data[0] != 0)
	case Uint8:
		return ort.NewScalar(data[0])
	case Int8:
		return ort.NewScalar(int8(data[0]))
	case Uint16:
		return ort.NewScalar(le.Uint16(data))
	case Int16:
		return ort.NewScalar(int16(le.Uint16(data)))
	case Uint32:
		return ort.NewScalar(le.Uint32(data))
	case Int32:
		return ort.NewScalar(int32(le.Uint32(data)))
	case Uint64:
		return ort.NewScalar(le.Uint64(data))
	case Int64:
		return ort.NewScalar(int64(le.Uint64(data)))
	case FP32:
		return ort.NewScalar(math.Float32frombits(le.Uint32(data)))
	case FP64:
		return ort.NewScalar(math.Float64frombits(le.Uint64(data)))
	}
	return nil, ErrUnsupported
}

// emptyScalar makes a rank-0 ORT value for ORT to write an output into.
func emptyScalar(dt DataType) (ort.Value, error) {
	switch dt {
	case Bool:
		return ort.NewEmptyScalar[bool]()
	case Uint8:
		return ort.NewEmptyScalar[uint8]()
	case Int8:
		return ort.NewEmptyScalar[int8]()
	case Uint16:
		return ort.NewEmptyScalar[uint16]()
	case Int16:
		return ort.NewEmptyScalar[int16]()
	case Uint32:
		return ort.NewEmptyScalar[uint32]()
	case Int32:
		return ort.NewEmptyScalar[int32]()
	case Uint64:
		return ort.NewEmptyScalar[uint64]()
	case Int64:
		return ort.NewEmptyScalar[int64]()
	case FP32:
		return ort.NewEmptyScalar[float32]()
	case FP64:
		return ort.NewEmptyScalar[float64]()
	}
	return nil, ErrUnsupported
}

// scalarBytes copies the element of a rank-0 value made by emptyScalar into dst.
func scalarBytes(v ort.Value, dst []byte) bool {
	put := func(p unsafe.Pointer, n int) { copy(dst, unsafe.Slice((*byte)(p), n)) }
	switch t := v.(type) {
	case *ort.Scalar[bool]:
		x := t.GetData()
		put(unsafe.Pointer(&x), 1)
	case *ort.Scalar[uint8]:
		x := t.GetData()
		put(unsafe.Pointer(&x), 1)
	case *ort.Scalar[int8]:
		x := t.GetData()
		put(unsafe.Pointer(&x), 1)
	case *ort.Scalar[uint16]:
		x := t.GetData()
		put(unsafe.Pointer(&x), 2)
	case *ort.Scalar[int16]:
		x := t.GetData()
		put(unsafe.Pointer(&x), 2)
	case *ort.Scalar[uint32]:
		x := t.GetData()
		put(unsafe.Pointer(&x), 4)
	case *ort.Scalar[int32]:
		x := t.GetData()
		put(unsafe.Pointer(&x), 4)
	case *ort.Scalar[uint64]:
		x := t.GetData()
		put(unsafe.Pointer(&x), 8)
	case *ort.Scalar[int64]:
		x := t.GetData()
		put(unsafe.Pointer(&x), 8)
	case *ort.Scalar[float32]:
		x := t.GetData()
		put(unsafe.Pointer(&x), 4)
	case *ort.Scalar[float64]:
		x := t.GetData()
		put(unsafe.Pointer(&x), 8)
	default:
		return false
	}
	return true
}
