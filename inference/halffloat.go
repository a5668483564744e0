package inference

import (
	"encoding/binary"
	"fmt"
	"math"
)

// FP16 (IEEE 754 binary16: 5 exponent bits, 10 mantissa bits) and BF16
// (bfloat16: 8 exponent bits, 7 mantissa bits) conversions. Converting from
// float64 directly, rounding once to nearest-even, avoids the double rounding
// of going through float32.

// toSmallFloat rounds f to the nearest small float with expBits exponent
// bits and mantBits mantissa bits, ties to even, and returns its bits.
// NaN maps to a quiet NaN; values past the largest finite value map to
// infinity (callers that must reject that check with smallFloatIsInf).
func toSmallFloat(f float64, expBits, mantBits uint) uint16 {
	b := math.Float64bits(f)
	sign := uint16(b>>63) << (expBits + mantBits)
	exp := int((b >> 52) & 0x7ff)
	mant := b & (1<<52 - 1)
	expMax := uint64(1)<<expBits - 1
	infBits := uint16(expMax << mantBits)
	if exp == 0x7ff {
		if mant != 0 {
			return sign | infBits | 1<<(mantBits-1) // quiet NaN
		}
		return sign | infBits
	}
	if exp == 0 { // zero or float64 subnormal: far below any small-float subnormal
		return sign
	}
	bias := 1<<(expBits-1) - 1
	e := exp - 1023 // unbiased
	if e > bias {
		return sign | infBits
	}
	var h, rem, half uint64
	if e >= 1-bias { // normal: drop 52-mantBits mantissa bits
		shift := 52 - mantBits
		h = uint64(e+bias)<<mantBits | mant>>shift
		rem = mant & (1<<shift - 1)
		half = 1 << (shift - 1)
	} else { // subnormal in the small format
		m := mant | 1<<52
		shift := uint(52-int(mantBits)) + uint(1-bias-e)
		if shift > 63 {
			return sign
		}
		h = m >> shift
		rem = m & (1<<shift - 1)
		half = 1 << (shift - 1)
	}
	if rem > half || (rem == half && h&1 == 1) {
		h++ // may carry into the exponent, up to infinity: both correct
	}
	return sign | uint16(h)
}

// fromSmallFloat widens small-float bits to float64 exactly.
func fromSmallFloat(h uint16, expBits, mantBits uint) float64 {
	sign := 1.0
	if h>>(expBits+mantBits)&1 == 1 {
		sign = -1
	}
	exp := int(h>>mantBits) & (1<<expBits - 1)
	mant := float64(h & (1<<mantBits - 1))
	bias := 1<<(expBits-1) - 1
	switch {
	case exp == 1<<expBits-1:
		if mant != 0 {
			return math.NaN()
		}
		return math.Inf(int(sign))
	case exp == 0:
		return sign * math.Ldexp(mant, 1-bias-int(mantBits))
	}
	return sign * math.Ldexp(mant+float64(uint64(1)<<mantBits), exp-bias-int(mantBits))
}

// Float64ToFP16 rounds f to the nearest FP16, ties to even.
func Float64ToFP16(f float64) uint16 { return toSmallFloat(f, 5, 10) }
// FP16ToFloat64 widens FP16 bits to float64 exactly.
func FP16ToFloat64(h uint16) float64 { return fromSmallFloat(h, 5, 10) }
// Float64ToBF16 rounds f to the nearest BF16, ties to even.
func Float64ToBF16(f float64) uint16 { return toSmallFloat(f, 8, 7) }
// BF16ToFloat64 widens BF16 bits to float64 exactly.
func BF16ToFloat64(h uint16) float64 { return fromSmallFloat(h, 8, 7) }

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
		putUint(b, 2, uint64(Float64ToFP16(f)))
	case BF16:
		putUint(b, 2, uint64(Float64ToBF16(f)))
	case FP32:
		putUint(b, 4, uint64(math.Float32bits(float32(f))))
	case FP64:
		putUint(b, 8, math.Float64bits(f))
	case Uint64:
		putUint(b, 8, uint64(f))
	default: // signed and narrower unsigned integers
		putUint(b, dt.Size(), uint64(int64(f)))
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

func putUint(b []byte, size int, x uint64) {
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
