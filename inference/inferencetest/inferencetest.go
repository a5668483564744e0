// Package inferencetest is test support for code that runs models: where the
// ONNX Runtime library and the sample models are, one shared Environment per
// test process, and RawSession, a plain onnxruntime_go run that is the
// reference ("the same numbers as calling onnxruntime_go directly") and the
// baseline of benchmarks for packages that may not import onnxruntime_go.
//
// Tests that use it need the library and models that `make setup` fetches;
// without them they fail (not skip) with a message that says so.
package inferencetest

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	ort "github.com/yalue/onnxruntime_go"

	"github.com/edgeai/edge-node/inference"
)

// EnvModelsDir overrides where ModelPath looks: <dir>/<name>/1/model.onnx.
const EnvModelsDir = "EDGE_MODELS_DIR"

// RepoRoot walks up from the working directory to the folder holding go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("getwd: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// AliasBomb is a "billion laughs" YAML document (testdata/alias_bomb.yaml at
// the repository root): each level refers to the one below nine times, so a
// decoder that expanded aliases would build 9^10 nodes. The config decoders'
// tests feed it to prove a quick rejection.
func AliasBomb(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(RepoRoot(t), "testdata", "alias_bomb.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// LibraryPath is the ONNX Runtime library for tests: $ONNXRUNTIME_LIB, else
// <repo>/.cache/libonnxruntime.so.
func LibraryPath(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(inference.EnvLibraryPath); p != "" {
		return p
	}
	p := filepath.Join(RepoRoot(t), ".cache", "libonnxruntime.so")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("ONNX Runtime library not found at %s (%v): run `make setup`, or set %s", p, err, inference.EnvLibraryPath)
	}
	return p
}

// ModelPath is the model.onnx of a sample model (silero_vad, ppocr_det, ...):
// $EDGE_MODELS_DIR/<name>/1/model.onnx, else <repo>/.cache/models/<name>/1/model.onnx.
func ModelPath(t testing.TB, name string) string {
	t.Helper()
	dir := os.Getenv(EnvModelsDir)
	if dir == "" {
		dir = filepath.Join(RepoRoot(t), ".cache", "models")
	}
	p := filepath.Join(dir, name, "1", "model.onnx")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("model %s not found at %s (%v): run `make setup`, or set %s", name, p, err, EnvModelsDir)
	}
	return p
}

// envMu guards env.
var (
	envMu sync.Mutex
	env   *inference.Environment
)

// Env returns the process-wide Environment, creating it on first use (and
// again if a test closed it). It is never closed: the process exit does.
// Its logger writes warnings and errors to stderr; ONNX Runtime's own
// log only fatal messages.
func Env(t testing.TB) *inference.Environment {
	t.Helper()
	envMu.Lock()
	defer envMu.Unlock()
	if env != nil && !env.Closed() {
		return env
	}
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	// ONNX Runtime's own log at fatal: tests provoke run errors on
	// purpose, and each would print a red line to stderr.
	e, err := inference.NewEnvironment(inference.EnvironmentConfig{LibraryPath: LibraryPath(t), LogLevel: "fatal"}, log)
	if err != nil {
		t.Fatalf("onnx runtime environment: %v", err)
	}
	env = e
	return env
}

// RawSession runs a model through onnxruntime_go the plain way: a
// DynamicAdvancedSession with default options, input tensors built over the
// caller's bytes, outputs allocated by ONNX Runtime (and copied to Go
// memory by onnxruntime_go). Run may be called concurrently: it only reads
// r, and ONNX Runtime's Run is thread-safe.
type RawSession struct {
	s       *ort.DynamicAdvancedSession
	inputs  []ort.InputOutputInfo
	outputs []ort.InputOutputInfo
}

// OpenRaw opens path with onnxruntime_go (Env must be live; OpenRaw calls
// it) and closes it at the end of the test. intraOpThreads 0 keeps ONNX
// Runtime's default.
func OpenRaw(t testing.TB, path string, intraOpThreads int) *RawSession {
	t.Helper()
	Env(t)
	ins, outs, err := ort.GetInputOutputInfo(path)
	if err != nil {
		t.Fatalf("raw: read %s: %v", path, err)
	}
	names := func(infos []ort.InputOutputInfo) []string {
		n := make([]string, len(infos))
		for i, x := range infos {
			n[i] = x.Name
		}
		return n
	}
	opts, err := ort.NewSessionOptions()
	if err != nil {
		t.Fatalf("raw: session options: %v", err)
	}
	defer opts.Destroy()
	if intraOpThreads > 0 {
		if err := opts.SetIntraOpNumThreads(intraOpThreads); err != nil {
			t.Fatalf("raw: intra-op threads: %v", err)
		}
	}
	s, err := ort.NewDynamicAdvancedSession(path, names(ins), names(outs), opts)
	if err != nil {
		t.Fatalf("raw: open %s: %v", path, err)
	}
	t.Cleanup(func() { s.Destroy() })
	return &RawSession{s: s, inputs: ins, outputs: outs}
}

// RawRun opens path, runs it once on inputs and returns all outputs in model
// order (see RawSession.Run).
func RawRun(t testing.TB, path string, inputs []inference.Tensor) []inference.Tensor {
	t.Helper()
	out, err := OpenRaw(t, path, 0).Run(inputs)
	if err != nil {
		t.Fatalf("raw run %s: %v", path, err)
	}
	return out
}

// RunOnly is the bare onnxruntime_go cost of a run, the baseline of
// benchmarks: input tensors over the caller's bytes, Run with outputs
// allocated by ONNX Runtime (copied into Go memory by onnxruntime_go), and
// the outputs destroyed without converting them. inputs must be in the
// model's input order.
func (r *RawSession) RunOnly(inputs []inference.Tensor) error {
	in := make([]ort.Value, len(r.inputs))
	defer func() {
		for _, v := range in {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	for i := range r.inputs {
		v, err := rawValue(&inputs[i])
		if err != nil {
			return err
		}
		in[i] = v
	}
	out := make([]ort.Value, len(r.outputs))
	err := r.s.Run(in, out)
	for _, v := range out {
		if v != nil {
			v.Destroy()
		}
	}
	return err
}

// Run runs the model on inputs (matched to the model by name) and returns
// every output in model order with its bytes in fresh Go memory.
//
// Caveat inherited from onnxruntime_go v1.27.0: an ORT-allocated FP16 or
// BF16 output is copied with only FlattenedSize() bytes (half of it), so
// Run returns those truncated; rank-0 outputs fail. The sample models have
// neither.
func (r *RawSession) Run(inputs []inference.Tensor) ([]inference.Tensor, error) {
	in := make([]ort.Value, len(r.inputs))
	defer func() {
		for _, v := range in {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	for i, info := range r.inputs {
		var t *inference.Tensor
		for j := range inputs {
			if inputs[j].Name == info.Name {
				t = &inputs[j]
			}
		}
		if t == nil {
			return nil, fmt.Errorf("input %q missing", info.Name)
		}
		v, err := rawValue(t)
		if err != nil {
			return nil, fmt.Errorf("input %q: %w", t.Name, err)
		}
		in[i] = v
	}
	out := make([]ort.Value, len(r.outputs))
	if err := r.s.Run(in, out); err != nil {
		return nil, err
	}
	res := make([]inference.Tensor, len(out))
	for i, v := range out {
		t, err := rawTensor(r.outputs[i], v)
		v.Destroy()
		if err != nil {
			return nil, fmt.Errorf("output %q: %w", r.outputs[i].Name, err)
		}
		res[i] = t
	}
	return res, nil
}

func rawValue(t *inference.Tensor) (ort.Value, error) {
	if t.DataType == inference.Bytes {
		st, err := ort.NewStringTensor(ort.Shape(t.Shape))
		if err != nil {
			return nil, err
		}
		s := make([]string, len(t.Strings))
		for i, b := range t.Strings {
			s[i] = string(b)
		}
		return st, st.SetContents(s)
	}
	if len(t.Shape) == 0 {
		le := binary.LittleEndian
		d := t.Data
		switch t.DataType {
		case inference.FP32:
			return ort.NewScalar(math.Float32frombits(le.Uint32(d)))
		case inference.FP64:
			return ort.NewScalar(math.Float64frombits(le.Uint64(d)))
		case inference.Int64:
			return ort.NewScalar(int64(le.Uint64(d)))
		case inference.Int32:
			return ort.NewScalar(int32(le.Uint32(d)))
		}
		return nil, fmt.Errorf("raw: rank-0 %v not supported", t.DataType)
	}
	return ort.NewCustomDataTensor(ort.Shape(t.Shape), t.Data, rawType(t.DataType))
}

func rawType(d inference.DataType) ort.TensorElementDataType {
	return map[inference.DataType]ort.TensorElementDataType{
		inference.Bool: ort.TensorElementDataTypeBool, inference.Uint8: ort.TensorElementDataTypeUint8,
		inference.Uint16: ort.TensorElementDataTypeUint16, inference.Uint32: ort.TensorElementDataTypeUint32,
		inference.Uint64: ort.TensorElementDataTypeUint64, inference.Int8: ort.TensorElementDataTypeInt8,
		inference.Int16: ort.TensorElementDataTypeInt16, inference.Int32: ort.TensorElementDataTypeInt32,
		inference.Int64: ort.TensorElementDataTypeInt64, inference.FP16: ort.TensorElementDataTypeFloat16,
		inference.BF16: ort.TensorElementDataTypeBFloat16, inference.FP32: ort.TensorElementDataTypeFloat,
		inference.FP64: ort.TensorElementDataTypeDouble,
	}[d]
}

// rawTensor converts an onnxruntime_go output to a Tensor (little-endian bytes).
func rawTensor(info ort.InputOutputInfo, v ort.Value) (inference.Tensor, error) {
	t := inference.Tensor{Name: info.Name, Shape: []int64(v.GetShape())}
	le := binary.LittleEndian
	var err error
	switch x := v.(type) {
	case *ort.Tensor[float32]:
		t.DataType = inference.FP32
		t.Data, err = binary.Append(nil, le, x.GetData())
	case *ort.Tensor[float64]:
		t.DataType = inference.FP64
		t.Data, err = binary.Append(nil, le, x.GetData())
	case *ort.Tensor[int64]:
		t.DataType = inference.Int64
		t.Data, err = binary.Append(nil, le, x.GetData())
	case *ort.Tensor[int32]:
		t.DataType = inference.Int32
		t.Data, err = binary.Append(nil, le, x.GetData())
	case *ort.Tensor[uint8]:
		t.DataType = inference.Uint8
		t.Data = append([]byte(nil), x.GetData()...)
	case *ort.Tensor[bool]:
		t.DataType = inference.Bool
		t.Data, err = binary.Append(nil, le, x.GetData())
	case *ort.CustomDataTensor: // FP16, BF16
		for d := inference.Bool; d < inference.Bytes; d++ {
			if rawType(d) == info.DataType {
				t.DataType = d
			}
		}
		t.Data = append([]byte(nil), x.GetData()...)
	case *ort.StringTensor:
		t.DataType = inference.Bytes
		s, err2 := x.GetContents()
		for _, e := range s {
			t.Strings = append(t.Strings, []byte(e))
		}
		err = err2
	default:
		return t, fmt.Errorf("raw: output type %T not supported", v)
	}
	return t, err
}

// CloseF32 reports whether a and b hold the same number of little-endian
// float32 values, each pair within 1e-5.
func CloseF32(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i+4 <= len(a); i += 4 {
		x := math.Float32frombits(binary.LittleEndian.Uint32(a[i:]))
		y := math.Float32frombits(binary.LittleEndian.Uint32(b[i:]))
		if math.Abs(float64(x-y)) > 1e-5 {
			return false
		}
	}
	return true
}
