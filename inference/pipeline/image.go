package pipeline

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"image"
	stddraw "image/draw"
	"image/jpeg"
	"image/png"
	"math"

	"github.com/edgeai/edge-node/inference"
)

// DefaultMaxPixels is Decode's default pixel budget (16 Mpx, e.g. 4096 ×
// 4096): a decoded frame costs at most 8 bytes a pixel (16-bit PNG), so one
// image is bounded at 128 MiB however small its file.
const DefaultMaxPixels = 16 << 20

// Decode turns JPEG or PNG bytes into an image. The format is told by its
// magic bytes (nothing else is accepted), and the header's dimensions are
// read with DecodeConfig and checked against MaxPixels before any pixel is
// decoded, so a small file claiming 20,000 × 20,000 pixels (a decompression
// bomb) is refused without allocating its frame.
type Decode struct {
	// MaxPixels bounds width × height; 0 means DefaultMaxPixels.
	MaxPixels int
}

// Name implements Step.
func (Decode) Name() string { return "decode" }

var (
	pngMagic  = []byte("\x89PNG\r\n\x1a\n")
	jpegMagic = []byte{0xff, 0xd8, 0xff}
)

// Apply implements Step.
func (d Decode) Apply(_ context.Context, _ inference.Allocator, b []byte) (image.Image, error) {
	budget := d.MaxPixels
	if budget <= 0 {
		budget = DefaultMaxPixels
	}
	var (
		config func([]byte) (image.Config, error)
		decode func([]byte) (image.Image, error)
		format string
	)
	switch {
	case len(b) == 0:
		return nil, invalid(d.Name(), "empty image")
	case bytes.HasPrefix(b, pngMagic):
		format = "PNG"
		config = func(b []byte) (image.Config, error) { return png.DecodeConfig(bytes.NewReader(b)) }
		decode = func(b []byte) (image.Image, error) { return png.Decode(bytes.NewReader(b)) }
	case bytes.HasPrefix(b, jpegMagic):
		format = "JPEG"
		config = func(b []byte) (image.Config, error) { return jpeg.DecodeConfig(bytes.NewReader(b)) }
		decode = func(b []byte) (image.Image, error) { return jpeg.Decode(bytes.NewReader(b)) }
	default:
		n := min(len(b), 8)
		return nil, invalid(d.Name(), "not a JPEG or PNG image (starts with % x)", b[:n])
	}
	cfg, err := config(b)
	if err != nil {
		return nil, invalid(d.Name(), "%s header: %v", format, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, invalid(d.Name(), "%s is %d × %d pixels: no pixels", format, cfg.Width, cfg.Height)
	}
	if int64(cfg.Width)*int64(cfg.Height) > int64(budget) {
		return nil, invalid(d.Name(), "%s is %d × %d pixels, more than the budget of %d pixels", format, cfg.Width, cfg.Height, budget)
	}
	img, err := decode(b)
	if err != nil {
		return nil, invalid(d.Name(), "%s: %v", format, err)
	}
	return img, nil
}

// Frame is an image on its way to a tensor: Image holds the pixels at
// their new size; the tensor is Width × Height, the image in its top-left
// corner and the rest padding. ScaleX and ScaleY are new pixels per
// original pixel, for mapping results back to the original image.
type Frame struct {
	Image          *image.RGBA
	Width, Height  int
	ScaleX, ScaleY float64
	// SrcWidth and SrcHeight are the original image's size.
	SrcWidth, SrcHeight int
}

// scale resizes src to w × h with bilinear interpolation as OpenCV's
// INTER_LINEAR does it (what PaddleOCR's pre-processing uses): pixel
// centres at half-pixel offsets, four taps, no anti-aliasing. Hand-written
// because it measured 2–5× faster than golang.org/x/image/draw's
// ApproxBiLinear and BiLinear (BenchmarkResize, docs/performance.md); a
// source that is not RGBA (a JPEG's YCbCr) is converted first with
// image/draw, which has a fast path for it.
func scale(src image.Image, w, h int) *image.RGBA {
	b := src.Bounds()
	rgba, ok := src.(*image.RGBA)
	if !ok || rgba.Rect.Min != (image.Point{}) {
		rgba = image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
		stddraw.Draw(rgba, rgba.Rect, src, b.Min, stddraw.Src)
	}
	sw, sh := rgba.Rect.Dx(), rgba.Rect.Dy()
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	fx, fy := float32(sw)/float32(w), float32(sh)/float32(h)
	// Per destination column: the two source columns (byte offsets) and
	// the weight of the right one.
	x0s, x1s, wxs := make([]int, w), make([]int, w), make([]float32, w)
	for x := range w {
		sx := (float32(x)+0.5)*fx - 0.5
		x0 := int(math.Floor(float64(sx)))
		wxs[x] = sx - float32(x0)
		x0s[x], x1s[x] = 4*min(max(x0, 0), sw-1), 4*min(max(x0+1, 0), sw-1)
	}
	for y := range h {
		sy := (float32(y)+0.5)*fy - 0.5
		y0 := int(math.Floor(float64(sy)))
		wy := sy - float32(y0)
		r0 := rgba.Pix[min(max(y0, 0), sh-1)*rgba.Stride:]
		r1 := rgba.Pix[min(max(y0+1, 0), sh-1)*rgba.Stride:]
		o := dst.Pix[y*dst.Stride:]
		for x := range w {
			a, c, wx := x0s[x], x1s[x], wxs[x]
			for k := range 4 {
				top := float32(r0[a+k]) + (float32(r0[c+k])-float32(r0[a+k]))*wx
				bot := float32(r1[a+k]) + (float32(r1[c+k])-float32(r1[a+k]))*wx
				o[x*4+k] = uint8(top + (bot-top)*wy + 0.5)
			}
		}
	}
	return dst
}

// DetResize scales an image for PP-OCR detection: keeping its aspect,
// so that its longer side is at most LimitSide, then each side rounded to
// the nearest multiple of Multiple (at least one multiple). The DB network
// downsamples by 32, so its input sides must be multiples of 32.
type DetResize struct {
	LimitSide int // default 960
	Multiple  int // default 32
}

// Name implements Step.
func (DetResize) Name() string { return "det_resize" }

// Apply implements Step.
func (r DetResize) Apply(_ context.Context, _ inference.Allocator, img image.Image) (*Frame, error) {
	limit, mult := r.LimitSide, r.Multiple
	if limit <= 0 {
		limit = 960
	}
	if mult <= 0 {
		mult = 32
	}
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	if w <= 0 || h <= 0 {
		return nil, invalid(r.Name(), "image is %d × %d", w, h)
	}
	ratio := 1.0
	if m := max(w, h); m > limit {
		ratio = float64(limit) / float64(m)
	}
	round := func(v int) int {
		n := int(math.Round(float64(v)*ratio/float64(mult))) * mult
		return max(n, mult)
	}
	rw, rh := round(w), round(h)
	return &Frame{Image: scale(img, rw, rh), Width: rw, Height: rh,
		ScaleX: float64(rw) / float64(w), ScaleY: float64(rh) / float64(h), SrcWidth: w, SrcHeight: h}, nil
}

// FitResize scales an image to Height rows keeping its aspect, the width
// capped at MaxWidth, and pads the tensor on the right to at least
// MinWidth: PP-OCR's recogniser (48 × ≥320) and direction classifier
// (48 × 192) take text lines this way.
type FitResize struct {
	Height, MinWidth, MaxWidth int
}

// Name implements Step.
func (FitResize) Name() string { return "fit_resize" }

// Apply implements Step.
func (r FitResize) Apply(_ context.Context, _ inference.Allocator, img image.Image) (*Frame, error) {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	if w <= 0 || h <= 0 {
		return nil, invalid(r.Name(), "image is %d × %d", w, h)
	}
	if r.Height <= 0 || r.MaxWidth < r.MinWidth || r.MaxWidth <= 0 {
		return nil, invalid(r.Name(), "height %d, width %d–%d: not a valid size", r.Height, r.MinWidth, r.MaxWidth)
	}
	rw := int(math.Ceil(float64(r.Height) * float64(w) / float64(h)))
	rw = min(max(rw, 1), r.MaxWidth)
	return &Frame{Image: scale(img, rw, r.Height), Width: max(rw, r.MinWidth), Height: r.Height,
		ScaleX: float64(rw) / float64(w), ScaleY: float64(r.Height) / float64(h), SrcWidth: w, SrcHeight: h}, nil
}

// ToTensor turns a frame into an FP32 tensor [1, 3, Height, Width] (NCHW),
// each value (pixel × Scale − Mean[c]) / Std[c], channels in BGR order
// when BGR is set (PP-OCR was trained on OpenCV's BGR frames) and RGB
// otherwise. Padding is 0 (after normalisation, as PaddleOCR pads).
type ToTensor struct {
	Input     string // the tensor's name
	Mean, Std [3]float32
	Scale     float32
	BGR       bool
}

// Name implements Step.
func (ToTensor) Name() string { return "to_tensor" }

// Apply implements Step.
func (t ToTensor) Apply(ctx context.Context, a inference.Allocator, f *Frame) (inference.Tensor, error) {
	if f == nil || f.Image == nil {
		return inference.Tensor{}, invalid(t.Name(), "no frame")
	}
	iw, ih := f.Image.Rect.Dx(), f.Image.Rect.Dy()
	if f.Width < iw || f.Height < ih || iw <= 0 || ih <= 0 {
		return inference.Tensor{}, invalid(t.Name(), "frame %d × %d does not hold its %d × %d image", f.Width, f.Height, iw, ih)
	}
	for c := range 3 {
		if !(t.Std[c] != 0) {
			return inference.Tensor{}, invalid(t.Name(), "std[%d] is 0", c)
		}
	}
	plane := f.Width * f.Height
	buf, err := a.Alloc(ctx, 3*plane*4)
	if err != nil {
		return inference.Tensor{}, fmt.Errorf("%s: %w", t.Name(), err)
	}
	clear(buf)
	// One look-up table per channel: 256 values instead of a multiply and
	// divide per element.
	var lut [3][256]uint32
	for c := range 3 {
		for v := range 256 {
			lut[c][v] = math.Float32bits((float32(v)*t.Scale - t.Mean[c]) / t.Std[c])
		}
	}
	src := [3]int{0, 1, 2} // tensor channel c takes pixel byte src[c]
	if t.BGR {
		src = [3]int{2, 1, 0}
	}
	pix, stride := f.Image.Pix, f.Image.Stride
	for c := range 3 {
		out := buf[c*plane*4 : (c+1)*plane*4]
		l, s := &lut[c], src[c]
		for y := range ih {
			row := pix[y*stride:]
			o := out[y*f.Width*4:]
			for x := range iw {
				binary.LittleEndian.PutUint32(o[x*4:], l[row[x*4+s]])
			}
		}
	}
	return inference.Tensor{Name: t.Input, DataType: inference.FP32, Shape: []int64{1, 3, int64(f.Height), int64(f.Width)}, Data: buf}, nil
}
