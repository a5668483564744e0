package pipeline

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"math"
	"unicode/utf8"

	"github.com/edgeai/edge-node/inference"
)

// float32s checks that t is an FP32 tensor of the given rank whose data
// fits its shape and returns its elements.
func float32s(step string, t inference.Tensor, rank int) ([]float32, error) {
	if t.DataType != inference.FP32 {
		return nil, invalid(step, "tensor %q is %s, want FP32", t.Name, t.DataType)
	}
	if len(t.Shape) != rank {
		return nil, invalid(step, "tensor %q has shape %v, want rank %d", t.Name, t.Shape, rank)
	}
	n, err := inference.ElementCount(t.Shape)
	if err != nil {
		return nil, invalid(step, "tensor %q: %v", t.Name, err)
	}
	if int64(len(t.Data)) != 4*n {
		return nil, invalid(step, "tensor %q has %d bytes, its shape %v needs %d", t.Name, len(t.Data), t.Shape, 4*n)
	}
	out := make([]float32, n)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[i*4:]))
	}
	return out, nil
}

// Limits on a labels or dictionary file.
const (
	MaxLabels     = 1 << 17 // entries
	MaxLabelBytes = 256     // one entry
	MaxLabelsFile = 4 << 20 // the file
)

// ParseLabels reads a labels or character dictionary file: one entry a
// line (LF or CRLF), UTF-8, none empty; a final newline is optional.
// Errors wrap inference.ErrInvalidArgument and name the line.
func ParseLabels(b []byte) ([]string, error) {
	const step = "labels"
	if len(b) > MaxLabelsFile {
		return nil, invalid(step, "file is %d bytes, more than %d", len(b), MaxLabelsFile)
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64), MaxLabelBytes+2)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSuffix(sc.Bytes(), []byte("\r"))
		switch {
		case len(line) == 0:
			return nil, invalid(step, "line %d is empty", n)
		case len(line) > MaxLabelBytes:
			return nil, invalid(step, "line %d is %d bytes, at most %d bytes a line", n, len(line), MaxLabelBytes)
		case !utf8.Valid(line):
			return nil, invalid(step, "line %d is not UTF-8", n)
		case len(out) == MaxLabels:
			return nil, invalid(step, "more than %d entries", MaxLabels)
		}
		out = append(out, string(line))
	}
	if err := sc.Err(); err != nil {
		return nil, invalid(step, "line %d: %v (at most %d bytes a line)", len(out)+1, err, MaxLabelBytes)
	}
	if len(out) == 0 {
		return nil, invalid(step, "no entries")
	}
	return out, nil
}
