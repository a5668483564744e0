// Package kservetest is a test client for the KServe v2 REST API: request
// bodies built with encoding/json (independent of node/kserve's own codec),
// a response parser that understands Triton's binary tensor data extension,
// and the sample inputs of the models the tests serve (silero_vad,
// ppocr_det). It is imported only by tests, of node/kserve and of the
// daemon, and must not import node/kserve (whose own tests use it).
package kservetest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/edgeai/edge-node/inference"
)

// HeaderContentLength is the binary extension's header: the length of the
// JSON part of a request or response body.
const HeaderContentLength = "Inference-Header-Content-Length"

// SileroInputs is one 512-sample silero_vad frame with zero state.
func SileroInputs() []inference.Tensor {
	samples := make([]float32, 512)
	for i := range samples {
		samples[i] = float32(math.Sin(float64(i)/7)) * 0.3
	}
	zero := make([]float32, 2*1*64)
	return []inference.Tensor{
		{Name: "input", DataType: inference.FP32, Shape: []int64{1, 512}, Data: F32LE(samples...)},
		{Name: "sr", DataType: inference.Int64, Shape: []int64{}, Data: I64LE(16000)},
		{Name: "h", DataType: inference.FP32, Shape: []int64{2, 1, 64}, Data: F32LE(zero...)},
		{Name: "c", DataType: inference.FP32, Shape: []int64{2, 1, 64}, Data: F32LE(zero...)},
	}
}

// DetInput is a 1×3×size×size ppocr_det image with a few bright rectangles.
func DetInput(size int) []inference.Tensor {
	img := make([]float32, 3*size*size)
	for c := 0; c < 3; c++ {
		for y := 0; y < size; y++ {
			for x := 0; x < size; x++ {
				v := float32(-0.5)
				if (y/8)%3 == 1 && x > size/8 && x < size*7/8 {
					v = 0.9
				}
				img[(c*size+y)*size+x] = v
			}
		}
	}
	return []inference.Tensor{{Name: "x", DataType: inference.FP32, Shape: []int64{1, 3, int64(size), int64(size)}, Data: F32LE(img...)}}
}

// F32LE encodes fs little-endian.
func F32LE(fs ...float32) []byte {
	b := make([]byte, 4*len(fs))
	for i, f := range fs {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return b
}

// I64LE encodes xs little-endian.
func I64LE(xs ...int64) []byte {
	b := make([]byte, 8*len(xs))
	for i, x := range xs {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(x))
	}
	return b
}

// F32s decodes little-endian FP32 elements.
func F32s(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

// JSONRequest builds a JSON body with encoding/json. Only FP32 and INT64
// inputs, which is what the sample models take; outputs names requested
// outputs (nil: all), binaryOut asks for binary outputs.
func JSONRequest(t testing.TB, id string, ins []inference.Tensor, outputs []string, binaryOut bool) []byte {
	t.Helper()
	type input struct {
		Name     string  `json:"name"`
		Shape    []int64 `json:"shape"`
		DataType string  `json:"datatype"`
		Data     any     `json:"data"`
	}
	req := map[string]any{"id": id}
	var inputs []input
	for _, in := range ins {
		var data any
		switch in.DataType {
		case inference.FP32:
			data = F32s(in.Data)
		case inference.Int64:
			xs := make([]int64, len(in.Data)/8)
			for i := range xs {
				xs[i] = int64(binary.LittleEndian.Uint64(in.Data[8*i:]))
			}
			data = xs
		default:
			t.Fatalf("JSONRequest: %s not supported", in.DataType)
		}
		inputs = append(inputs, input{Name: in.Name, Shape: in.Shape, DataType: in.DataType.String(), Data: data})
	}
	req["inputs"] = inputs
	if outputs != nil {
		var outs []map[string]any
		for _, o := range outputs {
			outs = append(outs, map[string]any{"name": o})
		}
		req["outputs"] = outs
	}
	if binaryOut {
		req["parameters"] = map[string]any{"binary_data_output": true}
	}
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// BinaryRequest builds a binary-extension body: every input as a binary
// section. It returns the body and the header length (the value of
// HeaderContentLength).
func BinaryRequest(t testing.TB, id string, ins []inference.Tensor, binaryOut bool) ([]byte, int) {
	t.Helper()
	type input struct {
		Name       string         `json:"name"`
		Shape      []int64        `json:"shape"`
		DataType   string         `json:"datatype"`
		Parameters map[string]any `json:"parameters"`
	}
	var inputs []input
	var tail []byte
	for _, in := range ins {
		inputs = append(inputs, input{Name: in.Name, Shape: in.Shape, DataType: in.DataType.String(),
			Parameters: map[string]any{"binary_data_size": len(in.Data)}})
		tail = append(tail, in.Data...)
	}
	req := map[string]any{"id": id, "inputs": inputs}
	if binaryOut {
		req["parameters"] = map[string]any{"binary_data_output": true}
	}
	hdr, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return append(hdr, tail...), len(hdr)
}

// Output is one output of a Response.
type Output struct {
	Name       string          `json:"name"`
	DataType   string          `json:"datatype"`
	Shape      []int64         `json:"shape"`
	Data       json.RawMessage `json:"data"`
	Parameters struct {
		BinaryDataSize *int64 `json:"binary_data_size"`
	} `json:"parameters"`
	// Raw is the binary section, or the JSON data re-encoded little-endian
	// (FP32 only).
	Raw []byte `json:"-"`
}

// Response is an inference response.
type Response struct {
	ModelName    string   `json:"model_name"`
	ModelVersion string   `json:"model_version"`
	ID           string   `json:"id"`
	Outputs      []Output `json:"outputs"`
}

// ParseResponse splits a response into its JSON header and binary sections
// and fills each output's Raw bytes. It fails the test on anything
// malformed: a bad header length, a binary response that is not
// application/octet-stream, sections past the body or bytes after the last.
func ParseResponse(t testing.TB, header http.Header, body []byte) Response {
	t.Helper()
	hdr := body
	var tail []byte
	if hl := header.Get(HeaderContentLength); hl != "" {
		n, err := strconv.Atoi(hl)
		if err != nil || n > len(body) {
			t.Fatalf("bad %s %q for a %d-byte body", HeaderContentLength, hl, len(body))
		}
		if ct := header.Get("Content-Type"); ct != "application/octet-stream" {
			t.Errorf("binary response has Content-Type %q", ct)
		}
		hdr, tail = body[:n], body[n:]
	}
	var resp Response
	if err := json.Unmarshal(hdr, &resp); err != nil {
		t.Fatalf("response header: %v\n%.300s", err, hdr)
	}
	for i := range resp.Outputs {
		o := &resp.Outputs[i]
		if o.Parameters.BinaryDataSize != nil {
			n := int(*o.Parameters.BinaryDataSize)
			if n > len(tail) {
				t.Fatalf("output %s: binary_data_size %d past the body", o.Name, n)
			}
			o.Raw, tail = tail[:n], tail[n:]
			continue
		}
		if o.DataType != "FP32" {
			t.Fatalf("output %s: ParseResponse handles FP32 JSON only, got %s", o.Name, o.DataType)
		}
		var fs []float32
		if err := json.Unmarshal(o.Data, &fs); err != nil {
			t.Fatalf("output %s data: %v", o.Name, err)
		}
		o.Raw = F32LE(fs...)
	}
	if len(tail) != 0 {
		t.Fatalf("%d bytes after the last binary output", len(tail))
	}
	return resp
}

// BytesInput is a BYTES input whose Data is the binary extension's
// encoding (each element a 4-byte little-endian length, then its bytes),
// ready for BinaryRequest.
func BytesInput(name string, elems ...[]byte) inference.Tensor {
	var data []byte
	for _, e := range elems {
		data = binary.LittleEndian.AppendUint32(data, uint32(len(e)))
		data = append(data, e...)
	}
	return inference.Tensor{Name: name, DataType: inference.Bytes, Shape: []int64{int64(len(elems))}, Data: data}
}

// SplitBytes splits a binary BYTES output (Output.Raw) into its elements.
func SplitBytes(t testing.TB, raw []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(raw) > 0 {
		if len(raw) < 4 {
			t.Fatalf("BYTES output: %d bytes left, not a length", len(raw))
		}
		n := int(binary.LittleEndian.Uint32(raw))
		if 4+n > len(raw) {
			t.Fatalf("BYTES output: element of %d bytes past the end", n)
		}
		out, raw = append(out, raw[4:4+n]), raw[4+n:]
	}
	return out
}

// RawExchange writes a whole HTTP request (headers and body) on a fresh
// connection before reading anything back, as Triton's clients do, and
// returns the response and its body. A write error (EPIPE, reset) fails the
// test: it means the server closed without reading the body.
func RawExchange(t testing.TB, addr, path string, header http.Header, body []byte) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	var hdr bytes.Buffer
	fmt.Fprintf(&hdr, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", path, addr, len(body))
	for k, vs := range header {
		for _, v := range vs {
			fmt.Fprintf(&hdr, "%s: %s\r\n", k, v)
		}
	}
	hdr.WriteString("\r\n")
	if _, err := conn.Write(append(hdr.Bytes(), body...)); err != nil {
		t.Fatalf("writing the whole %d-byte request: %v", len(body), err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the response body: %v", err)
	}
	return resp, b
}
