package node

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
	"github.com/edgeai/edge-node/inference/pipeline"
	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/node/kserve/kservetest"
	"github.com/edgeai/edge-node/sync/fleet"
	"github.com/edgeai/edge-node/sync/wire"
)

// ocrRepo is a model repository with the three PP-OCR models and the ocr
// ensemble over them (the sample repository's config.yaml and
// dictionary), plus extra ensembles: name → config.yaml.
func ocrRepo(t testing.TB, extra map[string]string) string {
	t.Helper()
	repo := t.TempDir()
	for _, m := range []string{"ppocr_det", "ppocr_cls", "ppocr_rec"} {
		addToRepo(t, repo, m, "1", modelBytes(t, m, ""))
	}
	src := inferencetest.OCRDir(t)
	dict, err := os.ReadFile(filepath.Join(src, "1", "ppocr_keys_v1.txt"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join(src, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	configs := map[string]string{"ocr": string(cfg)}
	for k, v := range extra {
		configs[k] = v
	}
	for name, c := range configs {
		if err := os.MkdirAll(filepath.Join(repo, name, "1"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(repo, name, "config.yaml"), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(repo, name, "1", "ppocr_keys_v1.txt"), dict, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return repo
}

// ocrResult is what the ocr ensemble answers.
type ocrResult struct {
	Text   []string
	Scores []float32
	Boxes  []float32 // n × 4 × 2
}

// postOCR sends one image to model's infer endpoint (binary extension)
// and returns the status, the result (on 200) or the error body, and the
// bytes sent and received.
func postOCR(t testing.TB, url, model string, img []byte) (int, ocrResult, string, int) {
	t.Helper()
	body, hl := kservetest.BinaryRequest(t, "ocr", []inference.Tensor{kservetest.BytesInput(pipeline.InputImage, img)}, true)
	status, hdr, resp := call(t, http.MethodPost, url+"/v2/models/"+model+"/infer",
		http.Header{headerContentLength: {strconv.Itoa(hl)}, "Content-Type": {"application/octet-stream"}}, body)
	wire := len(body) + len(resp)
	if status != http.StatusOK {
		return status, ocrResult{}, string(resp), wire
	}
	var res ocrResult
	for _, o := range parseResponse(t, hdr, resp).Outputs {
		switch o.Name {
		case pipeline.OutputText:
			for _, s := range kservetest.SplitBytes(t, o.Raw) {
				res.Text = append(res.Text, string(s))
			}
		case pipeline.OutputScore:
			res.Scores = kservetest.F32s(o.Raw)
		case pipeline.OutputBox:
			res.Boxes = kservetest.F32s(o.Raw)
		}
	}
	return status, res, "", wire
}

// restRunner runs the pipeline's member models one by one over the
// node's REST API (binary extension): the client-side pipeline, the same
// steps done outside the node. wire counts the bytes sent and received.
type restRunner struct {
	t    testing.TB
	url  string
	wire int
}

func (r *restRunner) RunMember(_ context.Context, m pipeline.Member, in inference.Tensor, _ inference.Allocator) (inference.Tensor, error) {
	body, hl := kservetest.BinaryRequest(r.t, "member", []inference.Tensor{in}, true)
	status, hdr, resp := call(r.t, http.MethodPost, r.url+"/v2/models/"+m.Model+"/versions/"+m.Version+"/infer",
		http.Header{headerContentLength: {strconv.Itoa(hl)}, "Content-Type": {"application/octet-stream"}}, body)
	r.wire += len(body) + len(resp)
	if status != http.StatusOK {
		return inference.Tensor{}, fmt.Errorf("%s: HTTP %d: %s", m, status, resp)
	}
	o := parseResponse(r.t, hdr, resp).Outputs[0]
	return inference.Tensor{Name: o.Name, DataType: inference.FP32, Shape: o.Shape, Data: o.Raw}, nil
}

// clientPipeline is the ocr pipeline of the sample config, for running
// outside the node.
func clientPipeline(t testing.TB) *pipeline.OCRPipeline {
	t.Helper()
	dir := inferencetest.OCRDir(t)
	b, err := os.ReadFile(filepath.Join(dir, "1", "ppocr_keys_v1.txt"))
	if err != nil {
		t.Fatal(err)
	}
	dict, err := pipeline.ParseLabels(b)
	if err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.NewOCRPipeline(pipeline.OCRConfig{
		Det: pipeline.Member{Model: "ppocr_det", Version: "1"}, Cls: pipeline.Member{Model: "ppocr_cls", Version: "1"},
		Rec: pipeline.Member{Model: "ppocr_rec", Version: "1"}, Dictionary: "ppocr_keys_v1.txt"}, dict)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func encodeImage(t testing.TB, img image.Image, format string) []byte {
	t.Helper()
	var b bytes.Buffer
	var err error
	if format == "png" {
		err = png.Encode(&b, img)
	} else {
		err = jpeg.Encode(&b, img, &jpeg.Options{Quality: 90})
	}
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestOCREnsembleReadsRenderedText: known text rendered into a PNG and a
// JPEG goes through POST /v2/models/ocr/infer and comes back, with the
// same lines, scores and boxes as the same steps run outside the node
// against the three models called one by one over REST.
func TestOCREnsembleReadsRenderedText(t *testing.T) {
	rn := startNode(t, testConfig(t, t.TempDir(), ocrRepo(t, nil)))
	want := []string{"Images in, answers out", "KServe v2 on the edge: 42 frames"}
	img := inferencetest.RenderText(t, 720, 200, 40, want...)
	client := clientPipeline(t)
	for _, format := range []string{"png", "jpeg"} {
		t.Run(format, func(t *testing.T) {
			b := encodeImage(t, img, format)
			status, got, msg, _ := postOCR(t, rn.url, "ocr", b)
			if status != http.StatusOK {
				t.Fatalf("HTTP %d: %s", status, msg)
			}
			if len(got.Text) != len(want) || len(got.Scores) != len(want) || len(got.Boxes) != 8*len(want) {
				t.Fatalf("got %d texts, %d scores, %d box values; want %d lines: %q", len(got.Text), len(got.Scores), len(got.Boxes), len(want), got.Text)
			}
			for i := range want {
				// PP-OCRv4's recogniser (a Chinese model) drops some
				// spaces between latin words; every character must be
				// there, in order.
				if strings.ReplaceAll(got.Text[i], " ", "") != strings.ReplaceAll(want[i], " ", "") {
					t.Errorf("line %d is %q, want %q", i, got.Text[i], want[i])
				}
				if got.Scores[i] < 0.9 {
					t.Errorf("line %d scored %v", i, got.Scores[i])
				}
			}
			// The same steps outside the node, three models one by one.
			r := &restRunner{t: t, url: rn.url}
			lines, err := client.Recognise(context.Background(), r, inference.HeapAllocator{}, b, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(lines) != len(got.Text) {
				t.Fatalf("outside the node: %d lines, the ensemble %d", len(lines), len(got.Text))
			}
			for i, l := range lines {
				if l.Text != got.Text[i] || l.Score != got.Scores[i] {
					t.Errorf("line %d: outside %q %v, ensemble %q %v", i, l.Text, l.Score, got.Text[i], got.Scores[i])
				}
				for j, p := range l.Box {
					if float32(p.X) != got.Boxes[i*8+2*j] || float32(p.Y) != got.Boxes[i*8+2*j+1] {
						t.Errorf("line %d corner %d: outside %v, ensemble (%v, %v)", i, j, p, got.Boxes[i*8+2*j], got.Boxes[i*8+2*j+1])
					}
				}
			}
		})
	}
	// Each stage's time is in the metrics, labelled with the ensemble.
	_, _, metrics := call(t, http.MethodGet, rn.url+"/metrics", nil, nil)
	for _, stage := range pipeline.Stages {
		series := `edge_pipeline_step_duration_seconds_count{model="ocr",step="` + stage + `",version="1"} 2`
		if !bytes.Contains(metrics, []byte(series)) {
			t.Errorf("metrics lack %s", series)
		}
	}
	// The ensemble's metadata says what it takes.
	status, _, meta := call(t, http.MethodGet, rn.url+"/v2/models/ocr", nil, nil)
	if status != http.StatusOK || !bytes.Contains(meta, []byte(`"platform":"ensemble"`)) || !bytes.Contains(meta, []byte(`"name":"image","datatype":"BYTES"`)) {
		t.Errorf("metadata HTTP %d: %s", status, meta)
	}
}

// pngHeader is a PNG signature and IHDR chunk (valid CRC) claiming w × h.
func pngHeader(w, h uint32) []byte {
	ihdr := make([]byte, 17)
	copy(ihdr, "IHDR")
	binary.BigEndian.PutUint32(ihdr[4:], w)
	binary.BigEndian.PutUint32(ihdr[8:], h)
	ihdr[12], ihdr[13] = 8, 6
	b := append([]byte("\x89PNG\r\n\x1a\n"), 0, 0, 0, 13)
	b = append(b, ihdr...)
	return binary.BigEndian.AppendUint32(b, crc32IEEE(ihdr))
}

func crc32IEEE(b []byte) uint32 {
	crc := ^uint32(0)
	for _, c := range b {
		crc ^= uint32(c)
		for range 8 {
			crc = crc>>1 ^ 0xEDB88320&-(crc&1)
		}
	}
	return ^crc
}

// TestOCREnsembleRefusesHostileImages: a truncated JPEG, a 20,000 ×
// 20,000 header (a decompression bomb), an empty input and a wrong magic
// get 400s that say what was wrong, and the bombs cost no frame.
func TestOCREnsembleRefusesHostileImages(t *testing.T) {
	rn := startNode(t, testConfig(t, t.TempDir(), ocrRepo(t, nil)))
	jpg := encodeImage(t, inferencetest.RenderText(t, 200, 60, 20, "hostile"), "jpeg")
	bomb := pngHeader(20000, 20000)
	for name, c := range map[string]struct {
		img  []byte
		says string
	}{
		"truncated JPEG":    {jpg[:len(jpg)/2], "decode: JPEG"},
		"20000 × 20000 PNG": {bomb, "PNG is 20000 × 20000 pixels, more than the budget"},
		"zero size":         {nil, "decode: empty image"},
		"zero-pixel PNG":    {pngHeader(0, 0), "decode: PNG header"},
		"wrong magic":       {[]byte("GIF89a\x01\x00\x01\x00"), "decode: not a JPEG or PNG image"},
	} {
		t.Run(name, func(t *testing.T) {
			status, _, msg, _ := postOCR(t, rn.url, "ocr", c.img)
			if status != http.StatusBadRequest || !strings.Contains(msg, c.says) {
				t.Errorf("HTTP %d %s, want 400 saying %q", status, msg, c.says)
			}
		})
	}
	// 20 bomb requests: the node (in this process) allocates no frame
	// (20,000² RGBA is 1.6 GB; the bound is far below one).
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 20 {
		if status, _, _, _ := postOCR(t, rn.url, "ocr", bomb); status != http.StatusBadRequest {
			t.Fatalf("bomb: HTTP %d", status)
		}
	}
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > 16<<20 {
		t.Errorf("20 bomb requests allocated %d bytes (client and server together)", d)
	} else {
		t.Logf("20 bomb requests allocated %d bytes, client and server together", d)
	}
}

// TestOCREnsemblePinsMemberVersions: an ensemble version runs the member
// versions its config pins; pinned to a version the node does not serve
// it answers 503 naming the member, and a bad pipeline never gets in.
func TestOCREnsemblePinsMemberVersions(t *testing.T) {
	cfg, err := os.ReadFile(filepath.Join(inferencetest.OCRDir(t), "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	pinned9 := strings.Replace(string(cfg), `rec: {model: ppocr_rec, version: "1"}`, `rec: {model: ppocr_rec, version: "9"}`, 1)
	if pinned9 == string(cfg) {
		t.Fatal("sample config does not pin ppocr_rec/1")
	}
	bad := strings.Replace(string(cfg), "dictionary: ppocr_keys_v1.txt", "dictionary: ppocr_keys_v1.txt\n    box_thresh: 1.5", 1)
	rn := startNode(t, testConfig(t, t.TempDir(), ocrRepo(t, map[string]string{"ocr_rec9": pinned9, "ocr_bad": bad})))
	img := encodeImage(t, inferencetest.RenderText(t, 300, 60, 24, "pinned"), "png")
	status, _, msg, _ := postOCR(t, rn.url, "ocr_rec9", img)
	if status != http.StatusServiceUnavailable || !strings.Contains(msg, "member ppocr_rec/9") {
		t.Errorf("ensemble pinned to ppocr_rec/9: HTTP %d %s, want 503 naming the member", status, msg)
	}
	if status, _, _, _ := postOCR(t, rn.url, "ocr", img); status != http.StatusOK {
		t.Errorf("ocr: HTTP %d", status)
	}
	if status, _, _, _ := postOCR(t, rn.url, "ocr_bad", img); status != http.StatusNotFound {
		t.Errorf("ensemble with box_thresh 1.5: HTTP %d, want 404 (refused at import)", status)
	}
}

// TestBadPipelineFailsTheVersion: a pipeline the node refuses, published
// from the cloud, fails the version with Failed(InvalidManifest) in status
// and the node keeps serving the previous one; an ensemble version whose
// dictionary is missing from its folder fails its load, Failed(LoadError)
// with the reason (boot activates only the newest imported version, so
// ocr then has none Active).
func TestBadPipelineFailsTheVersion(t *testing.T) {
	e := newCloudEnv(t)
	repo := ocrRepo(t, nil)
	// ocr/2 pins the same members but its folder lacks the dictionary.
	if err := os.MkdirAll(filepath.Join(repo, "ocr", "2"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, "ocr", "2", "README"), []byte("no dictionary here\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rn := startNode(t, e.nodeConfig(t.TempDir(), repo, e.m.URL()))
	mi := adminModel(t, rn.url, "ocr")
	found := false
	for _, v := range mi.Versions {
		if v.Version == "2" {
			found = true
			if v.State != models.Failed || v.Reason != models.ReasonLoadError || !strings.Contains(v.Detail, "ppocr_keys_v1.txt") {
				t.Errorf("ocr/2: %s(%s) %q, want Failed(LoadError) naming the dictionary", v.State, v.Reason, v.Detail)
			}
		}
	}
	if !found {
		t.Error("ocr/2 not in the store")
	}

	e.config = "intra_op_threads: 1\npipeline: {image: {height: 48, max_width: 192, std: [0.5, 0.5, 0]}}\n"
	e.publish(e.key, "ppocr_cls", "2", modelBytes(t, "ppocr_cls", "badpipe"), nil)
	e.deploy("ppocr_cls", "2")
	waitFor(t, "ppocr_cls/2 Failed(InvalidManifest) in status", func() bool {
		st, ok := e.status()
		ms := st.Models["ppocr_cls"]
		return ok && ms.Version == "2" && ms.State == string(models.Failed) && ms.Reason == string(models.ReasonInvalidManifest)
	})
	if got := activeVersion(t, rn.url, "ppocr_cls"); got != "1" {
		t.Errorf("ppocr_cls serves %q, want 1", got)
	}
}

// TestCloudDeploysAnEnsemble: an ensemble version published from the
// cloud — a signed manifest with its config and its dictionary, no graph —
// is transferred, verified, activated and served like any version.
func TestCloudDeploysAnEnsemble(t *testing.T) {
	e := newCloudEnv(t)
	rn := startNode(t, e.nodeConfig(t.TempDir(), ocrRepo(t, nil), e.m.URL()))
	src := inferencetest.OCRDir(t)
	cfg, err := os.ReadFile(filepath.Join(src, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cloudDeadline)
	defer cancel()
	m, _, err := fleet.PublishModel(ctx, e.link, cloudTopics, "ocr", "2",
		[]fleet.FileSpec{{Path: filepath.Join(src, "1", "ppocr_keys_v1.txt"), Name: "ppocr_keys_v1.txt", Role: wire.RoleExternalData}},
		e.key, fleet.PublishOptions{Config: string(cfg) + "    drop_score: 0.6\n"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.ModelFile(); ok {
		t.Fatal("the ensemble's manifest has a model file")
	}
	e.deploy("ocr", "2")
	waitFor(t, "ocr/2 active", func() bool { return activeVersion(t, rn.url, "ocr") == "2" })
	img := encodeImage(t, inferencetest.RenderText(t, 600, 80, 36, "Images in, answers out"), "png")
	var got ocrResult
	waitFor(t, "ocr/2 answering", func() bool {
		status, res, _, _ := postOCR(t, rn.url, "ocr/versions/2", img)
		got = res
		return status == http.StatusOK
	})
	if len(got.Text) != 1 || got.Text[0] != "Images in, answers out" {
		t.Errorf("ocr/2 read %q", got.Text)
	}
}
