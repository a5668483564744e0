package fleet

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckONNX(t *testing.T) {
	good := filepath.Join("..", "..", "node", "testdata", "rollout", "rollout_base.onnx")
	b, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckONNX(good); err != nil {
		t.Fatalf("a real model: %v", err)
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "truncated"},
		{"text", []byte("hello, this is not a model\n"), "not an ONNX model"},
		{"json", []byte(`{"kind":"canary"}`), "not an ONNX model"},
		{"truncated", b[:len(b)/2], "past the end"},
		{"zeros", make([]byte, 64), "invalid field number"},
	} {
		p := filepath.Join(dir, tc.name)
		if err := os.WriteFile(p, tc.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := CheckONNX(p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}
