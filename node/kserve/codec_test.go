package kserve

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/node/kserve/kservetest"
)

// codecModel is the tensor layout the pure codec tests decode against.
var codecInputs = []inference.TensorInfo{
	{Name: "x", DataType: inference.FP32, Shape: []int64{-1, 3}},
	{Name: "sr", DataType: inference.Int64, Shape: []int64{}},
}
var codecOutputs = []inference.TensorInfo{
	{Name: "y", DataType: inference.FP32, Shape: []int64{-1, 3}},
	{Name: "z", DataType: inference.FP32, Shape: []int64{-1}},
}

func decodeForTest(body []byte, headerLen int64, inputs, outputs []inference.TensorInfo) (*inferRequest, error) {
	rd := &requestDecoder{
		ctx: context.Background(), alloc: inference.HeapAllocator{},
		inputs: inputs, outputs: outputs,
		limits: decodeLimits{bodyBytes: int64(len(body)), headerLen: headerLen},
	}
	return rd.decodeRequest(bytes.NewReader(body))
}

// binaryBody joins a JSON header and binary sections.
func binaryBody(header string, sections ...[]byte) ([]byte, int64) {
	b := []byte(header)
	for _, s := range sections {
		b = append(b, s...)
	}
	return b, int64(len(header))
}

func TestDecodeJSONRequest(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
	}{
		{"flat", `{"id":"a\"b","inputs":[{"name":"x","datatype":"FP32","shape":[2,3],"data":[1,2,3,4,5,6.5]},{"name":"sr","datatype":"INT64","shape":[],"data":[16000]}]}`},
		{"nested", `{"id":"a\"b","inputs":[{"name":"x","datatype":"FP32","shape":[2,3],"data":[[1,2,3],[4,5,6.5]]},{"name":"sr","datatype":"INT64","shape":[],"data":16000}]}`},
		{"data first", `{"id":"a\"b","inputs":[{"data":[[1,2,3],[4,5,6.5]],"shape":[2,3],"name":"x","datatype":"FP32"},{"data":[16000],"datatype":"INT64","name":"sr","shape":[]}]}`},
		{"escaped keys and params", `{"parameters":{"foo":[1,{"a":2}]},"i\u0064":"a\"b","inputs":[{"name":"x","parameters":{"p":1},"datatype":"FP32","shape":[2,3],"data":[1,2,3,4,5,6.5]},{"name":"s\u0072","datatype":"INT64","shape":[],"data":[16000]}],"outputs":[]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := decodeForTest([]byte(tc.body), -1, codecInputs, codecOutputs)
			if err != nil {
				t.Fatal(err)
			}
			if string(req.id) != `"a\"b"` {
				t.Errorf("id = %s", req.id)
			}
			if got, want := req.inputs[0].tensor.Data, kservetest.F32LE(1, 2, 3, 4, 5, 6.5); !bytes.Equal(got, want) {
				t.Errorf("x = %v, want %v", got, want)
			}
			if got, want := req.inputs[1].tensor.Data, kservetest.I64LE(16000); !bytes.Equal(got, want) {
				t.Errorf("sr = %v, want %v", got, want)
			}
		})
	}
}

func TestDecodeBinaryRequest(t *testing.T) {
	body, hl := binaryBody(`{"inputs":[{"name":"sr","datatype":"INT64","shape":[],"data":[8000]},{"name":"x","datatype":"FP32","shape":[1,3],"parameters":{"binary_data_size":12}}],"outputs":[{"name":"z","parameters":{"binary_data":true}}],"parameters":{"binary_data_output":false}}`,
		kservetest.F32LE(-1, 0.5, 7))
	req, err := decodeForTest(body, hl, codecInputs, codecOutputs)
	if err != nil {
		t.Fatal(err)
	}
	if got := req.inputs[1].tensor.Data; !bytes.Equal(got, kservetest.F32LE(-1, 0.5, 7)) {
		t.Errorf("x = %v", got)
	}
	if len(req.outputs) != 1 || req.outputs[0].name != "z" || !req.outputs[0].binary || req.binaryOutput {
		t.Errorf("outputs = %+v, binaryOutput %v", req.outputs, req.binaryOutput)
	}
}

// A table of bad requests for the codec: each must fail with a 400 (or the
// status given) whose message names the problem.
func TestDecodeRejectsBadRequests(t *testing.T) {
	good := kservetest.F32LE(1, 2, 3)
	for _, tc := range []struct {
		name   string
		body   []byte
		hl     int64
		status int
		msg    string
	}{
		{"empty body", nil, -1, 400, "ends in the middle"},
		{"not an object", []byte(`[1]`), -1, 400, "the request must be an object"},
		{"truncated", []byte(`{"inputs":[{"name":"x"`), -1, 400, "ends in the middle"},
		{"syntax", []byte(`{"inputs":[}`), -1, 400, "each input must be an object, found the end of an object"},
		{"bad literal", []byte(`{"inputs":[{"name":tru}]}`), -1, 400, "invalid JSON"},
		{"trailing garbage", []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]},{"name":"sr","datatype":"INT64","shape":[],"data":[1]}]}xyz`), -1, 400, "after the request's JSON object"},
		{"second object", []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]},{"name":"sr","datatype":"INT64","shape":[],"data":[1]}]} {}`), -1, 400, "after the request's JSON object"},
		{"duplicate key", []byte(`{"inputs":[],"inputs":[]}`), -1, 400, "duplicate"},
		{"no inputs", []byte(`{"inputs":[]}`), -1, 400, `has no "inputs"`},
		{"inputs not array", []byte(`{"inputs":{}}`), -1, 400, `"inputs" must be an array`},
		{"missing input", []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]}]}`), -1, 400, `missing input "sr"`},
		{"unknown input", []byte(`{"inputs":[{"name":"q","datatype":"FP32","shape":[1,3],"data":[1,2,3]}]}`), -1, 400, `unknown input "q"`},
		{"duplicate input", []byte(`{"inputs":[{"name":"sr","datatype":"INT64","shape":[],"data":[1]},{"name":"sr","datatype":"INT64","shape":[],"data":[1]}]}`), -1, 400, `input "sr" appears twice`},
		{"no name", []byte(`{"inputs":[{"datatype":"FP32","shape":[1,3],"data":[1,2,3]}]}`), -1, 400, `has no "name"`},
		{"no datatype", []byte(`{"inputs":[{"name":"x","shape":[1,3],"data":[1,2,3]}]}`), -1, 400, `has no "datatype"`},
		{"no shape", []byte(`{"inputs":[{"name":"x","datatype":"FP32","data":[1,2,3]}]}`), -1, 400, `has no "shape"`},
		{"no data", []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3]}]}`), -1, 400, `no "data", no binary_data_size and no shared_memory_region`},
		{"unknown datatype", []byte(`{"inputs":[{"name":"x","datatype":"FP33","shape":[1,3],"data":[1,2,3]}]}`), -1, 400, `unknown datatype "FP33"`},
		{"wrong datatype", []byte(`{"inputs":[{"name":"x","datatype":"FP64","shape":[1,3],"data":[1,2,3]}]}`), -1, 400, "datatype FP64 does not match the model's FP32"},
		{"wrong shape", []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}`), -1, 400, "shape [1 4] does not match the model's [-1 3]"},
		{"wrong rank", []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[3],"data":[1,2,3]}]}`), -1, 400, "does not match the model's"},
		{"negative dim", []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[-1,3],"data":[1,2,3]}]}`), -1, 400, "dimension 0 is -1"},
		{"overflowing dims", []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[2,9223372036854775807],"data":[1,2,3]}]}`), -1, 400, "overflows"},
		{"huge shape", []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[100000000,3],"data":[1,2,3]}]}`), -1, 400, "more than a"},
		{"dim not integer", []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1.5,3],"data":[1,2,3]}]}`), -1, 400, "must be an integer, found 1.5"},
		{"too few elements", []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[2,3],"data":[1,2,3]}]}`), -1, 400, `"data" has 3 elements but shape [2 3] needs 6`},
		{"too many elements", []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3,4]}]}`), -1, 400, "more than the 3 elements"},
		{"string in FP32", []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,"2",3]}]}`), -1, 400, `element 1: "2" is not a number, as FP32 data must be`},
		{"null element", []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,null,3]}]}`), -1, 400, "element 1: null is not a number"},
		{"FP32 out of range", []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,1e39,3]}]}`), -1, 400, "element 1: 1e39 is out of range for FP32"},
		{"INT64 not integer", []byte(`{"inputs":[{"name":"sr","datatype":"INT64","shape":[],"data":[1.5]}]}`), -1, 400, "element 0: 1.5 is not a valid INT64"},
		{"INT64 overflow", []byte(`{"inputs":[{"name":"sr","datatype":"INT64","shape":[],"data":[9223372036854775808]}]}`), -1, 400, "is not a valid INT64"},
		{"data twice", []byte(`{"inputs":[{"name":"sr","datatype":"INT64","shape":[],"data":[1],"data":[2]}]}`), -1, 400, "duplicate"},
		{"deep nesting", []byte(`{"inputs":[{"name":"sr","datatype":"INT64","shape":[],"data":` + strings.Repeat("[", 100) + `1` + strings.Repeat("]", 100) + `}]}`), -1, 400, "nests deeper"},
		{"unknown output", []byte(`{"inputs":[{"name":"sr","datatype":"INT64","shape":[],"data":[1]}],"outputs":[{"name":"w"}]}`), -1, 400, `unknown output "w"`},
		{"duplicate output", []byte(`{"outputs":[{"name":"y"},{"name":"y"}]}`), -1, 400, `output "y" is requested twice`},
		{"classification", []byte(`{"outputs":[{"name":"y","parameters":{"classification":3}}]}`), -1, 501, "classification"},
		{"shared memory", []byte(`{"inputs":[{"name":"x","parameters":{"shared_memory_region":"r"}}]}`), -1, 501, "shared memory"},
		{"binary size without header", []byte(`{"inputs":[{"name":"sr","datatype":"INT64","shape":[],"data":[1]},{"name":"x","datatype":"FP32","shape":[1,3],"parameters":{"binary_data_size":12}}]}`), -1, 400, "no Inference-Header-Content-Length"},
		{"binary data and data", append([]byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3],"parameters":{"binary_data_size":12}}]}`), good...), -2, 400, `both "data" and binary_data_size`},
		{"binary size mismatch", append([]byte(`{"inputs":[{"name":"sr","datatype":"INT64","shape":[],"data":[1]},{"name":"x","datatype":"FP32","shape":[1,3],"parameters":{"binary_data_size":8}}]}`), good[:8]...), -2, 400, "binary_data_size is 8 but FP32 shape [1 3] needs 12 bytes"},
		{"binary size negative", []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"parameters":{"binary_data_size":-12}}]}`), -2, 400, "binary_data_size is negative"},
		{"binary past end", append([]byte(`{"inputs":[{"name":"sr","datatype":"INT64","shape":[],"data":[1]},{"name":"x","datatype":"FP32","shape":[1,3],"parameters":{"binary_data_size":12}}]}`), good[:8]...), -2, 400, "past the end of the body"},
		{"binary trailing", append([]byte(`{"inputs":[{"name":"sr","datatype":"INT64","shape":[],"data":[1]},{"name":"x","datatype":"FP32","shape":[1,3],"parameters":{"binary_data_size":12}}]}`), append(good, 0)...), -2, 400, "bytes after the last tensor"},
		{"header past body", []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]},{"name":"sr","datatype":"INT64","shape":[],"data":[1]}]}`), 200, 400, "Inference-Header-Content-Length is 200 but the body ends after 127 bytes"},
		{"header cuts JSON", []byte(`{"inputs":[{"name":"sr","datatype":"INT64","shape":[],"data":[1]}]}`), 20, 400, "ends in the middle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hl := tc.hl
			if hl == -2 { // the JSON header is everything up to its closing brace
				hl = int64(bytes.LastIndexByte(tc.body, '}') + 1)
			}
			_, err := decodeForTest(tc.body, hl, codecInputs, codecOutputs)
			if err == nil {
				t.Fatal("decoded without error")
			}
			ae := toAPIError(err)
			if ae.status != tc.status || !strings.Contains(ae.msg, tc.msg) {
				t.Fatalf("got %d %q, want %d and a message containing %q", ae.status, ae.msg, tc.status, tc.msg)
			}
		})
	}
}

// allDataTypes are one example tensor per datatype, with extreme values.
func allDataTypes() []inference.Tensor {
	le := func(size int, xs ...uint64) []byte {
		b := make([]byte, size*len(xs))
		for i, x := range xs {
			inference.PutUint(b[i*size:], size, x)
		}
		return b
	}
	return []inference.Tensor{
		{Name: "bool", DataType: inference.Bool, Shape: []int64{2, 2}, Data: []byte{1, 0, 0, 1}},
		{Name: "u8", DataType: inference.Uint8, Shape: []int64{3}, Data: []byte{0, 7, 255}},
		{Name: "u16", DataType: inference.Uint16, Shape: []int64{3}, Data: le(2, 0, 7, math.MaxUint16)},
		{Name: "u32", DataType: inference.Uint32, Shape: []int64{3}, Data: le(4, 0, 7, math.MaxUint32)},
		{Name: "u64", DataType: inference.Uint64, Shape: []int64{3}, Data: le(8, 0, 7, math.MaxUint64)},
		{Name: "i8", DataType: inference.Int8, Shape: []int64{3}, Data: le(1, 0x80, 7, 0x7f)},
		{Name: "i16", DataType: inference.Int16, Shape: []int64{3}, Data: le(2, 0x8000, 0xffff, 0x7fff)},
		{Name: "i32", DataType: inference.Int32, Shape: []int64{3}, Data: le(4, 0x80000000, 0xffffffff, 0x7fffffff)},
		{Name: "i64", DataType: inference.Int64, Shape: []int64{3}, Data: le(8, 1<<63, math.MaxUint64, 1<<63-1)},
		{Name: "fp16", DataType: inference.FP16, Shape: []int64{5}, Data: le(2, 0x3c00, 0x7bff, 0x0001, 0x8000, 0xc4d2)},
		{Name: "bf16", DataType: inference.BF16, Shape: []int64{4}, Data: le(2, 0x3f80, 0x7f7f, 0x0001, 0xc2f7)},
		{Name: "fp32", DataType: inference.FP32, Shape: []int64{1, 4}, Data: kservetest.F32LE(math.MaxFloat32, math.SmallestNonzeroFloat32, -0.1, 1e-7)},
		{Name: "fp64", DataType: inference.FP64, Shape: []int64{3}, Data: le(8, math.Float64bits(math.MaxFloat64), math.Float64bits(5e-324), math.Float64bits(-0.1))},
		{Name: "bytes", DataType: inference.Bytes, Shape: []int64{3}, Strings: [][]byte{[]byte("héllo \"q\"\n"), {}, []byte("x")}},
		{Name: "scalar", DataType: inference.FP32, Shape: []int64{}, Data: kservetest.F32LE(3.25)},
		{Name: "empty", DataType: inference.Int32, Shape: []int64{0, 2}, Data: []byte{}},
	}
}

func infosOf(ts []inference.Tensor) []inference.TensorInfo {
	infos := make([]inference.TensorInfo, len(ts))
	for i, t := range ts {
		infos[i] = inference.TensorInfo{Name: t.Name, DataType: t.DataType, Shape: t.Shape}
	}
	return infos
}

// Every datatype survives the response encoder and the request decoder,
// as JSON and as binary.
func TestCodecRoundTripEveryDataType(t *testing.T) {
	ts := allDataTypes()
	infos := infosOf(ts)
	for _, bin := range []bool{false, true} {
		t.Run(fmt.Sprintf("binary=%v", bin), func(t *testing.T) {
			flags := make([]bool, len(ts))
			for i := range flags {
				flags[i] = bin
			}
			// A response's "outputs" has the shape of a request's "inputs".
			hdr, err := appendResponseHeader(nil, "m", "1", nil, ts, flags, nil)
			if err != nil {
				t.Fatal(err)
			}
			body := bytes.Replace(hdr, []byte(`"outputs"`), []byte(`"inputs"`), 1)
			hl := int64(-1)
			if bin {
				hl = int64(len(body))
				var sections bytes.Buffer
				if err := writeBinarySections(&sections, ts, flags); err != nil {
					t.Fatal(err)
				}
				body = append(body, sections.Bytes()...)
			}
			req, err := decodeForTest(body, hl, infos, nil)
			if err != nil {
				t.Fatalf("%v\n%s", err, body)
			}
			for i, want := range ts {
				got := req.inputs[i].tensor
				if got.Name != want.Name || got.DataType != want.DataType || fmt.Sprint(got.Shape) != fmt.Sprint(want.Shape) {
					t.Errorf("%s: got %s %s %v", want.Name, got.Name, got.DataType, got.Shape)
				}
				if want.DataType == inference.Bytes {
					if fmt.Sprintf("%q", got.Strings) != fmt.Sprintf("%q", want.Strings) {
						t.Errorf("%s: got %q, want %q", want.Name, got.Strings, want.Strings)
					}
				} else if !bytes.Equal(got.Data, want.Data) {
					t.Errorf("%s: got %v, want %v", want.Name, got.Data, want.Data)
				}
			}
		})
	}
}

func TestEncodeRejectsWhatJSONCannotCarry(t *testing.T) {
	for _, tc := range []struct {
		t   inference.Tensor
		msg string
	}{
		{inference.Tensor{Name: "n", DataType: inference.FP32, Shape: []int64{2}, Data: kservetest.F32LE(1, float32(math.NaN()))}, "element 1 is not finite"},
		{inference.Tensor{Name: "i", DataType: inference.FP16, Shape: []int64{1}, Data: []byte{0, 0x7c}}, "element 0 is not finite"},
		{inference.Tensor{Name: "s", DataType: inference.Bytes, Shape: []int64{1}, Strings: [][]byte{{0xff}}}, "not valid UTF-8"},
		{inference.Tensor{Name: "r", DataType: inference.FP32, Shape: []int64{1}, Data: []byte{1, 2, 3}}, "not a whole number"},
	} {
		_, err := appendResponseHeader(nil, "m", "", nil, []inference.Tensor{tc.t}, []bool{false}, nil)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: err = %v, want %q", tc.t.Name, err, tc.msg)
		}
	}
}

func TestSplitBytesElementsRejectsBadSections(t *testing.T) {
	for _, tc := range []struct {
		buf []byte
		n   int64
		msg string
	}{
		{[]byte{1, 0, 0}, 1, "cannot hold"},
		{[]byte{5, 0, 0, 0, 'a'}, 1, "past the end"},
		{[]byte{1, 0, 0, 0, 'a', 'b'}, 1, "1 bytes left"},
		{[]byte{0, 0, 0, 0, 1, 0}, 2, "cannot hold"},
		{[]byte{0xff, 0xff, 0xff, 0xff}, 1, "past the end"},
	} {
		if _, err := SplitBytesElements(tc.buf, tc.n); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%v: err = %v, want %q", tc.buf, err, tc.msg)
		}
	}
}

// checkFuzzError asserts the decoder's error contract: a client error (4xx
// or 501) with a message, or, for a decodable body, well-formed tensors.
func checkFuzzResult(t *testing.T, req *inferRequest, err error) {
	if err != nil {
		ae := toAPIError(err)
		if ae.msg == "" || (ae.status != http.StatusBadRequest && ae.status != http.StatusNotImplemented) {
			t.Fatalf("error maps to %d %q (%v)", ae.status, ae.msg, err)
		}
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			t.Fatalf("unexpected MaxBytesError")
		}
		return
	}
	for _, in := range req.inputs {
		n, cerr := inference.ElementCount(in.tensor.Shape)
		if cerr != nil {
			t.Fatalf("input %q decoded with bad shape %v", in.tensor.Name, in.tensor.Shape)
		}
		if in.tensor.DataType == inference.Bytes {
			if int64(len(in.tensor.Strings)) != n {
				t.Fatalf("input %q: %d strings for shape %v", in.tensor.Name, len(in.tensor.Strings), in.tensor.Shape)
			}
		} else if int64(len(in.tensor.Data)) != n*int64(in.tensor.DataType.Size()) {
			t.Fatalf("input %q: %d bytes for %s %v", in.tensor.Name, len(in.tensor.Data), in.tensor.DataType, in.tensor.Shape)
		}
	}
}

var fuzzInputs = []inference.TensorInfo{
	{Name: "x", DataType: inference.FP32, Shape: []int64{-1, 3}},
	{Name: "s", DataType: inference.Bytes, Shape: []int64{-1}},
	{Name: "h", DataType: inference.FP16, Shape: []int64{-1}},
	{Name: "b", DataType: inference.Bool, Shape: []int64{-1}},
}

func FuzzDecodeJSONRequest(f *testing.F) {
	f.Add([]byte(`{"id":"1","inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]},{"name":"s","datatype":"BYTES","shape":[2],"data":["a","\u00e9"]},{"name":"h","datatype":"FP16","shape":[1],"data":[0.5]},{"name":"b","datatype":"BOOL","shape":[2],"data":[true,false]}],"outputs":[{"name":"y","parameters":{"binary_data":true}}]}`))
	f.Add([]byte(`{"inputs":[{"data":[[1,2,3]],"shape":[1,3],"name":"x","datatype":"FP32"}]}`))
	f.Add([]byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[0,3],"data":[]}]} `))
	f.Add([]byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"parameters":{"shared_memory_region":"r","shared_memory_offset":4,"shared_memory_byte_size":12}}],"outputs":[{"name":"y","parameters":{"shared_memory_offset":-1}}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeForTest(body, -1, fuzzInputs, codecOutputs)
		checkFuzzResult(t, req, err)
	})
}

func FuzzDecodeBinaryRequest(f *testing.F) {
	f.Add([]byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"parameters":{"binary_data_size":12}},{"name":"s","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":5}},{"name":"h","datatype":"FP16","shape":[1],"data":[1]},{"name":"b","datatype":"BOOL","shape":[1],"parameters":{"binary_data_size":1}}]}`),
		append(append(kservetest.F32LE(1, 2, 3), 1, 0, 0, 0, 'z'), 1))
	f.Add([]byte(`{"inputs":[{"name":"s","datatype":"BYTES","shape":[2],"parameters":{"binary_data_size":8}}]}`), []byte{0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, header, tail []byte) {
		body := append(append([]byte(nil), header...), tail...)
		req, err := decodeForTest(body, int64(len(header)), fuzzInputs, codecOutputs)
		checkFuzzResult(t, req, err)
	})
}
