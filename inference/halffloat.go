package inference

import "math"

// FP16 (IEEE 754 binary16: 5 exponent bits, 10 mantissa bits) and BF16
// (bfloat16: 8 exponent bits, 7 mantissa bits) conversions, for whoever
// reads or writes those elements of a Tensor's Data (the KServe codec, the
// engine's golden warm-up). Converting from float64 directly, rounding once
// to nearest-even, avoids the double rounding of going through float32.

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

// smallFloatIsInf reports whether bits are ±infinity.
func smallFloatIsInf(h uint16, expBits, mantBits uint) bool {
	return h&(1<<(expBits+mantBits)-1) == uint16((1<<expBits-1)<<mantBits)
}

// Float64ToFP16 rounds f to the nearest FP16, ties to even, and returns its
// bits. NaN is a quiet NaN; values past ±65504 (after rounding) are ±Inf.
func Float64ToFP16(f float64) uint16 { return toSmallFloat(f, 5, 10) }

// FP16ToFloat64 widens FP16 bits to float64 exactly.
func FP16ToFloat64(h uint16) float64 { return fromSmallFloat(h, 5, 10) }

// FP16IsInf reports whether FP16 bits are ±Inf (for callers that must reject
// a finite value Float64ToFP16 rounded to infinity).
func FP16IsInf(h uint16) bool { return smallFloatIsInf(h, 5, 10) }

// Float64ToBF16 rounds f to the nearest BF16, ties to even, and returns its
// bits. NaN is a quiet NaN; values past the largest finite BF16 are ±Inf.
func Float64ToBF16(f float64) uint16 { return toSmallFloat(f, 8, 7) }

// BF16ToFloat64 widens BF16 bits to float64 exactly.
func BF16ToFloat64(h uint16) float64 { return fromSmallFloat(h, 8, 7) }

// BF16IsInf reports whether BF16 bits are ±Inf.
func BF16IsInf(h uint16) bool { return smallFloatIsInf(h, 8, 7) }
