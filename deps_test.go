package edgenode_test

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestImportBoundaries enforces the project's hard import rules: only
// cgo/... has import "C"; only inference/... imports onnxruntime_go; the
// inference frontends in node/kserve/... (tests included) import nothing
// from the daemon's other packages under node/, from models/... or from
// sync/...: they reach the serving owner only through their own small
// interfaces; errdefs imports no package of this module. It also checks
// that every package has a doc comment.
func TestImportBoundaries(t *testing.T) {
	const (
		ort    = "github.com/yalue/onnxruntime_go"
		module = "github.com/edgeai/edge-node/"
	)
	docs := map[string]bool{} // package dir -> has a doc comment
	fset := token.NewFileSet()
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != "." && (strings.HasPrefix(name, ".") || name == "testdata" || name == "bin" || name == "dist") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly|parser.ParseComments)
		if err != nil {
			return err
		}
		dir := filepath.ToSlash(filepath.Dir(path))
		if !strings.HasSuffix(path, "_test.go") {
			if _, seen := docs[dir]; !seen {
				docs[dir] = false
			}
			if f.Doc != nil && strings.HasPrefix(strings.TrimSpace(f.Doc.Text()), "Package "+f.Name.Name) ||
				f.Doc != nil && f.Name.Name == "main" && strings.HasPrefix(strings.TrimSpace(f.Doc.Text()), "Command ") {
				docs[dir] = true
			}
		}
		for _, imp := range f.Imports {
			p := strings.Trim(imp.Path.Value, `"`)
			switch {
			case p == "C" && !strings.HasPrefix(dir, "cgo/") && dir != "cgo":
				t.Errorf("%s: import \"C\" outside cgo/", path)
			case p == ort && !strings.HasPrefix(dir, "inference"):
				t.Errorf("%s: imports onnxruntime_go outside inference/", path)
			}
			if rel, ok := strings.CutPrefix(p, module); ok && within(dir, "node/kserve") && !within(rel, "node/kserve") &&
				(within(rel, "node") || within(rel, "models") || within(rel, "sync")) {
				t.Errorf("%s: node/kserve imports %s (it may use inference, errdefs and its own interfaces)", path, p)
			}
			if rel, ok := strings.CutPrefix(p, module); ok {
				if msg := layerRule(dir, rel); msg != "" {
					t.Errorf("%s: imports %s: %s", path, p, msg)
				}
			}
			if within(dir, "errdefs") && strings.HasPrefix(p, module) {
				t.Errorf("%s: errdefs imports %s (it is imported by every layer, so imports none)", path, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) < 5 {
		t.Fatalf("walked only %d packages; is the test running from the module root?", len(docs))
	}
	for dir, ok := range docs {
		if !ok && dir != "." {
			t.Errorf("package in %s has no doc comment (// Package x ... or // Command x ...)", dir)
		}
	}
}

// within reports whether the slash-separated path p is dir or below it.
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// layerRule says why the package in dir may not import the module package
// rel ("" when it may). The node's packages call only downward: node (the
// wiring) imports its subpackages, never the other way; the serving owner
// imports none of its clients (admin, reconcile, kserve); the admin API and
// the reconciler talk to the owner, not to each other; and nothing outside
// node/ and cmd/ imports node/... (sync/ in particular is the protocol, not
// the daemon).
func layerRule(dir, rel string) string {
	switch {
	case within(dir, "node"):
	case within(rel, "node") && !within(dir, "cmd") && dir != ".":
		return "only cmd/ and node/ itself may import node/..."
	default:
		return ""
	}
	switch {
	case dir != "node" && rel == "node":
		return "a subpackage of node calls back up into the wiring"
	case within(dir, "node/serving") && (within(rel, "node/admin") || within(rel, "node/reconcile") || within(rel, "node/kserve")):
		return "the serving owner imports none of its clients"
	case within(dir, "node/admin") && (within(rel, "node/reconcile") || within(rel, "node/kserve")),
		within(dir, "node/reconcile") && (within(rel, "node/admin") || within(rel, "node/kserve")):
		return "the owner's faces do not import each other"
	}
	return ""
}
