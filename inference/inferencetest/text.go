package inferencetest

import (
	"image"
	"image/color"
	"image/draw"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/image/font"
	"golang.org/x/image/font/gofont/goregular"
	"golang.org/x/image/font/opentype"
	"golang.org/x/image/math/fixed"
)

// RenderText draws each line in black Go Regular (golang.org/x/image's
// gofont: no font to install) at size points on a white w × h image, one
// line under the other: a known text for OCR tests.
func RenderText(t testing.TB, w, h int, size float64, lines ...string) *image.RGBA {
	t.Helper()
	f, err := opentype.Parse(goregular.TTF)
	if err != nil {
		t.Fatal(err)
	}
	face, err := opentype.NewFace(f, &opentype.FaceOptions{Size: size, DPI: 72, Hinting: font.HintingFull})
	if err != nil {
		t.Fatal(err)
	}
	defer face.Close()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	d := &font.Drawer{Dst: img, Src: image.NewUniform(color.Black), Face: face}
	for i, l := range lines {
		d.Dot = fixed.P(int(size), int(size*1.2)+int(float64(i)*size*2))
		d.DrawString(l)
	}
	return img
}

// OCRDir is the sample ocr ensemble's model folder (config.yaml and
// 1/ppocr_keys_v1.txt, written by `make setup`) beside the sample models.
func OCRDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(filepath.Dir(filepath.Dir(filepath.Dir(ModelPath(t, "ppocr_rec")))), "ocr")
	if _, err := os.Stat(filepath.Join(dir, "1", "ppocr_keys_v1.txt")); err != nil {
		t.Fatalf("ocr ensemble not found at %s (%v): run `make setup`", dir, err)
	}
	return dir
}
