package node

import (
	"context"
	"encoding/binary"
	"image"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
	"github.com/edgeai/edge-node/inference/pipeline"
	"github.com/edgeai/edge-node/node/kserve/kservetest"
)

// addModelWithConfig writes <repo>/<name>/1/model.onnx, the given extra
// files beside it and <repo>/<name>/config.yaml.
func addModelWithConfig(t testing.TB, repo, name string, model []byte, config string, files map[string]string) {
	t.Helper()
	dir := filepath.Join(repo, name, "1")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	files["model.onnx"] = string(model)
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(repo, name, "config.yaml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
}

const clsPipeline = `intra_op_threads: 1
pipeline:
  image: {height: 48, min_width: 192, max_width: 192, bgr: true, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}
  topk: {k: 2, labels: labels.txt}
`

const vadPipeline = `intra_op_threads: 1
pipeline:
  input: input
  pcm16: {frame: 512}
`

// TestPipelineDeclaredInConfig: pipelines declared in config.yaml put
// steps around real models. ppocr_cls takes a PNG text line and answers
// its direction ("score:index:label", labels from a file of the version);
// silero_vad takes PCM16 bytes. Each answer equals the raw onnxruntime_go
// run of the same steps done outside the node.
func TestPipelineDeclaredInConfig(t *testing.T) {
	repo := t.TempDir()
	addModelWithConfig(t, repo, "cls_image", modelBytes(t, "ppocr_cls", ""), clsPipeline, map[string]string{"labels.txt": "0\n180\n"})
	addModelWithConfig(t, repo, "vad_pcm", modelBytes(t, "silero_vad", ""), vadPipeline, map[string]string{})
	rn := startNode(t, testConfig(t, t.TempDir(), repo))

	line := inferencetest.RenderText(t, 400, 40, 24, "Images in, answers out")
	for _, c := range []struct {
		img   *image.RGBA
		label string
	}{{line, "0"}, {pipeline.Rotate180(line), "180"}} {
		png := encodeImage(t, c.img, "png")
		out := inferBinary(t, rn.url, "cls_image", []inference.Tensor{kservetest.BytesInput("x", png)})
		got := kservetest.SplitBytes(t, out["softmax_0.tmp_0"])
		if len(got) != 2 {
			t.Fatalf("cls: %d classes, want 2: %q", len(got), got)
		}
		parts := strings.Split(string(got[0]), ":")
		if len(parts) != 3 || parts[2] != c.label {
			t.Errorf("cls: best class %q, want label %s", got[0], c.label)
		}
		// The same steps outside the node, then plain onnxruntime_go.
		a := inference.HeapAllocator{}
		img, err := pipeline.Decode{}.Apply(context.Background(), a, png)
		if err != nil {
			t.Fatal(err)
		}
		f, err := pipeline.FitResize{Height: 48, MinWidth: 192, MaxWidth: 192}.Apply(context.Background(), a, img)
		if err != nil {
			t.Fatal(err)
		}
		x, err := pipeline.ToTensor{Input: "x", Mean: [3]float32{0.5, 0.5, 0.5}, Std: [3]float32{0.5, 0.5, 0.5}, Scale: 1.0 / 255, BGR: true}.Apply(context.Background(), a, f)
		if err != nil {
			t.Fatal(err)
		}
		raw := kservetest.F32s(inferencetest.RawRun(t, inferencetest.ModelPath(t, "ppocr_cls"), []inference.Tensor{x})[0].Data)
		best := 0
		if raw[1] > raw[0] {
			best = 1
		}
		want := strconv.FormatFloat(float64(raw[best]), 'g', 6, 32) + ":" + strconv.Itoa(best) + ":" + []string{"0", "180"}[best]
		if string(got[0]) != want {
			t.Errorf("cls: node says %q, the same steps outside it %q", got[0], want)
		}
	}

	// silero_vad: PCM16 in, the same output as the float frame s/32768.
	ins := kservetest.SileroInputs()
	pcm := make([]byte, 1024)
	floats := make([]float32, 512)
	for i := range 512 {
		s := int16(math.Round(math.Sin(float64(i)/7) * 0.3 * 32767))
		binary.LittleEndian.PutUint16(pcm[2*i:], uint16(s))
		floats[i] = float32(s) / 32768
	}
	ins[0].Data = kservetest.F32LE(floats...)
	want := inferencetest.RawRun(t, inferencetest.ModelPath(t, "silero_vad"), ins)
	ins[0] = kservetest.BytesInput("input", pcm)
	out := inferBinary(t, rn.url, "vad_pcm", ins)
	for _, w := range want {
		if string(out[w.Name]) != string(w.Data) {
			t.Errorf("vad: output %s differs from the raw run on the same frame", w.Name)
		}
	}
	// An odd byte count is half a sample: 400 naming the step.
	ins[0] = kservetest.BytesInput("input", pcm[:1023])
	body, hl := kservetest.BinaryRequest(t, "odd", ins, true)
	status, _, msg := call(t, http.MethodPost, rn.url+"/v2/models/vad_pcm/infer", http.Header{headerContentLength: {strconv.Itoa(hl)}}, body)
	if status != http.StatusBadRequest || !strings.Contains(string(msg), "pcm16: 1023 bytes") {
		t.Errorf("odd PCM: HTTP %d %s", status, msg)
	}
	// The metadata tells clients the input is BYTES now.
	_, _, meta := call(t, http.MethodGet, rn.url+"/v2/models/cls_image", nil, nil)
	if !strings.Contains(string(meta), `{"name":"x","datatype":"BYTES","shape":[1]}`) {
		t.Errorf("cls_image metadata: %s", meta)
	}
}

// inferBinary posts inputs (binary extension) and returns each output's
// raw bytes by name; it fails the test on a non-200.
func inferBinary(t testing.TB, url, model string, ins []inference.Tensor) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, o := range inferResponse(t, url, model, ins).Outputs {
		out[o.Name] = o.Raw
	}
	return out
}
