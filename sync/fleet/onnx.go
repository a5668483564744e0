package fleet

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"google.golang.org/protobuf/encoding/protowire"
)

// ONNX ModelProto fields CheckONNX looks at (onnx/onnx.proto).
const (
	onnxIRVersion   protowire.Number = 1
	onnxGraph       protowire.Number = 7
	onnxOpsetImport protowire.Number = 8
)

// CheckONNX reads the top level of the file at path as an ONNX ModelProto
// and fails, saying why, unless it is one: every field well formed up to
// the end of the file, an ir_version, a non-empty graph and an
// opset_import. It streams the file (fields are skipped, not loaded), so
// it is cheap on large models; it does not check the graph itself (the
// node's load and warm-up do).
func CheckONNX(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := checkModelProto(bufio.NewReaderSize(f, 64<<10)); err != nil {
		return fmt.Errorf("%s is not an ONNX model: %w", path, err)
	}
	return nil
}

func checkModelProto(r *bufio.Reader) error {
	var ir uint64
	var graph, opsets int
	for n := 0; ; n++ {
		key, err := binary.ReadUvarint(r)
		if errors.Is(err, io.EOF) && n > 0 {
			break
		}
		if err != nil {
			return fmt.Errorf("field %d: %w", n+1, eofText(err))
		}
		num, typ := protowire.DecodeTag(key)
		if !num.IsValid() {
			return fmt.Errorf("field %d: invalid field number %d", n+1, num)
		}
		switch typ {
		case protowire.VarintType:
			v, err := binary.ReadUvarint(r)
			if err != nil {
				return fmt.Errorf("field %d (number %d): %w", n+1, num, eofText(err))
			}
			if num == onnxIRVersion {
				ir = v
			}
		case protowire.Fixed32Type, protowire.Fixed64Type:
			size := 4
			if typ == protowire.Fixed64Type {
				size = 8
			}
			if _, err := io.ReadFull(r, make([]byte, size)); err != nil {
				return fmt.Errorf("field %d (number %d): %w", n+1, num, eofText(err))
			}
		case protowire.BytesType:
			l, err := binary.ReadUvarint(r)
			if err != nil {
				return fmt.Errorf("field %d (number %d): %w", n+1, num, eofText(err))
			}
			if d, err := r.Discard(int(min(l, 1<<62))); err != nil || uint64(d) != l {
				return fmt.Errorf("field %d (number %d) says %d bytes, past the end of the file", n+1, num, l)
			}
			switch num {
			case onnxGraph:
				graph += int(l)
			case onnxOpsetImport:
				opsets++
			}
		default:
			return fmt.Errorf("field %d (number %d): wire type %d is not used by ONNX", n+1, num, typ)
		}
		if (num == onnxIRVersion && typ != protowire.VarintType) || ((num == onnxGraph || num == onnxOpsetImport) && typ != protowire.BytesType) {
			return fmt.Errorf("field %d: number %d has wire type %d, not the ModelProto one", n+1, num, typ)
		}
	}
	switch {
	case ir == 0:
		return errors.New("no ir_version")
	case graph == 0:
		return errors.New("no graph")
	case opsets == 0:
		return errors.New("no opset_import")
	}
	return nil
}

func eofText(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("the file ends inside it (truncated?)")
	}
	return err
}
