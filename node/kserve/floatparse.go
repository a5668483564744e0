package kserve

import "math"

// pow10 holds the powers of ten a float64 represents exactly.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
	1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// parseFloat32 is strconv.ParseFloat(s, 32) for a JSON number that the
// JSON decoder has already checked, on the common case only: at most 19
// significant digits, the value m·10^e with m ≤ 2^53 and |e| ≤ 22. Then m and
// 10^|e| are exact float64s, so one IEEE multiplication or division gives
// the float64 nearest the number; rounding that to float32 gives the float32
// nearest the number unless it lies exactly halfway between two float32s
// (no float32 midpoint can lie strictly between a number and its nearest
// float64), and that case is left to strconv. ok false: use strconv.
func parseFloat32(s string) (f float32, ok bool) {
	i, neg := 0, false
	if i < len(s) && s[i] == '-' {
		neg = true
		i++
	}
	var m uint64
	digits, exp := 0, 0
	if i == len(s) || s[i] < '0' || s[i] > '9' {
		return 0, false // JSON numbers start with a digit
	}
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		if digits == 19 {
			return 0, false
		}
		m = m*10 + uint64(s[i]-'0')
		if m != 0 {
			digits++
		}
	}
	if i < len(s) && s[i] == '.' {
		for i++; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
			if digits == 19 {
				return 0, false
			}
			m = m*10 + uint64(s[i]-'0')
			if m != 0 {
				digits++
			}
			exp--
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		sign := 1
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			if s[i] == '-' {
				sign = -1
			}
			i++
		}
		e := 0
		if i == len(s) || s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
			if e > 1000 {
				return 0, false
			}
			e = e*10 + int(s[i]-'0')
		}
		exp += sign * e
	}
	if i != len(s) || m > 1<<53 || exp < -22 || exp > 22 {
		return 0, false
	}
	r := float64(m)
	if exp < 0 {
		r /= pow10[-exp]
	} else {
		r *= pow10[exp]
	}
	// float64 → float32 drops 29 fraction bits: exactly half of them set
	// is a tie, which the exact number may break either way.
	if math.Float64bits(r)&(1<<29-1) == 1<<28 {
		return 0, false
	}
	f = float32(r)
	if neg {
		f = -f
	}
	return f, true
}
