package pipeline

import (
	"context"
	"strings"

	"github.com/edgeai/edge-node/inference"
)

// Text is one recognised text line.
type Text struct {
	Text string
	// Score is the mean probability of the characters kept (0 when none).
	Score float32
}

// CTCDecode is greedy CTC decoding of a recogniser's output [N, T, C]
// (probabilities per time step): the best class per step, repeats merged,
// the blank (class 0) dropped, class i > 0 being Dict[i-1]. With Space, a
// last class " " follows the dictionary (PP-OCR's use_space_char), so C
// must be len(Dict)+2; otherwise len(Dict)+1.
type CTCDecode struct {
	Dict  []string
	Space bool
}

// Name implements Step.
func (CTCDecode) Name() string { return "ctc" }

// Apply implements Step.
func (d CTCDecode) Apply(_ context.Context, _ inference.Allocator, t inference.Tensor) ([]Text, error) {
	v, err := float32s(d.Name(), t, 3)
	if err != nil {
		return nil, err
	}
	classes := len(d.Dict) + 1
	if d.Space {
		classes++
	}
	n, steps, c := int(t.Shape[0]), int(t.Shape[1]), int(t.Shape[2])
	if c != classes {
		return nil, invalid(d.Name(), "tensor %q has %d classes, the dictionary needs %d", t.Name, c, classes)
	}
	out := make([]Text, n)
	var sb strings.Builder
	for b := range n {
		sb.Reset()
		var sum float64
		kept, prev := 0, -1
		for s := range steps {
			row := v[(b*steps+s)*c : (b*steps+s+1)*c]
			best := 0
			for i := 1; i < c; i++ {
				if row[i] > row[best] {
					best = i
				}
			}
			if best != 0 && best != prev {
				if best <= len(d.Dict) {
					sb.WriteString(d.Dict[best-1])
				} else {
					sb.WriteByte(' ')
				}
				sum += float64(row[best])
				kept++
			}
			prev = best
		}
		out[b].Text = sb.String()
		if kept > 0 {
			out[b].Score = float32(sum / float64(kept))
		}
	}
	return out, nil
}

// ClsDecide reads PP-OCR's direction classifier output [N, 2] (labels "0"
// and "180"): a crop is turned by 180° when "180" wins with a probability
// above Threshold (PaddleOCR's cls_thresh, 0.9).
type ClsDecide struct {
	Threshold float32
}

// Name implements Step.
func (ClsDecide) Name() string { return "cls" }

// Apply implements Step.
func (d ClsDecide) Apply(_ context.Context, _ inference.Allocator, t inference.Tensor) ([]bool, error) {
	v, err := float32s(d.Name(), t, 2)
	if err != nil {
		return nil, err
	}
	if t.Shape[1] != 2 {
		return nil, invalid(d.Name(), "tensor %q has shape %v, want [N, 2]", t.Name, t.Shape)
	}
	out := make([]bool, t.Shape[0])
	for i := range out {
		out[i] = v[2*i+1] > v[2*i] && v[2*i+1] > d.Threshold
	}
	return out, nil
}
