package repository

import (
	"errors"
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
	write(t, filepath.Join(dir, "vad/config.yaml"), "platform: onnxruntime_onnx\nmax_batch_size: 4\n")
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
	write(t, filepath.Join(dir, "named/config.yaml"), "name: other\n") // name mismatch
	write(t, filepath.Join(dir, "named/1/model.onnx"), "n")
	write(t, filepath.Join(dir, "stray.txt"), "x")
	write(t, filepath.Join(dir, ".git/HEAD"), "x")

	res, err := Scan(dir)
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
		if e.Name == "vad" && (e.Parsed.MaxBatchSize != 4 || len(e.Config) == 0) {
			t.Errorf("vad config not attached: %+v", e.Parsed)
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
	if _, err := Scan(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing repository: no error")
	}
}

func TestParseConfigBad(t *testing.T) {
	if c, err := ParseConfig([]byte("providers: [tensorrt, cpu]\nlabels: {team: vision}\n")); err != nil || len(c.Providers) != 2 {
		t.Fatalf("good config: %+v %v", c, err)
	}
	if _, err := ParseConfig(nil); err != nil {
		t.Fatalf("empty config: %v", err)
	}
	for name, in := range map[string]string{
		"unknown key":   "max_bach_size: 1",
		"wrong type":    "max_batch_size: lots",
		"negative":      "max_batch_size: -1",
		"huge batch":    "max_batch_size: 100000",
		"bad platform":  "platform: tensorflow_savedmodel",
		"bad provider":  "providers: [gpu]",
		"dup provider":  "providers: [cpu, cpu]",
		"bad name":      "name: ../x",
		"bad label":     "labels: {\"a b\": c}",
		"two documents": "platform: onnxruntime_onnx\n---\nplatform: onnxruntime_onnx\n",
		"not a map":     "- 1\n- 2\n",
		"tabs":          "\tname: x",
		"too big":       strings.Repeat("#", MaxConfigBytes+1),
		"alias bomb":    "a: &a [x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n",
	} {
		if _, err := ParseConfig([]byte(in)); !errors.Is(err, models.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("platform: onnxruntime_onnx\nmax_batch_size: 8\nproviders: [cuda, cpu]\n"))
	f.Add([]byte("labels: {a: b}\n"))
	f.Add([]byte("a: &a [x]\nb: [*a, *a]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			if !errors.Is(err, models.ErrInvalidArgument) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted config does not validate: %v", err)
		}
	})
}
