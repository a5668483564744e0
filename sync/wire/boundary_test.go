package wire

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// TestSyncBoundaries checks every package under sync/: no cgo, no ONNX
// Runtime, not named "sync", and a package doc comment.
func TestSyncBoundaries(t *testing.T) {
	docs := map[string]bool{}
	names := map[string]string{}
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.Contains(path, "testdata") {
			return err
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly|parser.ParseComments)
		if err != nil {
			return err
		}
		dir := filepath.Dir(path)
		if !strings.HasSuffix(path, "_test.go") {
			names[dir] = f.Name.Name
			if f.Doc != nil && strings.HasPrefix(f.Doc.Text(), "Package "+f.Name.Name+" ") {
				docs[dir] = true
			}
		}
		for _, imp := range f.Imports {
			p := strings.Trim(imp.Path.Value, `"`)
			if p == "C" || strings.Contains(p, "onnxruntime_go") {
				t.Errorf("%s imports %s", path, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(names) < 5 {
		t.Fatalf("found only %d packages under sync/", len(names))
	}
	for dir, name := range names {
		if name == "sync" {
			t.Errorf("%s: package named sync shadows the standard library", dir)
		}
		if !docs[dir] {
			t.Errorf("%s: package %s has no doc comment", dir, name)
		}
	}
}
