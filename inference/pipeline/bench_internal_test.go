package pipeline

import (
	"bytes"
	"context"
	"image"
	"image/jpeg"
	"testing"

	xdraw "golang.org/x/image/draw"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
)

// BenchmarkResize: a decoded 1280 × 720 JPEG (YCbCr) to PP-OCR det's
// 960 × 544 with x/image/draw's BiLinear (what DetResize uses),
// ApproxBiLinear, and a hand-written 4-tap bilinear.
func BenchmarkResize(b *testing.B) {
	jpg := encodeJPEGInternal(b, inferencetest.RenderText(b, 1280, 720, 40, "Images in, answers out", "camera 7"))
	src, err := Decode{}.Apply(context.Background(), inference.HeapAllocator{}, jpg)
	if err != nil {
		b.Fatal(err)
	}
	for _, arm := range []struct {
		name string
		f    func(image.Image, int, int) *image.RGBA
	}{
		{"xdraw-BiLinear", func(s image.Image, w, h int) *image.RGBA {
			d := image.NewRGBA(image.Rect(0, 0, w, h))
			xdraw.BiLinear.Scale(d, d.Rect, s, s.Bounds(), xdraw.Src, nil)
			return d
		}},
		{"xdraw-ApproxBiLinear", func(s image.Image, w, h int) *image.RGBA {
			d := image.NewRGBA(image.Rect(0, 0, w, h))
			xdraw.ApproxBiLinear.Scale(d, d.Rect, s, s.Bounds(), xdraw.Src, nil)
			return d
		}},
		{"hand-written", scale},
	} {
		b.Run(arm.name, func(b *testing.B) {
			for range b.N {
				arm.f(src, 960, 544)
			}
		})
	}
}

func encodeJPEGInternal(t testing.TB, img image.Image) []byte {
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestScaleMatchesOpenCVLinear: the hand-written bilinear puts pixel
// centres at half-pixel offsets (OpenCV's INTER_LINEAR): a 2 × 1 image
// (0, 200) upscaled to 4 × 1 is 0, 50, 150, 200.
func TestScaleMatchesOpenCVLinear(t *testing.T) {
	src := image.NewRGBA(image.Rect(0, 0, 2, 1))
	src.Pix[0], src.Pix[4] = 0, 200
	got := scale(src, 4, 1)
	for i, want := range []uint8{0, 50, 150, 200} {
		if got.Pix[4*i] != want {
			t.Errorf("pixel %d is %d, want %d", i, got.Pix[4*i], want)
		}
	}
}
