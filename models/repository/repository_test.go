package repository

import (
	"bytes"
	"fmt"
	"io"

	"errors"
	"gopkg.in/yaml.v3"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeai/edge-node/models"
)

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestScan(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "vad/config.yaml"), "platform: onnxruntime_onnx\nmax_batch: 4\n")
	write(t, filepath.Join(dir, "vad/1/model.onnx"), "a")
	write(t, filepath.Join(dir, "vad/10/model.onnx"), "b")
	write(t, filepath.Join(dir, "vad/2/model.onnx"), "c")
	write(t, filepath.Join(dir, "vad/2/weights.bin"), "w")
	write(t, filepath.Join(dir, "vad/3/readme.txt"), "no model")           // no model.onnx
	write(t, filepath.Join(dir, "vad/..bad/model.onnx"), "x")              // bad version (hidden: ignored)
	write(t, filepath.Join(dir, "vad/bad version/model.onnx"), "x")        // bad version
	write(t, filepath.Join(dir, "vad/4/sub/model.onnx"), "x")              // nested folder
	write(t, filepath.Join(dir, "det/1/model.onnx"), "d")                  // no config: fine
	write(t, filepath.Join(dir, "typo/config.yaml"), "max_bach_size: 1\n") // unknown key: model skipped
	write(t, filepath.Join(dir, "typo/1/model.onnx"), "t")
	write(t, filepath.Join(dir, "named/config.yaml"), strings.Repeat("#", MaxConfigBytes+1)) // too big
	write(t, filepath.Join(dir, "named/1/model.onnx"), "n")
	write(t, filepath.Join(dir, "stray.txt"), "x")
	write(t, filepath.Join(dir, ".git/HEAD"), "x")

	res, err := Scan(dir, strictConfig, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range res.Entries {
		got = append(got, e.Name+"/"+e.Version)
	}
	if want := "det/1 vad/1 vad/2 vad/10"; strings.Join(got, " ") != want {
		t.Errorf("entries %v, want %s", got, want)
	}
	for _, e := range res.Entries {
		if e.Name == "vad" && !strings.Contains(string(e.Config), "max_batch: 4") {
			t.Errorf("vad config not attached: %q", e.Config)
		}
		if e.Name == "vad" && e.Version == "2" && (len(e.ExtraFiles) != 1 || filepath.Base(e.ExtraFiles[0]) != "weights.bin") {
			t.Errorf("vad/2 extra files %v", e.ExtraFiles)
		}
	}
	wantProblems := []string{"vad/3", "vad/bad version", "vad/4", "typo/config.yaml", "named/config.yaml", "stray.txt"}
	if len(res.Problems) != len(wantProblems) {
		t.Errorf("problems %v, want %d", res.Problems, len(wantProblems))
	}
	for _, w := range wantProblems {
		found := false
		for _, p := range res.Problems {
			found = found || strings.HasSuffix(p.Path, w)
		}
		if !found {
			t.Errorf("no problem reported for %s (got %v)", w, res.Problems)
		}
	}
	if _, err := Scan(filepath.Join(dir, "missing"), nil, nil); err == nil {
		t.Error("missing repository: no error")
	}
}

// strictConfig stands for the node's config validator: strict YAML with the
// keys this test uses.
func strictConfig(b []byte) error {
	var c struct {
		Platform string `yaml:"platform"`
		MaxBatch int    `yaml:"max_batch"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%v: %w", err, models.ErrInvalidArgument)
	}
	return nil
}

// TestScanGraphless: a model whose config the hook calls graphless (an
// ensemble) has version folders without model.onnx; any other model still
// needs one.
func TestScanGraphless(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "ocr/config.yaml"), "ensemble: {}\n")
	write(t, filepath.Join(dir, "ocr/1/dict.txt"), "a\n")
	write(t, filepath.Join(dir, "vad/config.yaml"), "max_batch: 1\n")
	write(t, filepath.Join(dir, "vad/1/readme.txt"), "no model")
	graphless := func(b []byte) bool { return strings.HasPrefix(string(b), "ensemble:") }
	res, err := Scan(dir, nil, graphless)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Entries) != 1 || res.Entries[0].Name != "ocr" || res.Entries[0].ModelFile != "" || len(res.Entries[0].ExtraFiles) != 1 {
		t.Errorf("entries %+v, want ocr/1 with its dictionary and no model file", res.Entries)
	}
	if len(res.Problems) != 1 || !strings.HasSuffix(res.Problems[0].Path, "vad/1") {
		t.Errorf("problems %v, want vad/1 (no model.onnx)", res.Problems)
	}
}
