package chunker

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/wire"
)

// onnxBytes builds a small ONNX ModelProto: ir_version, opset, and a graph
// holding one initializer per entry of inits and one Constant node per
// entry of consts, each with that raw_data.
func onnxBytes(inits, consts [][]byte) []byte {
	tensor := func(name string, data []byte) []byte {
		var t []byte
		t = protowire.AppendTag(t, 1, protowire.VarintType) // dims
		t = protowire.AppendVarint(t, uint64(len(data)/4))
		t = protowire.AppendTag(t, 2, protowire.VarintType) // data_type FLOAT
		t = protowire.AppendVarint(t, 1)
		t = protowire.AppendTag(t, 8, protowire.BytesType) // name
		t = protowire.AppendString(t, name)
		t = protowire.AppendTag(t, 9, protowire.BytesType) // raw_data
		return protowire.AppendBytes(t, data)
	}
	var g []byte
	for i, d := range consts {
		var attr []byte
		attr = protowire.AppendTag(attr, 1, protowire.BytesType)
		attr = protowire.AppendString(attr, "value")
		attr = protowire.AppendTag(attr, 5, protowire.BytesType)
		attr = protowire.AppendBytes(attr, tensor("", d))
		attr = protowire.AppendTag(attr, 20, protowire.VarintType) // type TENSOR
		attr = protowire.AppendVarint(attr, 4)
		var node []byte
		node = protowire.AppendTag(node, 2, protowire.BytesType)
		node = protowire.AppendString(node, "c"+string(rune('a'+i%26)))
		node = protowire.AppendTag(node, 4, protowire.BytesType)
		node = protowire.AppendString(node, "Constant")
		node = protowire.AppendTag(node, 5, protowire.BytesType)
		node = protowire.AppendBytes(node, attr)
		g = protowire.AppendTag(g, 1, protowire.BytesType)
		g = protowire.AppendBytes(g, node)
	}
	g = protowire.AppendTag(g, 2, protowire.BytesType) // name
	g = protowire.AppendString(g, "g")
	for i, d := range inits {
		g = protowire.AppendTag(g, 5, protowire.BytesType)
		g = protowire.AppendBytes(g, tensor("w"+string(rune('a'+i%26)), d))
	}
	var m []byte
	m = protowire.AppendTag(m, 1, protowire.VarintType) // ir_version
	m = protowire.AppendVarint(m, 8)
	m = protowire.AppendTag(m, 7, protowire.BytesType) // graph
	m = protowire.AppendBytes(m, g)
	var op []byte
	op = protowire.AppendTag(op, 2, protowire.VarintType)
	op = protowire.AppendVarint(op, 17)
	m = protowire.AppendTag(m, 8, protowire.BytesType) // opset_import
	return protowire.AppendBytes(m, op)
}

// tensorModel is a synthetic model: tensors of various sizes, large and
// tiny, as initializers and as Constant nodes.
func tensorModel(seed uint64) (data []byte, tensors [][]byte) {
	sizes := []int{300 << 10, 8, 576 << 10, 100, 70 << 10, 1 << 20, 12, 200 << 10}
	for i, n := range sizes {
		tensors = append(tensors, pseudoRandom(seed+uint64(i), n))
	}
	return onnxBytes(tensors[:4], tensors[4:]), tensors
}

func TestTensorSpansSynthetic(t *testing.T) {
	data, tensors := tensorModel(100)
	spans, err := tensorSpans(bytes.NewReader(data), int64(len(data)), 1)
	if err != nil {
		t.Fatal(err)
	}
	// Constant nodes come first in the graph, then the initializers.
	want := append(append([][]byte(nil), tensors[4:]...), tensors[:4]...)
	if len(spans) != len(want) {
		t.Fatalf("%d spans, want %d", len(spans), len(want))
	}
	for i, s := range spans {
		if !bytes.Equal(data[s.Start:s.End], want[i]) {
			t.Errorf("span %d [%d,%d) is not tensor %d's data", i, s.Start, s.End, i)
		}
	}
	big, err := tensorSpans(bytes.NewReader(data), int64(len(data)), TensorMinBytes)
	if err != nil || len(big) != 5 {
		t.Fatalf("spans of >= 64 KiB: %d (%v), want 5", len(big), err)
	}
}

// TestTensorSpansBadInput: a file that is not a well-formed ONNX model is
// refused (SplitModel then falls back to Split), saying why.
func TestTensorSpansBadInput(t *testing.T) {
	good, _ := tensorModel(1)
	overlong := protowire.AppendTag(nil, 7, protowire.BytesType)
	overlong = protowire.AppendVarint(overlong, 1<<62)
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "not an ONNX model"},
		{"text", []byte("hello, this is not a model\n"), "wire type"},
		{"zeros", make([]byte, 64), "invalid field number"},
		{"truncated in the middle", good[:len(good)/2], "past the end"},
		{"truncated by one byte", good[:len(good)-1], "past the end"},
		{"claims 2^62 bytes", overlong, "past the end"},
		{"varint overflow", append(protowire.AppendTag(nil, 1, protowire.VarintType), bytes.Repeat([]byte{0xff}, 11)...), "overflows"},
		{"key cut", []byte{0x80}, "truncated"},
		{"graph as a varint", append(protowire.AppendTag(nil, 7, protowire.VarintType), 1), "not length-delimited"},
		{"group", protowire.AppendTag(nil, 3, protowire.StartGroupType), "not used by ONNX"},
		{"no graph", protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 8), "no graph"},
		{"nested too deep", deepGraph(40), "nested deeper"},
	} {
		_, err := tensorSpans(bytes.NewReader(tc.data), int64(len(tc.data)), 1)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
		_, chunks, err := SplitModel(bytes.NewReader(tc.data), int64(len(tc.data)), nil)
		_, _, plain, perr := Split(bytes.NewReader(tc.data), nil)
		if err != nil || perr != nil || !slices.Equal(chunks, plain) {
			t.Errorf("%s: SplitModel does not fall back to Split (%v, %v)", tc.name, err, perr)
		}
	}
}

// deepGraph nests graphs in attributes of nodes n levels deep.
func deepGraph(n int) []byte {
	var g []byte
	for i := 0; i < n; i++ {
		var attr []byte
		attr = protowire.AppendTag(attr, 6, protowire.BytesType)
		attr = protowire.AppendBytes(attr, g)
		var node []byte
		node = protowire.AppendTag(node, 5, protowire.BytesType)
		node = protowire.AppendBytes(node, attr)
		g = protowire.AppendTag(nil, 1, protowire.BytesType)
		g = protowire.AppendBytes(g, node)
	}
	m := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 8)
	m = protowire.AppendTag(m, 7, protowire.BytesType)
	return protowire.AppendBytes(m, g)
}

func FuzzTensorSpans(f *testing.F) {
	good := onnxBytes([][]byte{pseudoRandom(1, 100)}, [][]byte{pseudoRandom(2, 50)})
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(deepGraph(3))
	f.Add([]byte{0x08, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		spans, err := tensorSpans(bytes.NewReader(data), int64(len(data)), 1)
		if err != nil {
			return
		}
		last := int64(0)
		for _, s := range spans {
			if s.Start < last || s.End <= s.Start || s.End > int64(len(data)) {
				t.Fatalf("span [%d,%d) out of order or outside the %d-byte file", s.Start, s.End, len(data))
			}
			last = s.End
		}
		sha, chunks, err := SplitModel(bytes.NewReader(data), int64(len(data)), nil)
		if err != nil {
			t.Fatal(err)
		}
		checkCover(t, data, sha, chunks)
	})
}

// checkCover fails unless chunks cut data exactly, each within the
// protocol's limits.
func checkCover(t *testing.T, data []byte, sha string, chunks []models.ChunkRef) {
	t.Helper()
	off := int64(0)
	for i, c := range chunks {
		if c.Size < 1 || c.Size > MaxSize || off+c.Size > int64(len(data)) {
			t.Fatalf("chunk %d: size %d at %d of %d", i, c.Size, off, len(data))
		}
		s := sha256.Sum256(data[off : off+c.Size])
		if hex.EncodeToString(s[:]) != c.SHA256 {
			t.Fatalf("chunk %d at %d: sha256 does not match", i, off)
		}
		off += c.Size
	}
	whole := sha256.Sum256(data)
	if off != int64(len(data)) || sha != hex.EncodeToString(whole[:]) {
		t.Fatalf("chunks cover %d of %d bytes, sha %s", off, len(data), sha)
	}
}

// TestSplitModelIsolatesTensors: chunks cover the file, are the same every
// time, never straddle the edge of a tensor of >= 64 KiB, and changing
// one such tensor changes only chunks inside it (plus the few header bytes
// before it), while Split moves more.
func TestSplitModelIsolatesTensors(t *testing.T) {
	data, tensors := tensorModel(200)
	var got bytes.Buffer
	var next int64
	sha, chunks, err := SplitModel(bytes.NewReader(data), int64(len(data)), func(c models.ChunkRef, off int64, b []byte) error {
		if off != next || int64(len(b)) != c.Size {
			t.Fatalf("chunk at %d (%d bytes), want at %d", off, len(b), next)
		}
		next += c.Size
		got.Write(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	checkCover(t, data, sha, chunks)
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatal("fn did not see the file")
	}
	var sizes []int64
	for _, c := range chunks {
		sizes = append(sizes, c.Size)
	}
	if !slices.Equal(sizes, goldenModelSizes) {
		t.Errorf("sizes = %#v, want goldenModelSizes %v", sizes, goldenModelSizes)
	}
	_, again, err := SplitModel(bytes.NewReader(data), int64(len(data)), nil)
	if err != nil || !slices.Equal(chunks, again) {
		t.Fatalf("not deterministic: %v", err)
	}
	// Over the chunk budget, a model is cut by Split.
	_, _, plainChunks, err := Split(bytes.NewReader(data), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, over, err := splitModel(bytes.NewReader(data), int64(len(data)), nil, len(chunks)-1)
	if err != nil || !slices.Equal(over, plainChunks) || slices.Equal(over, chunks) {
		t.Fatalf("over the chunk budget: %d chunks (%v), want Split's %d", len(over), err, len(plainChunks))
	}
	spans, err := tensorSpans(bytes.NewReader(data), int64(len(data)), TensorMinBytes)
	if err != nil {
		t.Fatal(err)
	}
	cuts := map[int64]bool{}
	off := int64(0)
	for _, c := range chunks {
		off += c.Size
		cuts[off] = true
	}
	for _, s := range spans {
		if int64(len(data))-s.End >= 16<<10 && !cuts[s.End] { // a shorter tail joins the last tensor's piece
			t.Errorf("no cut at the end of the tensor [%d,%d)", s.Start, s.End)
		}
	}
	// Change the 576 KiB tensor (the third initializer), keeping its size.
	changed := bytes.Clone(tensors[2])
	for i := range changed {
		changed[i] ^= 0x5a
	}
	v2tensors := append([][]byte(nil), tensors...)
	v2tensors[2] = changed
	v2 := onnxBytes(v2tensors[:4], v2tensors[4:])
	moved := func(split func([]byte) []models.ChunkRef) int64 {
		have := map[string]bool{}
		for _, c := range split(data) {
			have[c.SHA256] = true
		}
		var n int64
		for _, c := range split(v2) {
			if !have[c.SHA256] {
				n += c.Size
			}
		}
		return n
	}
	aligned := moved(func(b []byte) []models.ChunkRef {
		_, cs, err := SplitModel(bytes.NewReader(b), int64(len(b)), nil)
		if err != nil {
			t.Fatal(err)
		}
		return cs
	})
	plain := moved(func(b []byte) []models.ChunkRef {
		_, _, cs, err := Split(bytes.NewReader(b), nil)
		if err != nil {
			t.Fatal(err)
		}
		return cs
	})
	t.Logf("one %d-byte tensor changed: SplitModel moves %d bytes (%.3f×), Split %d (%.3f×); %d chunks vs %d",
		len(changed), aligned, float64(aligned)/float64(len(changed)), plain, float64(plain)/float64(len(changed)), len(chunks), len(again))
	if aligned < int64(len(changed)) || aligned > int64(len(changed))+16<<10 {
		t.Errorf("SplitModel moves %d bytes for a %d-byte tensor", aligned, len(changed))
	}
}

// modelFile is the sample model name's model.onnx: $EDGE_MODELS_DIR (the
// test fails if it is set and the file is missing), else the repository's
// .cache/models (skipped when missing: `make setup` fetches it).
func modelFile(t *testing.T, name string) []byte {
	t.Helper()
	dir := os.Getenv("EDGE_MODELS_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", ".cache", "models")
	}
	b, err := os.ReadFile(filepath.Join(dir, name, "1", "model.onnx"))
	if err != nil {
		if os.Getenv("EDGE_MODELS_DIR") == "" {
			t.Skipf("sample model %s not found (run `make setup` or set EDGE_MODELS_DIR): %v", name, err)
		}
		t.Fatal(err)
	}
	return b
}

// TestTensorSpansRealModels: the spans found in the sample models match
// what python3-onnx 1.12 reads in them (onnx.load; the graph's
// initializers and the tensor attributes of its nodes, subgraphs included):
// tensors with data, and those of >= 64 KiB of raw_data. ppocr_det keeps
// its 342 weight tensors as Constant nodes, 336 of them with data.
func TestTensorSpansRealModels(t *testing.T) {
	for _, tc := range []struct {
		name       string
		withData   int
		big        int
		chunks     int // SplitModel's chunk count: pins its cut points on real models
		splitCount int // Split's
	}{
		{"ppocr_det", 336, 18, 79, 16},
		{"ppocr_rec", 325, 22, 161, 35},
		{"ppocr_cls", 250, 0, 3, 3}, // no tensor of 64 KiB: Split's chunks
		{"silero_vad", 263, 18, 34, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := modelFile(t, tc.name)
			all, err := tensorSpans(bytes.NewReader(data), int64(len(data)), 1)
			if err != nil {
				t.Fatal(err)
			}
			big, err := tensorSpans(bytes.NewReader(data), int64(len(data)), TensorMinBytes)
			if err != nil {
				t.Fatal(err)
			}
			info, err := ReadONNX(bytes.NewReader(data), int64(len(data)))
			if err != nil || !info.HasIRVersion || info.GraphBytes == 0 || info.Opsets == 0 {
				t.Errorf("ReadONNX: %+v, %v", info, err)
			}
			if len(all) != tc.withData || len(big) != tc.big {
				t.Errorf("%d tensors with data, %d of >= 64 KiB; want %d, %d", len(all), len(big), tc.withData, tc.big)
			}
			sha, chunks, err := SplitModel(bytes.NewReader(data), int64(len(data)), nil)
			if err != nil {
				t.Fatal(err)
			}
			checkCover(t, data, sha, chunks)
			_, _, plain, err := Split(bytes.NewReader(data), nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %d bytes, %d tensor data fields (%d of >= 64 KiB); SplitModel %d chunks, Split %d",
				tc.name, len(data), len(all), len(big), len(chunks), len(plain))
			// The manifest lists each chunk (64 hex digits and a size); the
			// signed manifest carries it base64-encoded in one message.
			list, err := json.Marshal(chunks)
			if err != nil {
				t.Fatal(err)
			}
			if n := len(list) * 4 / 3; n > wire.MaxMessageBytes/8 {
				t.Errorf("the chunk list takes %d bytes of the signed manifest, want at most 1/8 of %d", n, wire.MaxMessageBytes)
			}
			t.Logf("%s: chunk list %d bytes of JSON (about %d base64 in the signed manifest, of %d)", tc.name, len(list), len(list)*4/3, wire.MaxMessageBytes)
			if len(chunks) != tc.chunks || len(plain) != tc.splitCount || (tc.big == 0 && !slices.Equal(chunks, plain)) {
				t.Errorf("SplitModel %d chunks, Split %d; want %d, %d", len(chunks), len(plain), tc.chunks, tc.splitCount)
			}
		})
	}
}

// TestTensorSpansMemory: walking a real model allocates its one buffer
// and the spans, not the file; a file claiming a huge field allocates
// nothing more.
func TestTensorSpansMemory(t *testing.T) {
	data := modelFile(t, "ppocr_rec")
	overlong := append(protowire.AppendTag(nil, 7, protowire.BytesType), protowire.AppendVarint(nil, 1<<40)...)
	for name, b := range map[string][]byte{"ppocr_rec": data, "claims 1 TiB": overlong} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, _ = tensorSpans(bytes.NewReader(b), int64(len(b)), 1)
		runtime.ReadMemStats(&after)
		alloc := after.TotalAlloc - before.TotalAlloc
		t.Logf("%s (%d bytes): %d bytes allocated", name, len(b), alloc)
		if alloc > 128<<10 {
			t.Errorf("%s: %d bytes allocated, want at most 128 KiB", name, alloc)
		}
	}
}

// TestMeasureSplitModel times Split and SplitModel on ppocr_det in 7
// interleaved rounds (EDGEAI_MEASURE=1).
func TestMeasureSplitModel(t *testing.T) {
	if os.Getenv("EDGEAI_MEASURE") == "" {
		t.Skip("set EDGEAI_MEASURE=1 to measure")
	}
	data := modelFile(t, "ppocr_det")
	var plain, aligned []time.Duration
	for i := 0; i < 7; i++ {
		start := time.Now()
		if _, _, _, err := Split(bytes.NewReader(data), nil); err != nil {
			t.Fatal(err)
		}
		plain = append(plain, time.Since(start))
		start = time.Now()
		if _, _, err := SplitModel(bytes.NewReader(data), int64(len(data)), nil); err != nil {
			t.Fatal(err)
		}
		aligned = append(aligned, time.Since(start))
	}
	slices.Sort(plain)
	slices.Sort(aligned)
	t.Logf("FIGURE ppocr_det (%d bytes), 7 interleaved rounds: Split median %v %v; SplitModel median %v %v", len(data), plain[3], plain, aligned[3], aligned)
}
