package pipeline_test

import (
	"encoding/binary"
	"errors"
	"image/color"
	"math"
	"testing"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/pipeline"
)

// checkErr fails unless err is nil or wraps ErrInvalidArgument.
func checkErr(t *testing.T, err error) {
	t.Helper()
	if err != nil && !errors.Is(err, inference.ErrInvalidArgument) {
		t.Fatalf("error %v does not wrap ErrInvalidArgument", err)
	}
}

func FuzzDecode(f *testing.F) {
	img := solid(8, 6, color.RGBA{10, 20, 30, 255})
	png, jpg := encodePNG(f, img), encodeJPEG(f, img)
	for _, s := range [][]byte{png, jpg, png[:20], jpg[:len(jpg)/2], pngHeader(20000, 20000), jpegClaiming(f, 20000, 20000), nil, []byte("GIF89a")} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		const budget = 1 << 16
		im, err := pipeline.Decode{MaxPixels: budget}.Apply(ctx, heap, b)
		checkErr(t, err)
		if err == nil && im.Bounds().Dx()*im.Bounds().Dy() > budget {
			t.Fatalf("decoded %v over the budget", im.Bounds())
		}
	})
}

func FuzzParseLabels(f *testing.F) {
	for _, s := range []string{"a\nb\n", "", "\n", "a\r\n中", "\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := pipeline.ParseLabels(b)
		checkErr(t, err)
		for _, e := range l {
			if e == "" || len(e) > pipeline.MaxLabelBytes {
				t.Fatalf("entry %q", e)
			}
		}
	})
}

// FuzzDBPostprocess feeds arbitrary maps (bytes as probabilities, NaN and
// Inf included) of arbitrary small shapes.
func FuzzDBPostprocess(f *testing.F) {
	f.Add(uint8(8), uint8(8), make([]byte, 256))
	f.Add(uint8(3), uint8(40), []byte{0x3f, 0x80, 0, 0})
	f.Fuzz(func(t *testing.T, w, h uint8, data []byte) {
		n := int(w) * int(h)
		v := make([]float32, n)
		for i := range v {
			if len(data) >= 4*(i+1) {
				v[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
			}
		}
		m := pipeline.DetMap{Map: fp32([]int64{1, 1, int64(h), int64(w)}, v...),
			Frame: &pipeline.Frame{Width: max(int(w), 1), Height: max(int(h), 1), SrcWidth: 3 * max(int(w), 1), SrcHeight: 2 * max(int(h), 1)}}
		boxes, err := pipeline.PPOCRDet().Apply(ctx, heap, m)
		checkErr(t, err)
		for _, b := range boxes {
			for _, p := range b.Points {
				if !(p.X >= 0 && p.X <= float64(m.Frame.SrcWidth) && p.Y >= 0 && p.Y <= float64(m.Frame.SrcHeight)) {
					t.Fatalf("corner %v outside the source", p)
				}
			}
			if _, err := (pipeline.Crop{}).Apply(ctx, heap, pipeline.Cropping{Image: solid(m.Frame.SrcWidth, m.Frame.SrcHeight, color.RGBA{}), Box: b}); err != nil {
				checkErr(t, err)
			}
		}
	})
}

func FuzzCTCDecode(f *testing.F) {
	f.Add(uint8(1), uint8(3), []byte{1, 2, 3, 4, 5, 6})
	f.Fuzz(func(t *testing.T, n, steps uint8, data []byte) {
		n, steps = n%4, steps%32
		v := make([]float32, int(n)*int(steps)*4)
		for i := range v {
			if i < len(data) {
				v[i] = float32(data[i]) / 255
			}
		}
		out, err := pipeline.CTCDecode{Dict: []string{"a", "中"}, Space: true}.Apply(ctx, heap, fp32([]int64{int64(n), int64(steps), 4}, v...))
		checkErr(t, err)
		if err == nil && len(out) != int(n) {
			t.Fatalf("%d texts for %d rows", len(out), n)
		}
	})
}

// FuzzPCM16: client audio bytes of any length and frame size.
func FuzzPCM16(f *testing.F) {
	f.Add([]byte{0, 0x80, 0xff, 0x7f}, uint16(2))
	f.Add([]byte{1, 2, 3}, uint16(512))
	f.Fuzz(func(t *testing.T, b []byte, frame uint16) {
		out, err := pipeline.PCM16{FrameSize: int(frame)}.Apply(ctx, heap, b)
		checkErr(t, err)
		if err != nil {
			return
		}
		if int(out.Shape[0]*out.Shape[1])*4 != len(out.Data) || int(out.Shape[0]*out.Shape[1]) < len(b)/2 {
			t.Fatalf("shape %v for %d bytes", out.Shape, len(b))
		}
		for _, v := range floats(t, out) {
			if v < -1 || v >= 1 {
				t.Fatalf("sample %v outside [-1, 1)", v)
			}
		}
	})
}
