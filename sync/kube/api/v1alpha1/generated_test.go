package v1alpha1

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// The committed deepcopy code and CRD are what controller-gen makes of the
// types now (make generate-crd regenerates them): an edited type whose
// schema was not regenerated would be validated by the API server against
// the old one.
func TestGeneratedFilesAreCurrent(t *testing.T) {
	out := t.TempDir()
	root := filepath.Join("..", "..", "..", "..")
	cmd := exec.Command("go", "run", "sigs.k8s.io/controller-tools/cmd/controller-gen@v0.16.5",
		"object", "paths=./sync/kube/api/...", "output:object:dir="+out, "crd", "output:crd:dir="+out)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("controller-gen: %v\n%s", err, b)
	}
	for gen, committed := range map[string]string{
		"zz_generated.deepcopy.go":           "zz_generated.deepcopy.go",
		"edge.edgeai.dev_modelversions.yaml": filepath.Join(root, "deploy", "kubernetes", "crd", "edge.edgeai.dev_modelversions.yaml"),
	} {
		want, err := os.ReadFile(filepath.Join(out, gen))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(committed)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from what controller-gen makes of types.go: run make generate-crd", committed)
		}
	}
}
