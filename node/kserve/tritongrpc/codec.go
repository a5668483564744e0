package tritongrpc

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"

	"github.com/edgeai/edge-node/errdefs"
	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/node/kserve"
	"github.com/edgeai/edge-node/node/kserve/sysshm"
	pb "github.com/edgeai/edge-node/node/kserve/tritongrpc/inferencepb"
)

// invalid is a request error (InvalidArgument).
func invalid(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), errdefs.ErrInvalidArgument)
}

func unsupported(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), errdefs.ErrUnsupported)
}

// decodeRequest turns a ModelInferRequest into input tensors and the
// requested output names. Sizes are checked against datatype and shape
// before anything is converted: the message itself (bounded by the
// server's MaxRecvMsgSize) is the only memory a lying shape can cost, and
// typed contents are packed into at most as many bytes as they hold.
// Names, datatypes and shapes against the model are the Session's checks.
//
// Inputs naming a shared-memory region point into its mapping (shm, nil
// when the extension is off); their release funcs are appended to
// releases, which the caller runs when the request is done.
func decodeRequest(req *pb.ModelInferRequest, shm *sysshm.Registry, releases *[]func()) ([]inference.Tensor, []string, error) {
	raw := req.RawInputContents
	if len(raw) > 0 && len(raw) != len(req.Inputs) {
		return nil, nil, invalid("raw_input_contents has %d entries for %d inputs (all inputs or none are raw)", len(raw), len(req.Inputs))
	}
	inputs := make([]inference.Tensor, len(req.Inputs))
	for i, in := range req.Inputs {
		ref, err := shmParameters(in.Parameters, "input "+strconv.Quote(in.Name), shm)
		if err != nil {
			return nil, nil, err
		}
		dt, ok := inference.ParseDataType(in.Datatype)
		if !ok {
			return nil, nil, invalid("input %q: unknown datatype %q", in.Name, in.Datatype)
		}
		n, err := inference.ElementCount(in.Shape)
		if err != nil {
			return nil, nil, fmt.Errorf("input %q: %w", in.Name, err) // wraps ErrInvalidArgument
		}
		t := inference.Tensor{Name: in.Name, DataType: dt, Shape: in.Shape}
		if ref.set {
			if in.Contents != nil || (len(raw) > 0 && len(raw[i]) > 0) {
				return nil, nil, invalid("input %q has shared_memory_region and also contents or raw_input_contents", in.Name)
			}
			if err := shmInput(&t, ref, n, shm, releases); err != nil {
				return nil, nil, err
			}
			inputs[i] = t
			continue
		}
		if len(raw) > 0 {
			if in.Contents != nil {
				return nil, nil, invalid("input %q has both contents and raw_input_contents", in.Name)
			}
			err = setRaw(&t, raw[i], n)
		} else {
			err = setContents(&t, in.Contents, n)
		}
		if err != nil {
			return nil, nil, err
		}
		inputs[i] = t
	}
	var outputs []string
	for _, o := range req.Outputs {
		if _, ok := o.Parameters["classification"]; ok {
			return nil, nil, unsupported("output %q: the classification extension is not supported", o.Name)
		}
		if _, err := shmParameters(o.Parameters, "output "+strconv.Quote(o.Name), shm); err != nil {
			return nil, nil, err
		}
		outputs = append(outputs, o.Name)
	}
	return inputs, outputs, nil
}

// shmRef is a tensor's shared-memory window from its parameters.
type shmRef struct {
	region       string
	offset, size uint64
	set          bool
}

// shmParameters reads shared_memory_region (string_param),
// shared_memory_offset and shared_memory_byte_size (int64_param or
// uint64_param) from a tensor's parameters.
func shmParameters(params map[string]*pb.InferParameter, what string, shm *sysshm.Registry) (shmRef, error) {
	var ref shmRef
	var hasSize, hasWindow bool
	for name, p := range params {
		switch name {
		case "shared_memory_region":
			s, ok := p.GetParameterChoice().(*pb.InferParameter_StringParam)
			if !ok || s.StringParam == "" {
				return ref, invalid("%s: shared_memory_region must be a non-empty string_param", what)
			}
			ref.region, ref.set = s.StringParam, true
		case "shared_memory_offset", "shared_memory_byte_size":
			var v uint64
			switch x := p.GetParameterChoice().(type) {
			case *pb.InferParameter_Int64Param:
				if x.Int64Param < 0 {
					return ref, invalid("%s: %s is negative (%d)", what, name, x.Int64Param)
				}
				v = uint64(x.Int64Param)
			case *pb.InferParameter_Uint64Param:
				v = x.Uint64Param
			default:
				return ref, invalid("%s: %s must be an int64_param", what, name)
			}
			if name == "shared_memory_offset" {
				ref.offset = v
			} else {
				ref.size, hasSize = v, true
			}
			hasWindow = true
		}
	}
	switch {
	case ref.set && shm == nil:
		return ref, unsupported("%s: system shared memory is not enabled on this node", what)
	case !ref.set && hasWindow:
		return ref, invalid("%s has shared_memory_offset or shared_memory_byte_size but no shared_memory_region", what)
	case ref.set && !hasSize:
		return ref, invalid("%s names shared_memory_region %q without shared_memory_byte_size", what, ref.region)
	}
	return ref, nil
}

// shmInput points t at its window of the region: no copy.
func shmInput(t *inference.Tensor, ref shmRef, n int64, shm *sysshm.Registry, releases *[]func()) error {
	if t.DataType != inference.Bytes {
		if want := uint64(n) * uint64(t.DataType.Size()); ref.size != want {
			return invalid("input %q: shared_memory_byte_size is %d but %s shape %v needs %d bytes", t.Name, ref.size, t.DataType, t.Shape, want)
		}
	}
	b, release, err := shm.Acquire(ref.region, ref.offset, ref.size)
	if err != nil {
		return fmt.Errorf("input %q: %w", t.Name, err)
	}
	*releases = append(*releases, release)
	if t.DataType == inference.Bytes {
		strs, err := kserve.SplitBytesElements(b, n)
		if err != nil {
			return invalid("input %q: shared memory: %v", t.Name, err)
		}
		t.Strings = strs
		return nil
	}
	t.Data = b
	return nil
}

// writeShmOutputs copies each output that names a region into its window
// and returns the region per output ("" for the others; nil if none).
func writeShmOutputs(req *pb.ModelInferRequest, outs []inference.Tensor, shm *sysshm.Registry, releases *[]func()) ([]string, error) {
	var names []string
	for _, o := range req.Outputs {
		ref, err := shmParameters(o.Parameters, "output "+strconv.Quote(o.Name), shm)
		if err != nil || !ref.set {
			continue // checked by decodeRequest
		}
		for i := range outs {
			t := &outs[i]
			if t.Name != o.Name {
				continue
			}
			size := uint64(kserve.RawSize(t))
			if size > ref.size {
				return nil, invalid("output %q needs %d bytes but its shared_memory_byte_size is %d", t.Name, size, ref.size)
			}
			b, release, err := shm.Acquire(ref.region, ref.offset, ref.size)
			if err != nil {
				return nil, fmt.Errorf("output %q: %w", t.Name, err)
			}
			*releases = append(*releases, release)
			kserve.PutRaw(b, t)
			if names == nil {
				names = make([]string, len(outs))
			}
			names[i] = ref.region
		}
	}
	return names, nil
}

// setRaw takes raw bytes (little-endian elements, or length-prefixed BYTES
// elements) as the tensor's memory, uncopied.
func setRaw(t *inference.Tensor, b []byte, n int64) error {
	if t.DataType == inference.Bytes {
		strs, err := kserve.SplitBytesElements(b, n)
		if err != nil {
			return invalid("input %q: raw_input_contents: %v", t.Name, err)
		}
		t.Strings = strs
		return nil
	}
	if want := n * int64(t.DataType.Size()); int64(len(b)) != want {
		return invalid("input %q: raw_input_contents has %d bytes but %s shape %v needs %d", t.Name, len(b), t.DataType, t.Shape, want)
	}
	t.Data = b
	return nil
}

// contentsCounts counts what each InferTensorContents field holds.
func contentsCounts(c *pb.InferTensorContents) map[string]int {
	return map[string]int{
		"bool_contents": len(c.BoolContents), "int_contents": len(c.IntContents), "int64_contents": len(c.Int64Contents),
		"uint_contents": len(c.UintContents), "uint64_contents": len(c.Uint64Contents), "fp32_contents": len(c.Fp32Contents),
		"fp64_contents": len(c.Fp64Contents), "bytes_contents": len(c.BytesContents),
	}
}

// contentsField names the InferTensorContents field a datatype uses.
func contentsField(dt inference.DataType) string {
	switch dt {
	case inference.Bool:
		return "bool_contents"
	case inference.Int8, inference.Int16, inference.Int32:
		return "int_contents"
	case inference.Int64:
		return "int64_contents"
	case inference.Uint8, inference.Uint16, inference.Uint32:
		return "uint_contents"
	case inference.Uint64:
		return "uint64_contents"
	case inference.FP32:
		return "fp32_contents"
	case inference.FP64:
		return "fp64_contents"
	case inference.Bytes:
		return "bytes_contents"
	}
	return "" // FP16, BF16: raw only
}

// setContents packs typed contents into the tensor's little-endian bytes.
// Values out of a narrow type's range are errors, not wrapped.
func setContents(t *inference.Tensor, c *pb.InferTensorContents, n int64) error {
	field := contentsField(t.DataType)
	if field == "" {
		return invalid("input %q: %s has no typed contents field: send it in raw_input_contents", t.Name, t.DataType)
	}
	if c == nil {
		c = &pb.InferTensorContents{}
	}
	for name, count := range contentsCounts(c) {
		if name != field && count > 0 {
			return invalid("input %q: %s data belongs in %s, not %s", t.Name, t.DataType, field, name)
		}
	}
	if got := int64(contentsCounts(c)[field]); got != n {
		return invalid("input %q: %s has %d elements but shape %v needs %d", t.Name, field, got, t.Shape, n)
	}
	size := t.DataType.Size()
	if t.DataType == inference.Bytes {
		t.Strings = c.BytesContents
		return nil
	}
	b := make([]byte, n*int64(size))
	le := binary.LittleEndian
	for i := int64(0); i < n; i++ {
		o := b[i*int64(size):]
		switch t.DataType {
		case inference.Bool:
			if c.BoolContents[i] {
				o[0] = 1
			}
		case inference.Int8, inference.Int16, inference.Int32:
			v := int64(c.IntContents[i])
			lo, hi := int64(math.MinInt32), int64(math.MaxInt32)
			switch t.DataType {
			case inference.Int8:
				lo, hi = math.MinInt8, math.MaxInt8
			case inference.Int16:
				lo, hi = math.MinInt16, math.MaxInt16
			}
			if v < lo || v > hi {
				return invalid("input %q: element %d: %d is out of range for %s", t.Name, i, v, t.DataType)
			}
			putUint(o, size, uint64(v))
		case inference.Int64:
			le.PutUint64(o, uint64(c.Int64Contents[i]))
		case inference.Uint8, inference.Uint16, inference.Uint32:
			v := uint64(c.UintContents[i])
			if hi := uint64(1)<<(8*size) - 1; v > hi {
				return invalid("input %q: element %d: %d is out of range for %s", t.Name, i, v, t.DataType)
			}
			putUint(o, size, v)
		case inference.Uint64:
			le.PutUint64(o, c.Uint64Contents[i])
		case inference.FP32:
			le.PutUint32(o, math.Float32bits(c.Fp32Contents[i]))
		case inference.FP64:
			le.PutUint64(o, math.Float64bits(c.Fp64Contents[i]))
		}
	}
	t.Data = b
	return nil
}

func putUint(o []byte, size int, v uint64) {
	switch size {
	case 1:
		o[0] = byte(v)
	case 2:
		binary.LittleEndian.PutUint16(o, uint16(v))
	case 4:
		binary.LittleEndian.PutUint32(o, uint32(v))
	}
}

// encodeResponse builds the response with every output in
// raw_output_contents (as Triton answers), aliasing the output memory;
// BYTES outputs are length-prefixed into one new buffer each. An output
// written to shared memory (shm[i] != "") gets the region and its byte
// size as parameters and an empty raw_output_contents entry, which keeps
// the entries in step with the outputs.
func encodeResponse(m inference.Model, id string, outs []inference.Tensor, shm []string) *pb.ModelInferResponse {
	resp := &pb.ModelInferResponse{ModelName: m.Name(), ModelVersion: m.Version(), Id: id,
		Outputs: make([]*pb.ModelInferResponse_InferOutputTensor, len(outs)), RawOutputContents: make([][]byte, len(outs))}
	for i := range outs {
		o := &outs[i]
		shape := o.Shape
		if shape == nil {
			shape = []int64{}
		}
		resp.Outputs[i] = &pb.ModelInferResponse_InferOutputTensor{Name: o.Name, Datatype: o.DataType.String(), Shape: shape}
		if shm != nil && shm[i] != "" {
			size := int64(len(o.Data))
			if o.DataType == inference.Bytes {
				size = 0
				for _, s := range o.Strings {
					size += 4 + int64(len(s))
				}
			}
			resp.Outputs[i].Parameters = map[string]*pb.InferParameter{
				"shared_memory_region":    {ParameterChoice: &pb.InferParameter_StringParam{StringParam: shm[i]}},
				"shared_memory_byte_size": {ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: size}},
			}
			resp.RawOutputContents[i] = []byte{}
			continue
		}
		if o.DataType == inference.Bytes {
			size := 0
			for _, s := range o.Strings {
				size += 4 + len(s)
			}
			b := make([]byte, 0, size)
			for _, s := range o.Strings {
				b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
				b = append(b, s...)
			}
			resp.RawOutputContents[i] = b
			continue
		}
		resp.RawOutputContents[i] = o.Data
	}
	return resp
}
