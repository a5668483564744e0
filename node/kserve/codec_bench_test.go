package kserve

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/node/kserve/kservetest"
)

// Codec-only benchmarks (no model): decoding a 1×3×640×640 FP32 request,
// binary and JSON, into buffers from a reusing allocator.
func benchmarkDecode(b *testing.B, binaryBody bool) {
	infos := []inference.TensorInfo{{Name: "x", DataType: inference.FP32, Shape: []int64{-1, 3, -1, -1}}}
	data := make([]float32, 3*640*640)
	for i := range data {
		data[i] = float32(i%255)/127.5 - 1
	}
	var body []byte
	hl := int64(-1)
	if binaryBody {
		hdr := []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3,640,640],"parameters":{"binary_data_size":4915200}}]}`)
		hl = int64(len(hdr))
		body = append(hdr, kservetest.F32LE(data...)...)
	} else {
		d, _ := json.Marshal(data)
		body = append(append([]byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3,640,640],"data":`), d...), "}]}"...)
	}
	_, lease := newTestPool(b)
	rdr := bytes.NewReader(body)
	b.SetBytes(int64(len(body)))
	decode := func() {
		alloc, release := lease()
		rdr.Reset(body)
		rd := requestDecoder{ctx: context.Background(), alloc: alloc, inputs: infos,
			limits: decodeLimits{bodyBytes: int64(len(body)), headerLen: hl}}
		if _, err := rd.decodeRequest(rdr); err != nil {
			b.Fatal(err)
		}
		release()
	}
	decode() // the pool's first buffer is not the decoder's garbage
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		decode()
	}
}

func BenchmarkDecodeBinary(b *testing.B) { benchmarkDecode(b, true) }
func BenchmarkDecodeJSON(b *testing.B)   { benchmarkDecode(b, false) }

// Encoding a 1×1×640×640 FP32 output as JSON into a pooled buffer.
func BenchmarkEncodeJSON(b *testing.B) {
	out := []inference.Tensor{{Name: "y", DataType: inference.FP32, Shape: []int64{1, 1, 640, 640}, Data: kservetest.F32LE(make([]float32, 640*640)...)}}
	for i := 0; i < 640*640; i++ {
		copy(out[0].Data[4*i:], kservetest.F32LE(float32(i)/409600))
	}
	flags := []bool{false}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		buf := getBuffer()
		hdr, err := appendResponseHeader((*buf)[:0], "m", "1", nil, out, flags, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(hdr)))
		*buf = hdr
		putBuffer(buf)
	}
}
