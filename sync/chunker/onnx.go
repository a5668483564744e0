package chunker

import (
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protowire"
)

// span is a byte range [Start, End) of a file.
type span struct{ Start, End int64 }

// The ONNX protobuf messages tensorSpans walks (onnx/onnx.proto) and the
// fields it follows: every other field is skipped without being read.
type onnxMessage int

const (
	msgModel onnxMessage = iota
	msgGraph
	msgNode
	msgAttribute
	msgTensor
	msgData // tensor data: recorded, not parsed
)

// onnxChild says what the bytes field num of a message of kind parent
// holds (ok false: a field tensorSpans skips).
func onnxChild(parent onnxMessage, num protowire.Number) (onnxMessage, bool) {
	switch parent {
	case msgModel:
		if num == 7 { // ModelProto.graph
			return msgGraph, true
		}
	case msgGraph:
		switch num {
		case 1: // GraphProto.node
			return msgNode, true
		case 5: // GraphProto.initializer
			return msgTensor, true
		}
	case msgNode:
		if num == 5 { // NodeProto.attribute
			return msgAttribute, true
		}
	case msgAttribute:
		switch num {
		case 5, 11: // AttributeProto.t, tensors (a Constant node's value)
			return msgTensor, true
		case 6, 10: // AttributeProto.g, graphs (If/Loop/Scan bodies)
			return msgGraph, true
		}
	case msgTensor:
		switch num {
		case 4, 5, 7, 9, 10, 11: // float_data, int32_data, int64_data, raw_data, double_data, uint64_data (packed)
			return msgData, true
		}
	}
	return 0, false
}

// maxONNXDepth bounds the nesting tensorSpans follows (a graph in an
// attribute of a node of a graph ... is 3 levels per subgraph).
const maxONNXDepth = 32

// tensorSpans walks the file r (size bytes) as an ONNX ModelProto and
// returns, in file order, the byte ranges of the tensor data of at least
// minBytes bytes: graph initializers and tensor-valued node attributes
// (Constant nodes), in the main graph and in subgraphs. It fails unless the
// whole file is well-formed protobuf with an ir_version and a graph. It
// reads the structure through one 64 KiB buffer and skips field contents
// without reading them, so its memory is that buffer plus the result (at
// most size/minBytes spans), whatever lengths the file claims.
func tensorSpans(r io.ReaderAt, size, minBytes int64) ([]span, error) {
	w, err := walkONNX(r, size, minBytes, false)
	if err != nil {
		return nil, err
	}
	if !w.ir || w.graph == 0 {
		return nil, errors.New("onnx: no ir_version or no graph: not an ONNX model")
	}
	return w.spans, nil
}

// ONNXInfo is what ReadONNX found at the top level of a model file.
type ONNXInfo struct {
	HasIRVersion bool  // an ir_version is set
	GraphBytes   int64 // the size of the graph field(s)
	Opsets       int   // opset_import entries
}

// ReadONNX checks that the top level of the file r (size bytes) is
// well-formed ONNX protobuf to its end, skipping the graph's contents (a
// graph that is no GraphProto is ONNX Runtime's to refuse), and returns what
// that level holds; the caller decides what a model must have. Its memory is
// one 64 KiB buffer.
func ReadONNX(r io.ReaderAt, size int64) (ONNXInfo, error) {
	w, err := walkONNX(r, size, 1<<62, true)
	return ONNXInfo{HasIRVersion: w.ir, GraphBytes: w.graph, Opsets: w.opsets}, err
}

func walkONNX(r io.ReaderAt, size, minBytes int64, topOnly bool) (*walker, error) {
	w := &walker{c: cursor{r: r, size: size, buf: make([]byte, 0, min(size, 64<<10))}, min: max(minBytes, 1), topOnly: topOnly}
	return w, w.message(msgModel, size, 0)
}

type walker struct {
	c       cursor
	min     int64
	topOnly bool // do not descend into the graph
	spans   []span
	ir      bool
	graph   int64
	opsets  int
}

// message walks the fields of a message of kind k that ends at end.
func (w *walker) message(k onnxMessage, end int64, depth int) error {
	if depth > maxONNXDepth {
		return fmt.Errorf("onnx: nested deeper than %d messages", maxONNXDepth)
	}
	for w.c.off < end {
		at := w.c.off
		key, err := w.c.uvarint(end)
		if err != nil {
			return err
		}
		num, typ := protowire.DecodeTag(key)
		if num < protowire.MinValidNumber {
			return fmt.Errorf("onnx: invalid field number %d at byte %d", num, at)
		}
		child, follow := onnxChild(k, num)
		if k == msgModel && (num == 1 && typ != protowire.VarintType || num == 8 && typ != protowire.BytesType) {
			return fmt.Errorf("onnx: field %d at byte %d has wire type %d, not the ModelProto one", num, at, typ)
		}
		if follow && child == msgData && typ != protowire.BytesType {
			follow = false // unpacked repeated numbers: read as they are
		}
		if follow && typ != protowire.BytesType {
			return fmt.Errorf("onnx: field %d at byte %d has wire type %d, not length-delimited", num, at, typ)
		}
		switch typ {
		case protowire.VarintType:
			if _, err := w.c.uvarint(end); err != nil {
				return err
			}
			if k == msgModel && num == 1 { // ModelProto.ir_version
				w.ir = true
			}
		case protowire.Fixed32Type:
			err = w.c.skip(4, end)
		case protowire.Fixed64Type:
			err = w.c.skip(8, end)
		case protowire.BytesType:
			l, err := w.c.uvarint(end)
			if err != nil {
				return err
			}
			start := w.c.off
			if l > uint64(end-start) {
				return fmt.Errorf("onnx: field %d at byte %d says %d bytes, past the end of its message", num, at, l)
			}
			fieldEnd := start + int64(l)
			switch {
			case k == msgModel && num == 8: // ModelProto.opset_import
				w.opsets++
			case !follow:
			case child == msgData:
				if int64(l) >= w.min {
					w.spans = append(w.spans, span{start, fieldEnd})
				}
			default:
				if k == msgModel {
					w.graph += int64(l)
				}
				if w.topOnly {
					break
				}
				if err := w.message(child, fieldEnd, depth+1); err != nil {
					return err
				}
			}
			w.c.off = fieldEnd
		default:
			return fmt.Errorf("onnx: field %d at byte %d has wire type %d, not used by ONNX", num, at, typ)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// cursor reads a file through a buffer; skipping moves the offset only.
type cursor struct {
	r         io.ReaderAt
	size, off int64
	buf       []byte // the file's bytes from bufAt
	bufAt     int64
}

func (c *cursor) readByte(end int64) (byte, error) {
	if c.off >= end {
		return 0, fmt.Errorf("onnx: message ends inside a field at byte %d (truncated?)", c.off)
	}
	if c.off < c.bufAt || c.off >= c.bufAt+int64(len(c.buf)) {
		n := min(int64(cap(c.buf)), c.size-c.off)
		c.buf = c.buf[:n]
		if _, err := c.r.ReadAt(c.buf, c.off); err != nil && !(errors.Is(err, io.EOF) && n > 0) {
			c.buf = c.buf[:0]
			return 0, fmt.Errorf("onnx: read at %d: %w", c.off, err)
		}
		c.bufAt = c.off
	}
	b := c.buf[c.off-c.bufAt]
	c.off++
	return b, nil
}

func (c *cursor) uvarint(end int64) (uint64, error) {
	var v uint64
	for i := 0; i < 10; i++ {
		b, err := c.readByte(end)
		if err != nil {
			return 0, err
		}
		if i == 9 && b > 1 {
			break
		}
		v |= uint64(b&0x7f) << (7 * i)
		if b < 0x80 {
			return v, nil
		}
	}
	return 0, fmt.Errorf("onnx: varint overflows 64 bits at byte %d", c.off)
}

func (c *cursor) skip(n, end int64) error {
	if n > end-c.off {
		return fmt.Errorf("onnx: message ends inside a fixed-size field at byte %d (truncated?)", c.off)
	}
	c.off += n
	return nil
}
