package pipeline

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/edgeai/edge-node/inference"
)

// PCM16 turns little-endian signed 16-bit mono PCM into an FP32 tensor
// [frames, FrameSize] of samples / 32768 (so in [-1, 1)), the last frame
// padded with zeros. An odd byte count (half a sample) is an error.
type PCM16 struct {
	FrameSize int
	Input     string // the tensor's name
}

// Name implements Step.
func (PCM16) Name() string { return "pcm16" }

// Apply implements Step.
func (p PCM16) Apply(ctx context.Context, a inference.Allocator, b []byte) (inference.Tensor, error) {
	if p.FrameSize <= 0 {
		return inference.Tensor{}, invalid(p.Name(), "frame size %d", p.FrameSize)
	}
	if len(b) == 0 || len(b)%2 != 0 {
		return inference.Tensor{}, invalid(p.Name(), "%d bytes: want a positive, even count (16-bit samples)", len(b))
	}
	samples := len(b) / 2
	frames := (samples + p.FrameSize - 1) / p.FrameSize
	buf, err := a.Alloc(ctx, frames*p.FrameSize*4)
	if err != nil {
		return inference.Tensor{}, fmt.Errorf("%s: %w", p.Name(), err)
	}
	clear(buf)
	for i := range samples {
		s := int16(binary.LittleEndian.Uint16(b[2*i:]))
		binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(float32(s)/32768))
	}
	return inference.Tensor{Name: p.Input, DataType: inference.FP32, Shape: []int64{int64(frames), int64(p.FrameSize)}, Data: buf}, nil
}
