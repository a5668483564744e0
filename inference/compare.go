package inference

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
)

// Drift is how far a candidate's outputs are from the primary's for one
// request (CompareOutputs).
type Drift struct {
	// Mismatch, when set, says why the outputs could not be compared
	// element by element (missing output, other type or shape); MaxAbsDiff
	// is then +Inf.
	Mismatch string
	// MaxAbsDiff is the largest |candidate − primary| over every numeric
	// element of every output (+Inf when exactly one side is NaN; 0 or
	// +Inf for BYTES/BOOL equal/unequal).
	MaxAbsDiff float64
	// CosineSum is the sum over float outputs of 1 − cos(primary,
	// candidate), CosineN their number.
	CosineSum float64
	CosineN   uint64
	// ArgmaxRows counts the rows (slices along the last axis, for outputs
	// whose last dimension is ≥ 2) and ArgmaxAgree those whose argmax is
	// the same in both.
	ArgmaxRows, ArgmaxAgree uint64
}

// CompareOutputs compares a candidate's outputs with the primary's, by
// output name. It allocates nothing per element.
func CompareOutputs(primary, candidate []Tensor) Drift {
	var d Drift
	mismatch := func(format string, args ...any) Drift {
		d.Mismatch = fmt.Sprintf(format, args...)
		d.MaxAbsDiff = math.Inf(1)
		return d
	}
	if len(primary) != len(candidate) {
		return mismatch("%d outputs vs %d", len(primary), len(candidate))
	}
	for i := range primary {
		p := &primary[i]
		var c *Tensor
		for j := range candidate {
			if candidate[j].Name == p.Name {
				c = &candidate[j]
				break
			}
		}
		switch {
		case c == nil:
			return mismatch("output %q missing", p.Name)
		case c.DataType != p.DataType:
			return mismatch("output %q: %s vs %s", p.Name, p.DataType, c.DataType)
		case !slices.Equal(c.Shape, p.Shape):
			return mismatch("output %q: shape %v vs %v", p.Name, p.Shape, c.Shape)
		}
		if p.DataType == Bytes {
			if !slices.EqualFunc(p.Strings, c.Strings, bytes.Equal) {
				d.MaxAbsDiff = math.Inf(1)
			}
			continue
		}
		size := p.DataType.Size()
		if size == 0 || len(p.Data) != len(c.Data) || len(p.Data)%size != 0 {
			return mismatch("output %q: %d vs %d bytes", p.Name, len(p.Data), len(c.Data))
		}
		compareNumeric(&d, p, c)
	}
	return d
}

func compareNumeric(d *Drift, p, c *Tensor) {
	n := len(p.Data) / p.DataType.Size()
	row := n
	if r := len(p.Shape); r > 0 && p.Shape[r-1] >= 2 {
		row = int(p.Shape[r-1])
	} else {
		row = 0 // no argmax for scalars and single-column outputs
	}
	isFloat := p.DataType == FP16 || p.DataType == BF16 || p.DataType == FP32 || p.DataType == FP64
	var dot, np2, nc2 float64
	pBest, cBest := math.Inf(-1), math.Inf(-1)
	pArg, cArg := 0, 0
	for i := 0; i < n; i++ {
		a, b := elementAt(p, i), elementAt(c, i)
		switch {
		case math.IsNaN(a) && math.IsNaN(b):
		case math.IsNaN(a) || math.IsNaN(b):
			d.MaxAbsDiff = math.Inf(1)
		default:
			if diff := math.Abs(a - b); diff > d.MaxAbsDiff || math.IsNaN(diff) {
				if math.IsNaN(diff) { // Inf − Inf
					diff = math.Inf(1)
				}
				d.MaxAbsDiff = diff
			}
			dot += a * b
			np2 += a * a
			nc2 += b * b
		}
		if row > 0 {
			k := i % row
			if k == 0 {
				pBest, cBest, pArg, cArg = math.Inf(-1), math.Inf(-1), 0, 0
			}
			if a > pBest {
				pBest, pArg = a, k
			}
			if b > cBest {
				cBest, cArg = b, k
			}
			if k == row-1 {
				d.ArgmaxRows++
				if pArg == cArg {
					d.ArgmaxAgree++
				}
			}
		}
	}
	if !isFloat {
		return
	}
	d.CosineN++
	switch {
	case np2 == 0 && nc2 == 0:
		// both all-zero: identical
	case np2 == 0 || nc2 == 0:
		d.CosineSum++ // one side all-zero: orthogonal
	default:
		cos := dot / (math.Sqrt(np2) * math.Sqrt(nc2))
		if math.IsNaN(cos) || math.IsInf(cos, 0) {
			d.CosineSum += 2
		} else {
			d.CosineSum += 1 - math.Max(-1, math.Min(1, cos))
		}
	}
}

// elementAt decodes element i of a numeric tensor as float64.
func elementAt(t *Tensor, i int) float64 {
	le := binary.LittleEndian
	switch t.DataType {
	case Bool, Uint8:
		return float64(t.Data[i])
	case Int8:
		return float64(int8(t.Data[i]))
	case Uint16:
		return float64(le.Uint16(t.Data[2*i:]))
	case Int16:
		return float64(int16(le.Uint16(t.Data[2*i:])))
	case Uint32:
		return float64(le.Uint32(t.Data[4*i:]))
	case Int32:
		return float64(int32(le.Uint32(t.Data[4*i:])))
	case Uint64:
		return float64(le.Uint64(t.Data[8*i:]))
	case Int64:
		return float64(int64(le.Uint64(t.Data[8*i:])))
	case FP16:
		return fp16Float(le.Uint16(t.Data[2*i:]))
	case BF16:
		return float64(math.Float32frombits(uint32(le.Uint16(t.Data[2*i:])) << 16))
	case FP32:
		return float64(math.Float32frombits(le.Uint32(t.Data[4*i:])))
	case FP64:
		return math.Float64frombits(le.Uint64(t.Data[8*i:]))
	}
	return 0
}

// fp16Float decodes an IEEE 754 half-precision value.
func fp16Float(h uint16) float64 {
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	exp := int(h>>10) & 0x1f
	frac := float64(h & 0x3ff)
	switch exp {
	case 0:
		return sign * math.Ldexp(frac, -24)
	case 0x1f:
		if frac != 0 {
			return math.NaN()
		}
		return sign * math.Inf(1)
	}
	return sign * math.Ldexp(1+frac/1024, exp-15)
}
