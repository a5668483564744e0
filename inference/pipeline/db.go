package pipeline

import (
	"context"
	"math"
	"sort"

	"github.com/edgeai/edge-node/inference"
)

// Point is a position in pixels of the original image.
type Point struct{ X, Y float64 }

// Box is a detected text region: four corners clockwise from the top left
// (top left, top right, bottom right, bottom left) and the mean detection
// probability inside it.
type Box struct {
	Points [4]Point
	Score  float32
}

// DetMap is a detector's probability map with the frame it was computed
// on (to map boxes back to the original image).
type DetMap struct {
	Map   inference.Tensor // FP32 [1, 1, H, W]
	Frame *Frame
}

// DBPostprocess is PP-OCR's DB post-process: the probability map binarised
// at Thresh, each 8-connected region's minimum-area rectangle kept when
// its sides are at least MinSize and the mean probability inside it is at
// least BoxThresh, grown by UnclipRatio (each side moves out by area ×
// ratio / perimeter, what PaddleOCR's polygon offset does to a rectangle),
// mapped to the original image and clipped to it. At most MaxCandidates
// regions are looked at. Boxes come sorted top to bottom, then left to
// right within a line (PaddleOCR's sorted_boxes).
type DBPostprocess struct {
	Thresh, BoxThresh, UnclipRatio float64
	MinSize                        float64
	MaxCandidates                  int
}

// PPOCRDet returns PaddleOCR's defaults: thresh 0.3, box_thresh 0.6,
// unclip_ratio 1.5, min size 3, 1000 candidates.
func PPOCRDet() DBPostprocess {
	return DBPostprocess{Thresh: 0.3, BoxThresh: 0.6, UnclipRatio: 1.5, MinSize: 3, MaxCandidates: 1000}
}

// Name implements Step.
func (DBPostprocess) Name() string { return "db" }

// Apply implements Step.
func (p DBPostprocess) Apply(_ context.Context, _ inference.Allocator, in DetMap) ([]Box, error) {
	prob, err := float32s(p.Name(), in.Map, 4)
	if err != nil {
		return nil, err
	}
	if in.Map.Shape[0] != 1 || in.Map.Shape[1] != 1 {
		return nil, invalid(p.Name(), "map %q has shape %v, want [1, 1, H, W]", in.Map.Name, in.Map.Shape)
	}
	f := in.Frame
	if f == nil || f.SrcWidth <= 0 || f.SrcHeight <= 0 {
		return nil, invalid(p.Name(), "no source frame for the map")
	}
	h, w := int(in.Map.Shape[2]), int(in.Map.Shape[3])
	if h == 0 || w == 0 {
		return nil, nil
	}
	sx, sy := float64(f.SrcWidth)/float64(f.Width), float64(f.SrcHeight)/float64(f.Height)
	var boxes []Box
	for _, hull := range regions(prob, w, h, float32(p.Thresh), p.MaxCandidates) {
		rect, side := minAreaRect(hull)
		if side < p.MinSize {
			continue
		}
		score := meanInside(prob, w, h, rect)
		if float64(score) < p.BoxThresh {
			continue
		}
		rect, side = unclip(rect, p.UnclipRatio)
		if side < p.MinSize+2 {
			continue
		}
		var b Box
		for i, q := range orderClockwise(rect) {
			b.Points[i] = Point{clamp(math.Round(q.X*sx), 0, float64(f.SrcWidth)), clamp(math.Round(q.Y*sy), 0, float64(f.SrcHeight))}
		}
		if dist(b.Points[0], b.Points[1]) <= 3 || dist(b.Points[0], b.Points[3]) <= 3 {
			continue
		}
		b.Score = score
		boxes = append(boxes, b)
	}
	sortBoxes(boxes)
	return boxes, nil
}

func clamp(v, lo, hi float64) float64 { return math.Min(math.Max(v, lo), hi) }

func dist(a, b Point) float64 { return math.Hypot(a.X-b.X, a.Y-b.Y) }

// regions labels the 8-connected regions of prob > thresh and returns the
// convex hull (of pixel centres) of each, in raster order of their first
// pixel, at most limit of them.
func regions(prob []float32, w, h int, thresh float32, limit int) [][]Point {
	seen := make([]bool, len(prob))
	var (
		hulls [][]Point
		stack []int32
		// per region, the leftmost and rightmost pixel of every row it has
		rowMin, rowMax = make([]int32, h), make([]int32, h)
	)
	for start := range prob {
		if seen[start] || !(prob[start] > thresh) {
			continue
		}
		if limit > 0 && len(hulls) >= limit {
			break
		}
		y0, y1 := start/w, start/w
		for y := range rowMin {
			rowMin[y], rowMax[y] = math.MaxInt32, -1
		}
		seen[start] = true
		stack = append(stack[:0], int32(start))
		for len(stack) > 0 {
			i := int(stack[len(stack)-1])
			stack = stack[:len(stack)-1]
			x, y := i%w, i/w
			rowMin[y], rowMax[y] = min(rowMin[y], int32(x)), max(rowMax[y], int32(x))
			y0, y1 = min(y0, y), max(y1, y)
			for dy := -1; dy <= 1; dy++ {
				for dx := -1; dx <= 1; dx++ {
					nx, ny := x+dx, y+dy
					if nx < 0 || ny < 0 || nx >= w || ny >= h {
						continue
					}
					j := ny*w + nx
					if !seen[j] && prob[j] > thresh {
						seen[j] = true
						stack = append(stack, int32(j))
					}
				}
			}
		}
		var pts []Point
		for y := y0; y <= y1; y++ {
			if rowMax[y] >= 0 {
				pts = append(pts, Point{float64(rowMin[y]), float64(y)}, Point{float64(rowMax[y]), float64(y)})
			}
		}
		hulls = append(hulls, convexHull(pts))
	}
	return hulls
}

// convexHull is Andrew's monotone chain; the hull is counter-clockwise
// (in y-down image coordinates: clockwise on screen).
func convexHull(pts []Point) []Point {
	sort.Slice(pts, func(i, j int) bool {
		if pts[i].X != pts[j].X {
			return pts[i].X < pts[j].X
		}
		return pts[i].Y < pts[j].Y
	})
	uniq := pts[:0]
	for i, p := range pts {
		if i == 0 || p != pts[i-1] {
			uniq = append(uniq, p)
		}
	}
	pts = uniq
	if len(pts) < 3 {
		return pts
	}
	cross := func(o, a, b Point) float64 { return (a.X-o.X)*(b.Y-o.Y) - (a.Y-o.Y)*(b.X-o.X) }
	hull := make([]Point, 0, 2*len(pts))
	for _, p := range pts {
		for len(hull) >= 2 && cross(hull[len(hull)-2], hull[len(hull)-1], p) <= 0 {
			hull = hull[:len(hull)-1]
		}
		hull = append(hull, p)
	}
	lower := len(hull) + 1
	for i := len(pts) - 2; i >= 0; i-- {
		p := pts[i]
		for len(hull) >= lower && cross(hull[len(hull)-2], hull[len(hull)-1], p) <= 0 {
			hull = hull[:len(hull)-1]
		}
		hull = append(hull, p)
	}
	return hull[:len(hull)-1]
}

// rect is a rotated rectangle: centre, unit axis U (V is U turned by 90°)
// and half extents along them.
type rect struct {
	C      Point
	U      Point
	HW, HH float64
}

func (r rect) corners() [4]Point {
	v := Point{-r.U.Y, r.U.X}
	at := func(a, b float64) Point {
		return Point{r.C.X + a*r.HW*r.U.X + b*r.HH*v.X, r.C.Y + a*r.HW*r.U.Y + b*r.HH*v.Y}
	}
	return [4]Point{at(-1, -1), at(1, -1), at(1, 1), at(-1, 1)}
}

// minAreaRect is the minimum-area rectangle around a convex hull (rotating
// calipers: one side of it lies on a hull edge) and its shorter side. A
// hull of one or two points gives a degenerate rectangle (side 0).
func minAreaRect(hull []Point) (rect, float64) {
	if len(hull) < 3 {
		return rect{}, 0
	}
	best, bestArea := rect{}, math.Inf(1)
	for i := range hull {
		a, b := hull[i], hull[(i+1)%len(hull)]
		l := dist(a, b)
		if l == 0 {
			continue
		}
		u := Point{(b.X - a.X) / l, (b.Y - a.Y) / l}
		minU, maxU, minV, maxV := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
		for _, p := range hull {
			pu := p.X*u.X + p.Y*u.Y
			pv := -p.X*u.Y + p.Y*u.X
			minU, maxU, minV, maxV = math.Min(minU, pu), math.Max(maxU, pu), math.Min(minV, pv), math.Max(maxV, pv)
		}
		if area := (maxU - minU) * (maxV - minV); area < bestArea {
			cu, cv := (minU+maxU)/2, (minV+maxV)/2
			bestArea = area
			best = rect{C: Point{cu*u.X - cv*u.Y, cu*u.Y + cv*u.X}, U: u, HW: (maxU - minU) / 2, HH: (maxV - minV) / 2}
		}
	}
	return best, 2 * math.Min(best.HW, best.HH)
}

// unclip grows r by d = area × ratio / perimeter on every side.
func unclip(r rect, ratio float64) (rect, float64) {
	w, h := 2*r.HW, 2*r.HH
	if w+h == 0 {
		return r, 0
	}
	d := w * h * ratio / (2 * (w + h))
	r.HW += d
	r.HH += d
	return r, 2 * math.Min(r.HW, r.HH)
}

// meanInside is the mean of prob over the pixels whose centres lie in r.
func meanInside(prob []float32, w, h int, r rect) float32 {
	c := r.corners()
	x0, x1, y0, y1 := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, p := range c {
		x0, x1, y0, y1 = math.Min(x0, p.X), math.Max(x1, p.X), math.Min(y0, p.Y), math.Max(y1, p.Y)
	}
	xa, xb := max(int(math.Floor(x0)), 0), min(int(math.Ceil(x1)), w-1)
	ya, yb := max(int(math.Floor(y0)), 0), min(int(math.Ceil(y1)), h-1)
	var sum float64
	n := 0
	v := Point{-r.U.Y, r.U.X}
	for y := ya; y <= yb; y++ {
		for x := xa; x <= xb; x++ {
			dx, dy := float64(x)-r.C.X, float64(y)-r.C.Y
			if math.Abs(dx*r.U.X+dy*r.U.Y) <= r.HW+0.5 && math.Abs(dx*v.X+dy*v.Y) <= r.HH+0.5 {
				sum += float64(prob[y*w+x])
				n++
			}
		}
	}
	if n == 0 {
		return 0
	}
	return float32(sum / float64(n))
}

// orderClockwise orders a rectangle's corners top left, top right, bottom
// right, bottom left (PaddleOCR's get_mini_boxes order: the two leftmost
// points are the left side, the upper of each side first).
func orderClockwise(r rect) [4]Point {
	c := r.corners()
	pts := c[:]
	sort.Slice(pts, func(i, j int) bool { return pts[i].X < pts[j].X })
	l0, l1, r0, r1 := pts[0], pts[1], pts[2], pts[3]
	if l1.Y < l0.Y {
		l0, l1 = l1, l0
	}
	if r1.Y < r0.Y {
		r0, r1 = r1, r0
	}
	return [4]Point{l0, r0, r1, l1}
}

// sortBoxes orders boxes top to bottom by their top-left corner, and left
// to right among boxes whose tops are within 10 pixels (one text line).
func sortBoxes(b []Box) {
	sort.SliceStable(b, func(i, j int) bool {
		pi, pj := b[i].Points[0], b[j].Points[0]
		if pi.Y != pj.Y {
			return pi.Y < pj.Y
		}
		return pi.X < pj.X
	})
	for i := 0; i+1 < len(b); i++ {
		for j := i; j >= 0; j-- {
			if math.Abs(b[j+1].Points[0].Y-b[j].Points[0].Y) < 10 && b[j+1].Points[0].X < b[j].Points[0].X {
				b[j], b[j+1] = b[j+1], b[j]
			} else {
				break
			}
		}
	}
}
