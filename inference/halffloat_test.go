package inference

import (
	"math"
	"testing"
)

// Every finite FP16 and BF16 value survives widening and rounding back.
func TestSmallFloatRoundTripsEveryValue(t *testing.T) {
	for _, f := range []struct {
		name      string
		exp, mant uint
	}{{"FP16", 5, 10}, {"BF16", 8, 7}} {
		for i := 0; i < 1<<16; i++ {
			h := uint16(i)
			v := fromSmallFloat(h, f.exp, f.mant)
			got := toSmallFloat(v, f.exp, f.mant)
			if math.IsNaN(v) {
				if fromSmallFloat(got, f.exp, f.mant) == fromSmallFloat(got, f.exp, f.mant) {
					t.Fatalf("%s %#04x: NaN came back as %#04x", f.name, h, got)
				}
				continue
			}
			if got != h {
				t.Fatalf("%s %#04x (%g): came back as %#04x", f.name, h, v, got)
			}
		}
	}
}

func TestFloat64ToFP16Rounding(t *testing.T) {
	for _, c := range []struct {
		in   float64
		want uint16
	}{
		{1, 0x3c00},
		{-2, 0xc000},
		{65504, 0x7bff},
		{65520, 0x7c00},              // halfway to the next binade rounds to even: infinity
		{65519.99, 0x7bff},           // just below halfway
		{1 + 1.0/2048, 0x3c00},       // tie between 1 and 1+2^-10 goes to even (1)
		{1 + 3.0/2048, 0x3c02},       // tie goes to even (1+2^-9)
		{math.Ldexp(1, -24), 0x0001}, // smallest subnormal
		{math.Ldexp(1, -25), 0x0000}, // tie with zero goes to even (zero)
		{math.Ldexp(1.5, -25), 0x0001},
		{math.Ldexp(1, -14), 0x0400}, // smallest normal
		{math.Copysign(0, -1), 0x8000},
		{math.Inf(-1), 0xfc00},
		{1e-300, 0},
	} {
		if got := Float64ToFP16(c.in); got != c.want {
			t.Errorf("Float64ToFP16(%g) = %#04x, want %#04x", c.in, got, c.want)
		}
	}
	if got := Float64ToBF16(1 + 1.0/256); got != 0x3f80 { // tie to even
		t.Errorf("Float64ToBF16(1+2^-8) = %#04x, want 0x3f80", got)
	}
	if got := Float64ToBF16(3.0e38); !BF16IsInf(Float64ToBF16(1e39)) || got != 0x7f62 {
		t.Errorf("Float64ToBF16(3e38) = %#04x", got)
	}
}
