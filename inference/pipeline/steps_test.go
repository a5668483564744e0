package pipeline_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"math"
	"runtime"
	"strings"
	"testing"

	"github.com/edgeai/edge-node/errdefs"
	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/pipeline"
)

var (
	ctx  = context.Background()
	heap = inference.HeapAllocator{}
)

// pngHeader is a PNG signature and IHDR chunk (valid CRC) claiming w × h
// pixels, with no image data.
func pngHeader(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 17)
	copy(ihdr, "IHDR")
	binary.BigEndian.PutUint32(ihdr[4:], w)
	binary.BigEndian.PutUint32(ihdr[8:], h)
	ihdr[12], ihdr[13] = 8, 6 // 8-bit RGBA
	_ = binary.Write(&b, binary.BigEndian, uint32(13))
	b.Write(ihdr)
	_ = binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(ihdr))
	return b.Bytes()
}

// jpegClaiming is a real JPEG whose SOF0 header is patched to claim w × h.
func jpegClaiming(t testing.TB, w, h uint16) []byte {
	b := encodeJPEG(t, solid(16, 16, color.RGBA{200, 10, 10, 255}))
	i := bytes.Index(b, []byte{0xff, 0xc0})
	if i < 0 {
		t.Fatal("no SOF0 marker")
	}
	binary.BigEndian.PutUint16(b[i+5:], h)
	binary.BigEndian.PutUint16(b[i+7:], w)
	return b
}

func solid(w, h int, c color.RGBA) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = c.R, c.G, c.B, c.A
	}
	return img
}

func wantInvalid(t *testing.T, err error, step, says string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one from step %s saying %q", step, says)
	}
	if !errors.Is(err, errdefs.ErrInvalidArgument) || errdefs.HTTPStatus(err) != 400 {
		t.Errorf("%v: does not wrap ErrInvalidArgument (HTTP %d)", err, errdefs.HTTPStatus(err))
	}
	if !strings.HasPrefix(err.Error(), step+": ") || !strings.Contains(err.Error(), says) {
		t.Errorf("error %q: want it to start with %q and say %q", err, step+": ", says)
	}
}

func TestDecodeRefusesBadImages(t *testing.T) {
	img := solid(40, 30, color.RGBA{1, 2, 3, 255})
	png, jpg := encodePNG(t, img), encodeJPEG(t, img)
	for name, c := range map[string]struct {
		in   []byte
		says string
	}{
		"empty":              {nil, "empty image"},
		"wrong magic":        {[]byte("GIF89a......"), "not a JPEG or PNG"},
		"text":               {[]byte("hello"), "not a JPEG or PNG"},
		"truncated JPEG":     {jpg[:len(jpg)/2], "JPEG"},
		"JPEG magic only":    {jpg[:3], "JPEG header"},
		"truncated PNG":      {png[:len(png)-20], "PNG"},
		"PNG magic only":     {png[:8], "PNG header"},
		"PNG 20000 × 20000":  {pngHeader(20000, 20000), "20000 × 20000 pixels, more than the budget"},
		"JPEG 20000 × 20000": {jpegClaiming(t, 20000, 20000), "20000 × 20000 pixels, more than the budget"},
		"PNG 0 × 10":         {pngHeader(0, 10), "PNG header"},
		"JPEG 0 × 0":         {jpegClaiming(t, 0, 0), "JPEG"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := pipeline.Decode{}.Apply(ctx, heap, c.in)
			wantInvalid(t, err, "decode", c.says)
		})
	}
}

// TestDecodeBombCostsNoFrame: a 20,000 × 20,000 header (1.6 GB of RGBA)
// is refused having allocated next to nothing.
func TestDecodeBombCostsNoFrame(t *testing.T) {
	for name, b := range map[string][]byte{"png": pngHeader(20000, 20000), "jpeg": jpegClaiming(t, 20000, 20000)} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range 10 {
			if _, err := (pipeline.Decode{}).Apply(ctx, heap, b); err == nil {
				t.Fatal("bomb decoded")
			}
		}
		runtime.ReadMemStats(&after)
		if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
			t.Errorf("%s: ten refusals allocated %d bytes", name, d)
		}
	}
}

func TestDecodeBudget(t *testing.T) {
	b := encodePNG(t, solid(100, 50, color.RGBA{9, 9, 9, 255}))
	if _, err := (pipeline.Decode{MaxPixels: 4999}).Apply(ctx, heap, b); err == nil {
		t.Error("5000 pixels passed a budget of 4999")
	}
	for name, b := range map[string][]byte{"png": b, "jpeg": encodeJPEG(t, solid(100, 50, color.RGBA{9, 9, 9, 255}))} {
		img, err := pipeline.Decode{MaxPixels: 5000}.Apply(ctx, heap, b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if img.Bounds().Dx() != 100 || img.Bounds().Dy() != 50 {
			t.Errorf("%s: decoded %v", name, img.Bounds())
		}
	}
}

func TestDetResize(t *testing.T) {
	for _, c := range []struct {
		w, h, limit, ww, wh int
	}{
		{100, 50, 960, 96, 64},      // round(100/32)=3, round(50/32)=2
		{2000, 1000, 960, 960, 480}, // scaled to the limit
		{10, 10, 960, 32, 32},       // at least one multiple
		{640, 640, 960, 640, 640},   // already fits
		{1000, 3000, 960, 320, 960},
	} {
		f, err := pipeline.DetResize{LimitSide: c.limit}.Apply(ctx, heap, solid(c.w, c.h, color.RGBA{A: 255}))
		if err != nil {
			t.Fatal(err)
		}
		if f.Width != c.ww || f.Height != c.wh || f.Image.Rect.Dx() != c.ww || f.Image.Rect.Dy() != c.wh {
			t.Errorf("%d × %d → %d × %d (image %v), want %d × %d", c.w, c.h, f.Width, f.Height, f.Image.Rect, c.ww, c.wh)
		}
		if f.SrcWidth != c.w || f.SrcHeight != c.h {
			t.Errorf("source size %d × %d, want %d × %d", f.SrcWidth, f.SrcHeight, c.w, c.h)
		}
	}
	_, err := pipeline.DetResize{}.Apply(ctx, heap, image.NewRGBA(image.Rect(0, 0, 0, 5)))
	wantInvalid(t, err, "det_resize", "0 × 5")
}

func TestFitResize(t *testing.T) {
	for _, c := range []struct {
		r             pipeline.FitResize
		w, h          int
		imgW, tensorW int
	}{
		{pipeline.FitResize{Height: 48, MinWidth: 320, MaxWidth: 1920}, 100, 20, 240, 320},
		{pipeline.FitResize{Height: 48, MinWidth: 320, MaxWidth: 1920}, 400, 20, 960, 960},
		{pipeline.FitResize{Height: 48, MinWidth: 320, MaxWidth: 1920}, 4000, 20, 1920, 1920},
		{pipeline.FitResize{Height: 48, MinWidth: 192, MaxWidth: 192}, 100, 20, 192, 192},
		{pipeline.FitResize{Height: 48, MinWidth: 192, MaxWidth: 192}, 20, 100, 10, 192},
	} {
		f, err := c.r.Apply(ctx, heap, solid(c.w, c.h, color.RGBA{A: 255}))
		if err != nil {
			t.Fatal(err)
		}
		if f.Image.Rect.Dx() != c.imgW || f.Width != c.tensorW || f.Height != 48 {
			t.Errorf("%+v on %d × %d: image %d wide, tensor %d × %d; want %d, %d × 48", c.r, c.w, c.h, f.Image.Rect.Dx(), f.Width, f.Height, c.imgW, c.tensorW)
		}
	}
	_, err := pipeline.FitResize{Height: 48, MinWidth: 100, MaxWidth: 10}.Apply(ctx, heap, solid(5, 5, color.RGBA{}))
	wantInvalid(t, err, "fit_resize", "not a valid size")
}

func floats(t *testing.T, tn inference.Tensor) []float32 {
	t.Helper()
	out := make([]float32, len(tn.Data)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(tn.Data[i*4:]))
	}
	return out
}

func TestToTensor(t *testing.T) {
	img := solid(1, 1, color.RGBA{255, 128, 0, 255})
	f := &pipeline.Frame{Image: img, Width: 2, Height: 1}
	for _, c := range []struct {
		bgr  bool
		want []float32 // channel planes of 2 pixels, the second padding
	}{
		{false, []float32{(1 - 0.5) / 0.25, 0, (128.0/255 - 0.25) / 0.5, 0, (0 - 0.125) / 0.125, 0}},
		{true, []float32{(0 - 0.5) / 0.25, 0, (128.0/255 - 0.25) / 0.5, 0, (1 - 0.125) / 0.125, 0}},
	} {
		tt := pipeline.ToTensor{Input: "x", Mean: [3]float32{0.5, 0.25, 0.125}, Std: [3]float32{0.25, 0.5, 0.125}, Scale: 1.0 / 255, BGR: c.bgr}
		out, err := tt.Apply(ctx, heap, f)
		if err != nil {
			t.Fatal(err)
		}
		if out.Name != "x" || out.DataType != inference.FP32 || len(out.Shape) != 4 || out.Shape[1] != 3 || out.Shape[2] != 1 || out.Shape[3] != 2 {
			t.Fatalf("tensor %s %s %v", out.Name, out.DataType, out.Shape)
		}
		got := floats(t, out)
		for i := range c.want {
			if math.Abs(float64(got[i]-c.want[i])) > 1e-5 {
				t.Errorf("bgr %v: element %d is %v, want %v", c.bgr, i, got[i], c.want[i])
			}
		}
	}
	_, err := pipeline.ToTensor{Std: [3]float32{1, 0, 1}}.Apply(ctx, heap, f)
	wantInvalid(t, err, "to_tensor", "std[1] is 0")
	_, err = pipeline.ToTensor{Std: [3]float32{1, 1, 1}}.Apply(ctx, heap, &pipeline.Frame{Image: solid(3, 3, color.RGBA{}), Width: 2, Height: 3})
	wantInvalid(t, err, "to_tensor", "does not hold")
}

func TestPCM16(t *testing.T) {
	b := []byte{0x00, 0x80, 0xff, 0x7f, 0x00, 0x40} // -32768, 32767, 16384
	out, err := pipeline.PCM16{FrameSize: 2, Input: "input"}.Apply(ctx, heap, b)
	if err != nil {
		t.Fatal(err)
	}
	if out.Shape[0] != 2 || out.Shape[1] != 2 {
		t.Fatalf("shape %v, want [2 2]", out.Shape)
	}
	want := []float32{-1, 32767.0 / 32768, 0.5, 0}
	for i, v := range floats(t, out) {
		if v != want[i] {
			t.Errorf("sample %d is %v, want %v", i, v, want[i])
		}
	}
	for name, in := range map[string][]byte{"odd": {1, 2, 3}, "empty": nil} {
		_, err := pipeline.PCM16{FrameSize: 512}.Apply(ctx, heap, in)
		wantInvalid(t, err, "pcm16", "even count")
		_ = name
	}
}

func fp32(shape []int64, v ...float32) inference.Tensor {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[i*4:], math.Float32bits(f))
	}
	return inference.Tensor{Name: "t", DataType: inference.FP32, Shape: shape, Data: b}
}

func TestSoftmaxTopK(t *testing.T) {
	p, err := pipeline.Softmax{}.Apply(ctx, heap, fp32([]int64{2, 3}, 1, 2, 3, 0, 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	e := []float64{math.Exp(1), math.Exp(2), math.Exp(3)}
	s := e[0] + e[1] + e[2]
	for i, want := range []float64{e[0] / s, e[1] / s, e[2] / s, 1.0 / 3, 1.0 / 3, 1.0 / 3} {
		if math.Abs(float64(p.P[i])-want) > 1e-6 {
			t.Errorf("p[%d] = %v, want %v", i, p.P[i], want)
		}
	}
	top, err := pipeline.TopK{K: 2, Labels: []string{"cat", "dog", "eel"}}.Apply(ctx, heap, p)
	if err != nil {
		t.Fatal(err)
	}
	if top[0][0].Label != "eel" || top[0][1].Label != "dog" || top[1][0].Index != 0 || top[1][1].Index != 1 {
		t.Errorf("top-2 %+v", top)
	}
	_, err = pipeline.Softmax{}.Apply(ctx, heap, fp32([]int64{2}, 1, float32(math.NaN())))
	wantInvalid(t, err, "softmax", "non-finite")
	_, err = pipeline.Softmax{}.Apply(ctx, heap, fp32([]int64{3}, 1, 2))
	wantInvalid(t, err, "softmax", "needs 12")
	_, err = pipeline.TopK{K: 1, Labels: []string{"a"}}.Apply(ctx, heap, p)
	wantInvalid(t, err, "topk", "1 labels for 3 classes")
}

func TestCTCDecode(t *testing.T) {
	// classes: 0 blank, 1 "a", 2 "b", 3 " "
	hot := func(steps ...int) inference.Tensor {
		v := make([]float32, 4*len(steps))
		for i, c := range steps {
			for j := range 4 {
				v[i*4+j] = 0.1
			}
			v[i*4+c] = 0.7
		}
		return fp32([]int64{1, int64(len(steps)), 4}, v...)
	}
	d := pipeline.CTCDecode{Dict: []string{"a", "b"}, Space: true}
	for _, c := range []struct {
		steps []int
		want  string
	}{
		{[]int{1, 1, 0, 1, 3, 2, 2}, "aa b"},
		{[]int{0, 0, 0}, ""},
		{[]int{2, 0, 2, 2, 1}, "bba"},
	} {
		got, err := d.Apply(ctx, heap, hot(c.steps...))
		if err != nil {
			t.Fatal(err)
		}
		if got[0].Text != c.want {
			t.Errorf("%v → %q, want %q", c.steps, got[0].Text, c.want)
		}
		if c.want != "" && math.Abs(float64(got[0].Score)-0.7) > 1e-6 {
			t.Errorf("%v: score %v, want 0.7", c.steps, got[0].Score)
		}
	}
	_, err := pipeline.CTCDecode{Dict: []string{"a"}, Space: true}.Apply(ctx, heap, hot(1))
	wantInvalid(t, err, "ctc", "4 classes, the dictionary needs 3")
	_, err = d.Apply(ctx, heap, fp32([]int64{4}, 1, 2, 3, 4))
	wantInvalid(t, err, "ctc", "want rank 3")
}

func TestClsDecide(t *testing.T) {
	got, err := pipeline.ClsDecide{Threshold: 0.9}.Apply(ctx, heap, fp32([]int64{3, 2}, 0.05, 0.95, 0.2, 0.8, 0.99, 0.01))
	if err != nil {
		t.Fatal(err)
	}
	if !got[0] || got[1] || got[2] {
		t.Errorf("turn %v, want [true false false]", got)
	}
	_, err = pipeline.ClsDecide{}.Apply(ctx, heap, fp32([]int64{1, 3}, 1, 2, 3))
	wantInvalid(t, err, "cls", "want [N, 2]")
}

// detMap paints rectangles of a probability into a w × h map.
func detMap(w, h int, rects ...[5]float32) pipeline.DetMap {
	v := make([]float32, w*h)
	for _, r := range rects {
		for y := int(r[1]); y <= int(r[3]); y++ {
			for x := int(r[0]); x <= int(r[2]); x++ {
				v[y*w+x] = r[4]
			}
		}
	}
	return pipeline.DetMap{Map: fp32([]int64{1, 1, int64(h), int64(w)}, v...),
		Frame: &pipeline.Frame{Width: w, Height: h, SrcWidth: 2 * w, SrcHeight: 2 * h}}
}

func TestDBPostprocess(t *testing.T) {
	db := pipeline.PPOCRDet()
	m := detMap(128, 64,
		[5]float32{10, 20, 49, 29, 0.9},    // a text line: kept
		[5]float32{60, 5, 100, 12, 0.5},    // above thresh, box score under 0.6: dropped
		[5]float32{110, 50, 111, 51, 0.99}, // 2 × 2: too small
		[5]float32{70, 40, 120, 55, 0.8},   // a second line, lower down: kept, second
	)
	boxes, err := db.Apply(ctx, heap, m)
	if err != nil {
		t.Fatal(err)
	}
	if len(boxes) != 2 {
		t.Fatalf("%d boxes %+v, want 2", len(boxes), boxes)
	}
	// Pixel centres 10…49 × 20…29: 39 × 9, grown by 39·9·1.5/96 = 5.48 a
	// side, then doubled into the 256 × 128 source.
	d := 39.0 * 9 * 1.5 / 96
	want := [4]pipeline.Point{{2 * (10 - d), 2 * (20 - d)}, {2 * (49 + d), 2 * (20 - d)}, {2 * (49 + d), 2 * (29 + d)}, {2 * (10 - d), 2 * (29 + d)}}
	for i, p := range boxes[0].Points {
		if math.Abs(p.X-math.Round(want[i].X)) > 0 || math.Abs(p.Y-math.Round(want[i].Y)) > 0 {
			t.Errorf("corner %d at %v, want %v (rounded)", i, p, want[i])
		}
	}
	if math.Abs(float64(boxes[0].Score)-0.9) > 1e-6 {
		t.Errorf("score %v, want 0.9", boxes[0].Score)
	}
	if boxes[1].Points[0].Y < boxes[0].Points[0].Y {
		t.Errorf("boxes out of order: %+v", boxes)
	}
	_, err = db.Apply(ctx, heap, pipeline.DetMap{Map: fp32([]int64{1, 2, 1, 1}, 0, 0), Frame: m.Frame})
	wantInvalid(t, err, "db", "want [1, 1, H, W]")
	_, err = db.Apply(ctx, heap, pipeline.DetMap{Map: m.Map})
	wantInvalid(t, err, "db", "no source frame")
}

// TestDBRotatedLine: a slanted band gets a rotated box along it.
func TestDBRotatedLine(t *testing.T) {
	const w, h = 200, 200
	v := make([]float32, w*h)
	for x := 20; x < 180; x++ {
		for dy := 0; dy < 12; dy++ {
			y := 40 + x/2 + dy // slope 0.5
			v[y*w+x] = 0.95
		}
	}
	m := pipeline.DetMap{Map: fp32([]int64{1, 1, h, w}, v...), Frame: &pipeline.Frame{Width: w, Height: h, SrcWidth: w, SrcHeight: h}}
	boxes, err := pipeline.PPOCRDet().Apply(ctx, heap, m)
	if err != nil || len(boxes) != 1 {
		t.Fatalf("%v boxes, %v", boxes, err)
	}
	p := boxes[0].Points
	slope := (p[1].Y - p[0].Y) / (p[1].X - p[0].X)
	if math.Abs(slope-0.5) > 0.05 {
		t.Errorf("top edge slope %.3f, want 0.5: %v", slope, p)
	}
}

func TestCrop(t *testing.T) {
	img := solid(100, 60, color.RGBA{0, 0, 255, 255})
	for y := 10; y < 30; y++ {
		for x := 20; x < 80; x++ {
			img.SetRGBA(x, y, color.RGBA{255, 0, 0, 255})
		}
	}
	box := pipeline.Box{Points: [4]pipeline.Point{{22, 12}, {78, 12}, {78, 28}, {22, 28}}}
	c, err := pipeline.Crop{}.Apply(ctx, heap, pipeline.Cropping{Image: img, Box: box})
	if err != nil {
		t.Fatal(err)
	}
	if c.Rect.Dx() != 56 || c.Rect.Dy() != 16 {
		t.Fatalf("crop %v, want 56 × 16", c.Rect)
	}
	for i := 0; i < len(c.Pix); i += 4 {
		if c.Pix[i] != 255 || c.Pix[i+2] != 0 {
			t.Fatalf("pixel %d is %v, want red", i/4, c.Pix[i:i+4])
		}
	}
	tall := pipeline.Box{Points: [4]pipeline.Point{{30, 5}, {40, 5}, {40, 55}, {30, 55}}}
	c, err = pipeline.Crop{}.Apply(ctx, heap, pipeline.Cropping{Image: img, Box: tall})
	if err != nil {
		t.Fatal(err)
	}
	if c.Rect.Dx() != 50 || c.Rect.Dy() != 10 {
		t.Errorf("tall crop %v, want turned to 50 × 10", c.Rect)
	}
	_, err = pipeline.Crop{}.Apply(ctx, heap, pipeline.Cropping{Image: img, Box: pipeline.Box{Points: [4]pipeline.Point{{1, 1}, {1, 1}, {1, 1}, {1, 1}}}})
	wantInvalid(t, err, "crop", "0 × 0")
	_, err = pipeline.Crop{}.Apply(ctx, heap, pipeline.Cropping{Image: img, Box: pipeline.Box{Points: [4]pipeline.Point{{math.NaN(), 1}}}})
	wantInvalid(t, err, "crop", "not finite")
}

func TestParseLabels(t *testing.T) {
	got, err := pipeline.ParseLabels([]byte("a\r\nb\n中\n"))
	if err != nil || len(got) != 3 || got[2] != "中" || got[0] != "a" {
		t.Fatalf("%q, %v", got, err)
	}
	for name, c := range map[string]struct{ in, says string }{
		"empty":      {"", "no entries"},
		"empty line": {"a\n\nb", "line 2 is empty"},
		"not utf-8":  {"a\n\xff\xfe\n", "line 2 is not UTF-8"},
		"long line":  {strings.Repeat("x", 300), "at most 256 bytes"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := pipeline.ParseLabels([]byte(c.in))
			wantInvalid(t, err, "labels", c.says)
		})
	}
}

func TestConfigValidate(t *testing.T) {
	std := [3]float32{1, 1, 1}
	good := []pipeline.Config{
		{Image: &pipeline.ImageConfig{Height: 48, MinWidth: 192, MaxWidth: 192, Std: std}},
		{Image: &pipeline.ImageConfig{LimitSide: 960, Multiple: 32, Std: std}, TopK: &pipeline.TopKConfig{K: 5}},
		{PCM16: &pipeline.PCM16Config{Frame: 512}},
		{TopK: &pipeline.TopKConfig{K: 1, Labels: "l.txt", Softmax: true}},
	}
	for i, c := range good {
		if err := c.Validate(); err != nil {
			t.Errorf("good %d: %v", i, err)
		}
	}
	for name, c := range map[string]struct {
		cfg  pipeline.Config
		says string
	}{
		"nothing":       {pipeline.Config{}, "no step"},
		"image and pcm": {pipeline.Config{Image: &pipeline.ImageConfig{Height: 4, MaxWidth: 4, Std: std}, PCM16: &pipeline.PCM16Config{Frame: 1}}, "both set"},
		"no resize":     {pipeline.Config{Image: &pipeline.ImageConfig{Std: std}}, "either limit_side"},
		"both resizes":  {pipeline.Config{Image: &pipeline.ImageConfig{LimitSide: 64, Height: 4, MaxWidth: 4, Std: std}}, "either limit_side"},
		"zero std":      {pipeline.Config{Image: &pipeline.ImageConfig{Height: 4, MaxWidth: 4}}, "std[0] is 0"},
		"huge side":     {pipeline.Config{Image: &pipeline.ImageConfig{LimitSide: 100000, Std: std}}, "limit_side 100000"},
		"width order":   {pipeline.Config{Image: &pipeline.ImageConfig{Height: 4, MinWidth: 9, MaxWidth: 4, Std: std}}, "min ≤ max"},
		"pixels":        {pipeline.Config{Image: &pipeline.ImageConfig{Height: 4, MaxWidth: 4, MaxPixels: -1, Std: std}}, "max_pixels is -1"},
		"frame":         {pipeline.Config{PCM16: &pipeline.PCM16Config{}}, "frame is 0"},
		"k":             {pipeline.Config{TopK: &pipeline.TopKConfig{K: 0}}, "k is 0"},
	} {
		t.Run(name, func(t *testing.T) { wantInvalid(t, c.cfg.Validate(), "pipeline", c.says) })
	}
}
