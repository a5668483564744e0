package kserve

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

// parseFloat32 agrees bit for bit with strconv.ParseFloat(s, 32) wherever it
// answers, and leaves to strconv what it cannot do exactly.
func TestParseFloat32(t *testing.T) {
	for _, c := range []struct {
		in   string
		fast bool
	}{
		{"0", true}, {"-0", true}, {"1", true}, {"-1", true}, {"0.5", true}, {"-0.99215686", true},
		{"3.4028235e38", false}, {"1e22", true}, {"1e23", false}, {"1e-22", true}, {"1e-23", false},
		{"123456789012345678", false}, {"1234567890123456", true}, {"12345678901234567890", false}, {"9007199254740993", false},
		{"0.000001234", true}, {"1.5E+3", true}, {"2e-0", true}, {"1e400", false}, {"1e-400", false},
		{"16777217", false}, // exactly halfway between two float32s: strconv decides
		{"0.1", true}, {"0.30000001192092896", false}, {"0.3000000119209289", true},
		{"1x", false}, {"", false}, {"-", false}, {".5", false}, {"1e", false}, {"1e+", false}, {"1.", true},
	} {
		f, ok := parseFloat32(c.in)
		if ok != c.fast {
			t.Errorf("%q: fast path %v, want %v", c.in, ok, c.fast)
		}
		if !ok {
			continue
		}
		want, err := strconv.ParseFloat(c.in, 32)
		if err != nil || math.Float32bits(f) != math.Float32bits(float32(want)) {
			t.Errorf("%q: %v (%#x), strconv %v (%v)", c.in, f, math.Float32bits(f), want, err)
		}
	}
}

// The numbers clients send: random float32s and float64s written with 1 to
// 17 significant digits, in both notations, each parsed as strconv does.
func TestParseFloat32Formatted(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	fast := 0
	const n = 200_000
	for i := range n {
		var x float64
		if i%2 == 0 {
			x = float64(math.Float32frombits(r.Uint32()))
		} else {
			x = r.NormFloat64() * math.Pow(10, float64(r.IntN(20)-10))
		}
		if math.IsNaN(x) || math.IsInf(x, 0) {
			continue
		}
		s := strconv.FormatFloat(x, "eg"[i%2], 1+r.IntN(17), 64)
		got, ok := parseFloat32(s)
		if !ok {
			continue
		}
		fast++
		want, err := strconv.ParseFloat(s, 32)
		if err != nil || math.Float32bits(got) != math.Float32bits(float32(want)) {
			t.Fatalf("%q: %v (%#x), strconv %v (%v)", s, got, math.Float32bits(got), float32(want), err)
		}
	}
	if fast < n/4 {
		t.Errorf("the fast path took only %d of %d numbers", fast, n)
	}
}

// Differential fuzz: any input parseFloat32 accepts, it parses exactly as
// strconv does.
func FuzzParseFloat32(f *testing.F) {
	for _, s := range []string{"0", "-0.99215686", "1e22", "16777217", "0.1", "123.456e-7", "8.589973e9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := parseFloat32(s)
		if !ok {
			return
		}
		want, err := strconv.ParseFloat(s, 32)
		if err != nil {
			t.Fatalf("%q: fast path %v, strconv error %v", s, got, err)
		}
		if math.Float32bits(got) != math.Float32bits(float32(want)) {
			t.Fatalf("%q: fast path %v (%#x), strconv %v (%#x)", s, got, math.Float32bits(got), float32(want), math.Float32bits(float32(want)))
		}
	})
}
