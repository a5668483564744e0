package pipeline

import (
	"context"
	"math"
	"sort"

	"github.com/edgeai/edge-node/inference"
)

// Probs are probabilities (or scores) over classes: Rows × Classes,
// row-major.
type Probs struct {
	Rows, Classes int
	P             []float32
}

// Softmax turns an FP32 tensor [.., C] into probabilities over its last
// axis (numerically stable: the row's maximum is subtracted first).
type Softmax struct{}

// Name implements Step.
func (Softmax) Name() string { return "softmax" }

// Apply implements Step.
func (s Softmax) Apply(_ context.Context, _ inference.Allocator, t inference.Tensor) (Probs, error) {
	if len(t.Shape) == 0 {
		return Probs{}, invalid(s.Name(), "tensor %q is a scalar, want at least one axis", t.Name)
	}
	v, err := float32s(s.Name(), t, len(t.Shape))
	if err != nil {
		return Probs{}, err
	}
	c := int(t.Shape[len(t.Shape)-1])
	if c == 0 {
		return Probs{}, invalid(s.Name(), "tensor %q has no classes (shape %v)", t.Name, t.Shape)
	}
	for r := 0; r < len(v); r += c {
		row := v[r : r+c]
		m := float32(math.Inf(-1))
		for _, x := range row {
			if x != x || math.IsInf(float64(x), 0) {
				return Probs{}, invalid(s.Name(), "tensor %q has a non-finite value", t.Name)
			}
			m = max(m, x)
		}
		var sum float64
		for i, x := range row {
			e := math.Exp(float64(x - m))
			row[i] = float32(e)
			sum += e
		}
		for i := range row {
			row[i] = float32(float64(row[i]) / sum)
		}
	}
	return Probs{Rows: len(v) / c, Classes: c, P: v}, nil
}

// Class is one scored class.
type Class struct {
	Index int     `json:"index"`
	Label string  `json:"label,omitempty"`
	Score float32 `json:"score"`
}

// TopK picks the K best classes of each row, best first (ties by lower
// index), labelled from Labels when set; Labels must then name every
// class.
type TopK struct {
	K      int
	Labels []string
}

// Name implements Step.
func (TopK) Name() string { return "topk" }

// Apply implements Step.
func (k TopK) Apply(_ context.Context, _ inference.Allocator, p Probs) ([][]Class, error) {
	if k.K <= 0 {
		return nil, invalid(k.Name(), "k is %d", k.K)
	}
	if p.Classes <= 0 || len(p.P) != p.Rows*p.Classes {
		return nil, invalid(k.Name(), "%d values for %d × %d", len(p.P), p.Rows, p.Classes)
	}
	if k.Labels != nil && len(k.Labels) != p.Classes {
		return nil, invalid(k.Name(), "%d labels for %d classes", len(k.Labels), p.Classes)
	}
	out := make([][]Class, p.Rows)
	idx := make([]int, p.Classes)
	for r := range out {
		row := p.P[r*p.Classes : (r+1)*p.Classes]
		for i := range idx {
			idx[i] = i
		}
		sort.SliceStable(idx, func(a, b int) bool { return row[idx[a]] > row[idx[b]] })
		n := min(k.K, p.Classes)
		out[r] = make([]Class, n)
		for i := range n {
			c := Class{Index: idx[i], Score: row[idx[i]]}
			if k.Labels != nil {
				c.Label = k.Labels[idx[i]]
			}
			out[r][i] = c
		}
	}
	return out, nil
}
