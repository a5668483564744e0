package node

import (
	"os/exec"
	"strings"
	"testing"
)

// Package node reaches ONNX Runtime only through package inference: it must
// not import onnxruntime_go (directly or through a non-inference package)
// nor use cgo itself.
func TestImportBoundaries(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.CgoFiles}} {{join .Imports " "}}`, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	if !strings.HasPrefix(string(out), "[] ") {
		t.Errorf("package node has cgo files: %s", out)
	}
	for _, imp := range strings.Fields(string(out))[1:] {
		if strings.Contains(imp, "onnxruntime_go") {
			t.Errorf("package node imports %s", imp)
		}
	}
}
