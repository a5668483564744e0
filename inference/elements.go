package inference

import (
	"encoding/binary"
	"fmt"
	"math"
)

// PutFloat64 stores f as one element of dt at the start of b, little-endian
// (integers truncated toward zero, BOOL as 0/1). b must hold dt.Size()
// bytes; dt must be numeric.
func (dt DataType) PutFloat64(b []byte, f float64) {
	switch dt {
	case Bool:
		b[0] = 0
		if f != 0 {
			b[0] = 1
		}
	case FP16:
		PutUint(b, 2, uint64(Float64ToFP16(f)))
	case BF16:
		PutUint(b, 2, uint64(Float64ToBF16(f)))
	case FP32:
		PutUint(b, 4, uint64(math.Float32bits(float32(f))))
	case FP64:
		PutUint(b, 8, math.Float64bits(f))
	case Uint64:
		PutUint(b, 8, uint64(f))
	default: // signed and narrower unsigned integers
		PutUint(b, dt.Size(), uint64(int64(f)))
	}
}

// Float64s decodes a numeric tensor's elements as float64.
func (t Tensor) Float64s() ([]float64, error) {
	size := t.DataType.Size()
	if size == 0 || t.DataType == Bytes {
		return nil, fmt.Errorf("datatype %s is not numeric", t.DataType)
	}
	out := make([]float64, len(t.Data)/size)
	for i := range out {
		b := t.Data[i*size:]
		var x uint64
		switch size {
		case 2:
			x = uint64(binary.LittleEndian.Uint16(b))
		case 4:
			x = uint64(binary.LittleEndian.Uint32(b))
		case 8:
			x = binary.LittleEndian.Uint64(b)
		default:
			x = uint64(b[0])
		}
		shift := 64 - 8*uint(size)
		switch t.DataType {
		case Int8, Int16, Int32, Int64:
			out[i] = float64(int64(x<<shift) >> shift)
		case FP16:
			out[i] = FP16ToFloat64(uint16(x))
		case BF16:
			out[i] = BF16ToFloat64(uint16(x))
		case FP32:
			out[i] = float64(math.Float32frombits(uint32(x)))
		case FP64:
			out[i] = math.Float64frombits(x)
		default: // BOOL and unsigned integers
			out[i] = float64(x)
		}
	}
	return out, nil
}

// PutUint stores the low size bytes of x (size 1, 2, 4 or 8) at the start
// of b, little-endian.
func PutUint(b []byte, size int, x uint64) {
	switch size {
	case 1:
		b[0] = byte(x)
	case 2:
		binary.LittleEndian.PutUint16(b, uint16(x))
	case 4:
		binary.LittleEndian.PutUint32(b, uint32(x))
	case 8:
		binary.LittleEndian.PutUint64(b, x)
	}
}
