package pipeline

import (
	"context"
	"image"
	"math"

	"golang.org/x/image/draw"
	"golang.org/x/image/math/f64"

	"github.com/edgeai/edge-node/inference"
)

// MaxCropPixels bounds one crop (a box can be no larger than its image,
// which Decode already bounded; this bounds a hand-made Box too).
const MaxCropPixels = DefaultMaxPixels

// Cropping is a source image and a box in it.
type Cropping struct {
	Image image.Image
	Box   Box
}

// Crop cuts a box out of its image, upright: the box's top edge becomes
// the crop's top row (bilinear sampling through the affine map of the
// box's corners, golang.org/x/image/draw). A crop at least 1.5 times as
// tall as wide is turned 90° counter-clockwise, as PaddleOCR does for
// vertical text.
type Crop struct{}

// Name implements Step.
func (Crop) Name() string { return "crop" }

// Apply implements Step.
func (c Crop) Apply(_ context.Context, _ inference.Allocator, in Cropping) (*image.RGBA, error) {
	if in.Image == nil {
		return nil, invalid(c.Name(), "no image")
	}
	p := in.Box.Points
	for _, q := range p {
		if q.X != q.X || q.Y != q.Y || math.IsInf(q.X, 0) || math.IsInf(q.Y, 0) {
			return nil, invalid(c.Name(), "box corner %v is not finite", q)
		}
	}
	fw := math.Max(dist(p[0], p[1]), dist(p[3], p[2]))
	fh := math.Max(dist(p[0], p[3]), dist(p[1], p[2]))
	if !(fw >= 1 && fh >= 1) || fw*fh > MaxCropPixels {
		return nil, invalid(c.Name(), "box is %.0f × %.0f pixels", fw, fh)
	}
	w, h := int(fw), int(fh)
	// d2s maps crop pixels to source pixels: top left + x·(top edge)/w +
	// y·(left edge)/h. Transform wants the inverse (source to crop).
	ax, ay := (p[1].X-p[0].X)/float64(w), (p[1].Y-p[0].Y)/float64(w)
	bx, by := (p[3].X-p[0].X)/float64(h), (p[3].Y-p[0].Y)/float64(h)
	det := ax*by - bx*ay
	if math.Abs(det) < 1e-9 {
		return nil, invalid(c.Name(), "box %v is degenerate", p)
	}
	ia, ib, ic, id := by/det, -bx/det, -ay/det, ax/det
	ox, oy := p[0].X, p[0].Y
	s2d := f64.Aff3{ia, ib, -(ia*ox + ib*oy), ic, id, -(ic*ox + id*oy)}
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.BiLinear.Transform(dst, s2d, in.Image, in.Image.Bounds(), draw.Src, nil)
	if float64(h)/float64(w) >= 1.5 {
		return rotate90(dst), nil
	}
	return dst, nil
}

// rotate90 turns an image 90° counter-clockwise (numpy's rot90).
func rotate90(src *image.RGBA) *image.RGBA {
	w, h := src.Rect.Dx(), src.Rect.Dy()
	dst := image.NewRGBA(image.Rect(0, 0, h, w))
	for y := range h {
		for x := range w {
			// source (x, y) goes to (y, w-1-x)
			copy(dst.Pix[(w-1-x)*dst.Stride+y*4:][:4], src.Pix[y*src.Stride+x*4:][:4])
		}
	}
	return dst
}

// Rotate180 turns an image by 180° (a crop the classifier found upside
// down).
func Rotate180(src *image.RGBA) *image.RGBA {
	w, h := src.Rect.Dx(), src.Rect.Dy()
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			copy(dst.Pix[(h-1-y)*dst.Stride+(w-1-x)*4:][:4], src.Pix[y*src.Stride+x*4:][:4])
		}
	}
	return dst
}
