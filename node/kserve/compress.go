package kserve

import (
	"bufio"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// Compression of inference bodies, as Triton's HTTP frontend does it:
// Content-Encoding gzip or deflate (zlib, RFC 1950, which is what HTTP
// "deflate" means and what tritonclient sends) on requests, and the same
// on responses for a client whose Accept-Encoding asks for it. Readers and
// writers are pooled: a fresh flate writer costs ~800 KB.

const reasonEncoding = "encoding" // unsupported or corrupt Content-Encoding

// Encodings are "gzip" and "deflate"; "" is none.
const (
	encGzip    = "gzip"
	encDeflate = "deflate"
)

// requestEncoding parses Content-Encoding: "" (none or identity), gzip or
// deflate. Anything else, or more than one coding, is 415.
func requestEncoding(h http.Header) (string, error) {
	vs := h.Values("Content-Encoding")
	enc := ""
	for _, v := range vs {
		for _, c := range strings.Split(v, ",") {
			c = strings.ToLower(strings.TrimSpace(c))
			if c == "" || c == "identity" {
				continue
			}
			if enc != "" {
				return "", &apiError{status: http.StatusUnsupportedMediaType, reason: reasonEncoding,
					msg: fmt.Sprintf("Content-Encoding %q: only one of gzip or deflate is supported", strings.Join(vs, ", "))}
			}
			enc = c
		}
	}
	switch enc {
	case "", encGzip, encDeflate:
		return enc, nil
	case "x-gzip":
		return encGzip, nil
	}
	return "", &apiError{status: http.StatusUnsupportedMediaType, reason: reasonEncoding,
		msg: fmt.Sprintf("Content-Encoding %q is not supported (use gzip, deflate or none)", enc)}
}

var (
	gzipReaders sync.Pool // *gzip.Reader
	zlibReaders sync.Pool // io.ReadCloser that is a zlib.Resetter
)

// decompressor reads a compressed request body, bounding what it yields at
// limit bytes (a decompression bomb gets *http.MaxBytesError → 413, like an
// uncompressed body over the limit) and turning corrupt data into a 400.
type decompressor struct {
	enc   string
	r     io.Reader // the gzip or zlib reader
	n     int64     // bytes yielded
	limit int64
}

// newDecompressor starts decoding src (the raw body). A corrupt stream
// header is a 400 at once.
func newDecompressor(enc string, src io.Reader, limit int64) (*decompressor, error) {
	d := &decompressor{enc: enc, limit: limit}
	br := bufio.NewReaderSize(src, 32<<10) // flate.Reader, so the inflater does not over-read
	var err error
	switch enc {
	case encGzip:
		if zr, ok := gzipReaders.Get().(*gzip.Reader); ok {
			err = zr.Reset(br)
			d.r = zr
		} else {
			var zr *gzip.Reader
			zr, err = gzip.NewReader(br)
			d.r = zr
		}
	case encDeflate:
		if zr, ok := zlibReaders.Get().(io.ReadCloser); ok {
			err = zr.(zlib.Resetter).Reset(br, nil)
			d.r = zr
		} else {
			d.r, err = zlib.NewReader(br)
		}
	}
	if err != nil {
		d.r = nil
		return nil, d.corrupt(err)
	}
	return d, nil
}

func (d *decompressor) corrupt(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return err
	}
	// The cause is in the message only: wrapping it would let an
	// io.ErrUnexpectedEOF pass for a short body or a JSON syntax error.
	return &apiError{status: http.StatusBadRequest, reason: reasonEncoding, msg: fmt.Sprintf("%s request body: %v", d.enc, err)}
}

func (d *decompressor) Read(p []byte) (int, error) {
	if left := d.limit - d.n; int64(len(p)) > left+1 {
		p = p[:left+1] // one byte past the limit tells a bomb from a body that ends exactly there
	}
	n, err := d.r.Read(p)
	d.n += int64(n)
	if d.n > d.limit {
		return n - int(d.n-d.limit), &http.MaxBytesError{Limit: d.limit}
	}
	if err != nil && err != io.EOF {
		return n, d.corrupt(err)
	}
	return n, err
}

// release returns the reader to its pool.
func (d *decompressor) release() {
	switch r := d.r.(type) {
	case *gzip.Reader:
		gzipReaders.Put(r)
	case io.ReadCloser:
		zlibReaders.Put(r)
	}
	d.r = nil
}

// responseEncoding picks the response coding from Accept-Encoding: gzip
// or deflate when listed with a non-zero q (gzip first on a tie), else ""
// (identity; "*" is not taken as a request to compress).
func responseEncoding(h http.Header) string {
	best, bestQ := "", 0.0
	for _, v := range h.Values("Accept-Encoding") {
		for _, part := range strings.Split(v, ",") {
			name, params, _ := strings.Cut(part, ";")
			name = strings.ToLower(strings.TrimSpace(name))
			if name == "x-gzip" {
				name = encGzip
			}
			if name != encGzip && name != encDeflate {
				continue
			}
			q := 1.0
			for _, p := range strings.Split(params, ";") {
				k, val, ok := strings.Cut(strings.TrimSpace(p), "=")
				if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
					f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
					if err != nil || f < 0 || f > 1 {
						f = 0 // a malformed q is not an acceptance
					}
					q = f
				}
			}
			if q > bestQ || (q == bestQ && q > 0 && name == encGzip) {
				best, bestQ = name, q
			}
		}
	}
	if bestQ <= 0 {
		return ""
	}
	return best
}

var (
	gzipWriters sync.Pool // *gzip.Writer
	zlibWriters sync.Pool // *zlib.Writer
)

// compressor is the ResponseWriter of a compressed response: the handler
// writes the identity body, the client receives it compressed (chunked:
// the compressed length is not known up front).
type compressor struct {
	http.ResponseWriter
	enc string
	w   interface {
		io.Writer
		Close() error
	}
}

// newCompressor wraps w for enc. Content-Length is dropped in WriteHeader.
func newCompressor(w http.ResponseWriter, enc string) *compressor {
	c := &compressor{ResponseWriter: w, enc: enc}
	switch enc {
	case encGzip:
		if zw, ok := gzipWriters.Get().(*gzip.Writer); ok {
			zw.Reset(w)
			c.w = zw
		} else {
			zw, _ := gzip.NewWriterLevel(w, flate.BestSpeed) // the level is valid
			c.w = zw
		}
	case encDeflate:
		if zw, ok := zlibWriters.Get().(*zlib.Writer); ok {
			zw.Reset(w)
			c.w = zw
		} else {
			zw, _ := zlib.NewWriterLevel(w, flate.BestSpeed)
			c.w = zw
		}
	}
	return c
}

func (c *compressor) WriteHeader(code int) {
	h := c.Header()
	if code == http.StatusOK {
		h.Del("Content-Length")
		h.Set("Content-Encoding", c.enc)
	}
	h.Add("Vary", "Accept-Encoding")
	c.ResponseWriter.WriteHeader(code)
}

func (c *compressor) Write(p []byte) (int, error) { return c.w.Write(p) }

// finish flushes the compressed stream and returns the writer to its pool.
// Nothing must be written after it.
func (c *compressor) finish() error {
	err := c.w.Close()
	switch zw := c.w.(type) {
	case *gzip.Writer:
		zw.Reset(io.Discard)
		gzipWriters.Put(zw)
	case *zlib.Writer:
		zw.Reset(io.Discard)
		zlibWriters.Put(zw)
	}
	c.w = nil
	return err
}
