package kserve

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
	"github.com/edgeai/edge-node/node/kserve/kservetest"
)

func compress(t testing.TB, enc string, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	switch enc {
	case "gzip", "x-gzip":
		w = gzip.NewWriter(&buf)
	case "deflate":
		w = zlib.NewWriter(&buf)
	default:
		t.Fatalf("no encoder for %q", enc)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func decompress(t testing.TB, enc string, b []byte) []byte {
	t.Helper()
	var r io.Reader
	var err error
	switch enc {
	case "gzip":
		r, err = gzip.NewReader(bytes.NewReader(b))
	case "deflate":
		r, err = zlib.NewReader(bytes.NewReader(b))
	default:
		return b
	}
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Compressed requests (gzip, deflate) and compressed responses
// (Accept-Encoding) give the same outputs as a raw onnxruntime_go run, for
// JSON and binary bodies.
func TestCompressedInferMatchesRawOnnxRuntime(t *testing.T) {
	h, _ := newTestHandler(t, newTestBackend(t), nil)
	for _, model := range []struct {
		name   string
		inputs []inference.Tensor
	}{{"silero_vad", kservetest.SileroInputs()}, {"ppocr_det", kservetest.DetInput(96)}} {
		want := inferencetest.RawRun(t, inferencetest.ModelPath(t, model.name), model.inputs)
		for _, tc := range []struct {
			reqEnc, accept, respEnc string
			binary                  bool
		}{
			{"gzip", "", "", true}, {"deflate", "", "", true}, {"x-gzip", "", "", false}, {"gzip", "", "", false},
			{"", "gzip", "gzip", true}, {"", "deflate", "deflate", true}, {"deflate", "gzip;q=0.5, deflate", "deflate", false},
			{"gzip", "br, gzip;q=0.1", "gzip", true}, {"", "gzip;q=0", "", true}, {"", "*", "", true}, {"identity", "identity", "", true},
		} {
			name := fmt.Sprintf("%s/req=%s,accept=%q,binary=%v", model.name, tc.reqEnc, tc.accept, tc.binary)
			t.Run(name, func(t *testing.T) {
				header := http.Header{}
				var body []byte
				if tc.binary {
					var n int
					body, n = kservetest.BinaryRequest(t, "z", model.inputs, true)
					header.Set(headerContentLength, strconv.Itoa(n))
				} else {
					body = kservetest.JSONRequest(t, "z", model.inputs, nil, true)
				}
				if tc.reqEnc != "" && tc.reqEnc != "identity" {
					body = compress(t, tc.reqEnc, body)
				}
				if tc.reqEnc != "" {
					header.Set("Content-Encoding", tc.reqEnc)
				}
				if tc.accept != "" {
					header.Set("Accept-Encoding", tc.accept)
				}
				w := do(h, "POST", "/v2/models/"+model.name+"/infer", header, body)
				if w.Code != 200 {
					t.Fatalf("status %d: %s", w.Code, w.Body)
				}
				if got := w.Header().Get("Content-Encoding"); got != tc.respEnc {
					t.Fatalf("response Content-Encoding %q, want %q", got, tc.respEnc)
				}
				if tc.respEnc != "" && (w.Header().Get("Content-Length") != "" || !strings.Contains(w.Header().Get("Vary"), "Accept-Encoding")) {
					t.Errorf("compressed response headers %v", w.Header())
				}
				resp := kservetest.ParseResponse(t, w.Header(), decompress(t, tc.respEnc, w.Body.Bytes()))
				if len(resp.Outputs) != len(want) {
					t.Fatalf("%d outputs, want %d", len(resp.Outputs), len(want))
				}
				for i, o := range resp.Outputs {
					if o.Name != want[i].Name || !bytes.Equal(o.Raw, want[i].Data) {
						t.Errorf("output %s differs from the raw onnxruntime_go run", o.Name)
					}
				}
			})
		}
	}
}

// Bad encodings and compressed bodies: 415 for an unsupported coding, 400
// for corrupt data, 413 for a body whose decompressed size passes the
// limit (a decompression bomb: 1000:1 and more), each with a message.
func TestCompressedInferRejects(t *testing.T) {
	h, _ := newTestHandler(t, newTestBackend(t), func(o *Options) { o.MaxBodyBytes = 1 << 20 })
	good := kservetest.JSONRequest(t, "", kservetest.SileroInputs(), nil, false)
	gz := compress(t, "gzip", good)
	bomb := bytes.Repeat([]byte(" "), 64<<20) // 64 MiB of JSON whitespace: valid JSON prefix, 64× the limit
	bombGz, bombZ := compress(t, "gzip", bomb), compress(t, "deflate", bomb)
	t.Logf("bombs: 64 MiB → gzip %d bytes, zlib %d bytes", len(bombGz), len(bombZ))
	binBody, hl := kservetest.BinaryRequest(t, "", kservetest.SileroInputs(), false)
	for _, tc := range []struct {
		name, enc string
		header    http.Header
		body      []byte
		status    int
		msg       string
	}{
		{"brotli", "br", nil, good, 415, `Content-Encoding "br" is not supported`},
		{"two codings", "gzip, deflate", nil, compress(t, "deflate", gz), 415, "only one of gzip or deflate"},
		{"gzip header on plain JSON", "gzip", nil, good, 400, "gzip request body: gzip: invalid header"},
		{"deflate header on gzip", "deflate", nil, gz, 400, "deflate request body: zlib: invalid header"},
		{"truncated gzip", "gzip", nil, gz[:len(gz)-12], 400, "gzip request body: unexpected EOF"},
		{"gzip with trailing garbage", "gzip", nil, append(append([]byte{}, gz...), "garbage"...), 400, "gzip request body"},
		{"corrupt gzip checksum", "gzip", nil, append(append([]byte{}, gz[:len(gz)-8]...), 1, 2, 3, 4, 5, 6, 7, 8), 400, "gzip request body: gzip: invalid checksum"},
		{"gzip bomb", "gzip", nil, bombGz, 413, "larger than the limit of 1048576 bytes"},
		{"deflate bomb", "deflate", nil, bombZ, 413, "larger than the limit of 1048576 bytes"},
		{"binary header length past the decompressed body", "gzip", http.Header{headerContentLength: {strconv.Itoa(hl + 100)}}, compress(t, "gzip", binBody[:hl+10]), 400, "unexpected data after the request's JSON object"},
		{"binary section past the decompressed body", "gzip", http.Header{headerContentLength: {strconv.Itoa(hl)}}, compress(t, "gzip", binBody[:len(binBody)-10]), 400, "the body ends after"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			header := http.Header{"Content-Encoding": {tc.enc}}
			for k, v := range tc.header {
				header[k] = v
			}
			w := do(h, "POST", "/v2/models/silero_vad/infer", header, tc.body)
			var e struct{ Error string }
			if w.Code != tc.status || json.Unmarshal(w.Body.Bytes(), &e) != nil || !strings.Contains(e.Error, tc.msg) {
				t.Fatalf("status %d %s, want %d with %q", w.Code, w.Body, tc.status, tc.msg)
			}
		})
	}
}

func TestResponseEncoding(t *testing.T) {
	for _, tc := range []struct{ accept, want string }{
		{"", ""}, {"gzip", "gzip"}, {"GZIP", "gzip"}, {"x-gzip", "gzip"}, {"deflate", "deflate"},
		{"deflate, gzip", "gzip"}, {"gzip;q=0.2, deflate;q=0.8", "deflate"}, {"gzip;q=0", ""}, {"gzip;q=abc", ""},
		{"gzip;q=2", ""}, {"*", ""}, {"br", ""}, {"identity, gzip ; q=0.5", "gzip"}, {",,;;=", ""},
	} {
		if got := responseEncoding(http.Header{"Accept-Encoding": {tc.accept}}); got != tc.want {
			t.Errorf("Accept-Encoding %q: %q, want %q", tc.accept, got, tc.want)
		}
	}
}

// FuzzDecompressor: any bytes as a gzip or deflate body, and any
// Content-Encoding and Accept-Encoding values: never a panic, never more
// than the limit yielded, errors only the 400/413/415 kinds.
func FuzzDecompressor(f *testing.F) {
	good := []byte(`{"inputs":[]}`)
	for _, enc := range []string{"gzip", "deflate"} {
		f.Add(enc, compress(f, enc, good), "gzip")
		f.Add(enc, compress(f, enc, bytes.Repeat([]byte("a"), 5000)), "deflate;q=0.5")
		f.Add(enc, good, "*")
	}
	f.Add("br", good, "gzip;q=x")
	f.Add("gzip, gzip", []byte{0x1f, 0x8b}, ",")
	const limit = 4096
	f.Fuzz(func(t *testing.T, enc string, body []byte, accept string) {
		switch responseEncoding(http.Header{"Accept-Encoding": {accept}}) {
		case "", "gzip", "deflate":
		default:
			t.Fatalf("Accept-Encoding %q: unexpected coding", accept)
		}
		e, err := requestEncoding(http.Header{"Content-Encoding": {enc}})
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.status != 415 {
				t.Fatalf("Content-Encoding %q: %v", enc, err)
			}
			return
		}
		if e == "" {
			return
		}
		d, err := newDecompressor(e, bytes.NewReader(body), limit)
		if err == nil {
			var n int64
			n, err = io.Copy(io.Discard, d)
			d.release()
			if n > limit {
				t.Fatalf("yielded %d bytes past the limit %d", n, limit)
			}
		}
		if err == nil {
			return
		}
		var ae *apiError
		var mbe *http.MaxBytesError
		if !(errors.As(err, &ae) && ae.status == 400) && !errors.As(err, &mbe) {
			t.Fatalf("%s body %x: %v (%T)", e, body, err, err)
		}
	})
}
