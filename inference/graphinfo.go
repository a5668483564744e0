package inference

import (
	"errors"
	"fmt"
	"os"

	ort "github.com/yalue/onnxruntime_go"
	"google.golang.org/protobuf/encoding/protowire"
)

// errGraphInfo means graphInfo cannot tell a model's inputs and outputs
// the way ONNX Runtime would; the caller asks ONNX Runtime instead.
var errGraphInfo = errors.New("inputs and outputs not readable from the graph")

// ONNX protobuf field numbers (onnx.proto3) graphInfo reads.
const (
	modelIRVersion = 1 // ModelProto.ir_version
	modelGraph     = 7 // ModelProto.graph

	graphInitializer       = 5  // GraphProto.initializer (TensorProto)
	graphInput             = 11 // GraphProto.input (ValueInfoProto)
	graphOutput            = 12 // GraphProto.output
	graphSparseInitializer = 15 // GraphProto.sparse_initializer

	tensorName = 8 // TensorProto.name

	valueName = 1 // ValueInfoProto.name
	valueType = 2 // ValueInfoProto.type (TypeProto)

	typeTensor = 1 // TypeProto.tensor_type

	tensorElemType = 1 // TypeProto.Tensor.elem_type
	tensorShape    = 2 // TypeProto.Tensor.shape (TensorShapeProto)

	shapeDim = 1 // TensorShapeProto.dim

	dimValue = 1 // TensorShapeProto.Dimension.dim_value
)

// graphInfo reads a model's inputs and outputs from its ONNX file's graph
// (no ONNX Runtime session), as ONNX Runtime reports them: graph inputs that
// are initializers are not inputs; a symbolic or missing dimension is -1.
// ONNX's element type numbers are ONNX Runtime's. It returns errGraphInfo
// for what it does not model (IR version < 4, where initializers may be
// overridden as inputs; sparse initializers; a non-tensor or shapeless
// value), and a wrapped errGraphInfo for a file it cannot parse, so that
// ONNX Runtime has the last word on a broken file.
func graphInfo(path string) (ins, outs []ort.InputOutputInfo, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", errGraphInfo, err)
	}
	var graph []byte
	var ir int64
	err = eachField(data, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == modelIRVersion && typ == protowire.VarintType:
			ir = int64(x)
		case num == modelGraph && typ == protowire.BytesType:
			graph = v
		}
		return nil
	})
	if err != nil || graph == nil || ir < 4 {
		return nil, nil, errGraphInfo
	}
	inits := map[string]bool{}
	var inVals, outVals [][]byte
	err = eachField(graph, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case graphInitializer:
			return eachField(v, func(n protowire.Number, t protowire.Type, s []byte, _ uint64) error {
				if n == tensorName && t == protowire.BytesType {
					inits[string(s)] = true
				}
				return nil
			})
		case graphSparseInitializer:
			return errGraphInfo
		case graphInput:
			inVals = append(inVals, v)
		case graphOutput:
			outVals = append(outVals, v)
		}
		return nil
	})
	if err != nil {
		return nil, nil, errGraphInfo
	}
	for _, v := range inVals {
		info, err := valueInfo(v)
		if err != nil {
			return nil, nil, err
		}
		if !inits[info.Name] {
			ins = append(ins, info)
		}
	}
	for _, v := range outVals {
		info, err := valueInfo(v)
		if err != nil {
			return nil, nil, err
		}
		outs = append(outs, info)
	}
	return ins, outs, nil
}

// valueInfo decodes a tensor ValueInfoProto.
func valueInfo(b []byte) (ort.InputOutputInfo, error) {
	var info ort.InputOutputInfo
	var typ []byte
	err := eachField(b, func(num protowire.Number, t protowire.Type, v []byte, _ uint64) error {
		switch {
		case num == valueName && t == protowire.BytesType:
			info.Name = string(v)
		case num == valueType && t == protowire.BytesType:
			typ = v
		}
		return nil
	})
	if err != nil || typ == nil {
		return info, errGraphInfo
	}
	var tensor []byte
	if err := eachField(typ, func(num protowire.Number, t protowire.Type, v []byte, _ uint64) error {
		if num == typeTensor && t == protowire.BytesType {
			tensor = v
		}
		return nil
	}); err != nil || tensor == nil {
		return info, errGraphInfo
	}
	var shape []byte
	hasShape := false
	if err := eachField(tensor, func(num protowire.Number, t protowire.Type, v []byte, x uint64) error {
		switch {
		case num == tensorElemType && t == protowire.VarintType:
			info.DataType = ort.TensorElementDataType(x)
		case num == tensorShape && t == protowire.BytesType:
			shape, hasShape = v, true
		}
		return nil
	}); err != nil || !hasShape || info.DataType == 0 {
		return info, errGraphInfo
	}
	dims := ort.Shape{}
	if err := eachField(shape, func(num protowire.Number, t protowire.Type, v []byte, _ uint64) error {
		if num != shapeDim || t != protowire.BytesType {
			return nil
		}
		d := int64(-1)
		err := eachField(v, func(n protowire.Number, t protowire.Type, _ []byte, x uint64) error {
			if n == dimValue && t == protowire.VarintType {
				d = int64(x)
			}
			return nil
		})
		dims = append(dims, d)
		return err
	}); err != nil {
		return info, errGraphInfo
	}
	info.OrtValueType = ort.ONNXTypeTensor
	info.Dimensions = dims
	return info, nil
}

// eachField calls fn for every top-level field of the protobuf message b:
// its number and wire type, its bytes for a length-delimited field, its
// value for a varint.
func eachField(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := fn(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}
