package fleet

import (
	"errors"
	"fmt"
	"os"

	"github.com/edgeai/edge-node/sync/chunker"
)

// CheckONNX reads the top level of the file at path as an ONNX ModelProto
// (chunker.ReadONNX) and fails, saying why, unless it is one: every field
// well formed up to the end of the file, an ir_version, a non-empty graph
// and an opset_import. It skips field contents without reading them, so it
// is cheap on large models; it does not check the graph itself (the node's
// load and warm-up do).
func CheckONNX(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if err := checkModel(f, fi.Size()); err != nil {
		return fmt.Errorf("%s is not an ONNX model: %w", path, err)
	}
	return nil
}

func checkModel(f *os.File, size int64) error {
	if size == 0 {
		return errors.New("the file is empty (truncated?)")
	}
	info, err := chunker.ReadONNX(f, size)
	switch {
	case err != nil:
		return err
	case !info.HasIRVersion:
		return errors.New("no ir_version")
	case info.GraphBytes == 0:
		return errors.New("no graph")
	case info.Opsets == 0:
		return errors.New("no opset_import")
	}
	return nil
}
