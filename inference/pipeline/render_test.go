package pipeline_test

import (
	"bytes"
	"context"
	"image"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
	"github.com/edgeai/edge-node/inference/pipeline"
)

func encodePNG(t testing.TB, img image.Image) []byte {
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encodeJPEG(t testing.TB, img image.Image) []byte {
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// dictionary reads ppocr_keys_v1.txt of the sample ocr ensemble.
func dictionary(t testing.TB) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(inferencetest.OCRDir(t), "1", "ppocr_keys_v1.txt"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := pipeline.ParseLabels(b)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// sessions is a Runner over sessions loaded straight from the sample
// models (no node): the pipeline outside any server.
type sessions map[string]*inference.Session

func (s sessions) RunMember(ctx context.Context, m pipeline.Member, in inference.Tensor, a inference.Allocator) (inference.Tensor, error) {
	out, err := s[m.Model].Run(ctx, []inference.Tensor{in}, nil, a)
	if err != nil {
		return inference.Tensor{}, err
	}
	return out[0], nil
}

func loadSessions(t testing.TB) sessions {
	t.Helper()
	env := inferencetest.Env(t)
	s := sessions{}
	for _, m := range []string{"ppocr_det", "ppocr_cls", "ppocr_rec"} {
		sess, err := env.Load(context.Background(), inference.LoadSpec{Model: m, Version: "1", Path: inferencetest.ModelPath(t, m)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sess.Close() })
		s[m] = sess
	}
	return s
}

func sampleConfig() pipeline.OCRConfig {
	return pipeline.OCRConfig{
		Det: pipeline.Member{Model: "ppocr_det", Version: "1"}, Cls: pipeline.Member{Model: "ppocr_cls", Version: "1"},
		Rec: pipeline.Member{Model: "ppocr_rec", Version: "1"}, Dictionary: "ppocr_keys_v1.txt",
	}
}

func TestOCRRecognisesRenderedText(t *testing.T) {
	p, err := pipeline.NewOCRPipeline(sampleConfig(), dictionary(t))
	if err != nil {
		t.Fatal(err)
	}
	r := loadSessions(t)
	want := []string{"Images in, answers out", "KServe v2 on the edge: 42 frames"}
	img := inferencetest.RenderText(t, 720, 200, 40, want...)
	for name, b := range map[string][]byte{"png": encodePNG(t, img), "jpeg": encodeJPEG(t, img)} {
		t.Run(name, func(t *testing.T) {
			tm := pipeline.Timings{}
			lines, err := p.Recognise(context.Background(), r, inference.HeapAllocator{}, b, tm)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, l := range lines {
				got = append(got, l.Text)
				t.Logf("%q score %.3f box %v", l.Text, l.Score, l.Box)
			}
			t.Logf("timings %v", tm)
			if len(got) != len(want) {
				t.Fatalf("got lines %q, want %q", got, want)
			}
			// PP-OCRv4's recogniser (a Chinese model) drops some spaces
			// between latin words; the characters must all be there, in
			// order.
			for i := range want {
				if strings.ReplaceAll(got[i], " ", "") != strings.ReplaceAll(want[i], " ", "") {
					t.Errorf("line %d is %q, want %q", i, got[i], want[i])
				}
			}
		})
	}
}
