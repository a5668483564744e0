package fleet

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
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
	// Only the top level is checked: a graph of noise passes (edgectl's
	// tests publish such models; ONNX Runtime refuses them on the node).
	noise := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 8)
	noise = protowire.AppendBytes(protowire.AppendTag(noise, 8, protowire.BytesType), []byte{0x10, 17})
	noise = protowire.AppendBytes(protowire.AppendTag(noise, 7, protowire.BytesType), bytes.Repeat([]byte{0xff, 0x07}, 500))
	if p := filepath.Join(dir, "noise"); os.WriteFile(p, noise, 0o600) != nil || CheckONNX(p) != nil {
		t.Fatalf("a model with a graph of noise: %v", CheckONNX(p))
	}
	noOpset := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 8)
	noOpset = protowire.AppendBytes(protowire.AppendTag(noOpset, 7, protowire.BytesType), []byte{1, 2, 3})
	irBytes := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte{8})
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
		{"no opset_import", noOpset, "no opset_import"},
		{"ir_version as bytes", irBytes, "not the ModelProto one"},
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
