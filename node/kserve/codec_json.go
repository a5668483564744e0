package kserve

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"sync"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/node/kserve/sysshm"
)

// Limits on the shape of a request, beyond the body size limit.
const (
	maxRank      = 32 // dimensions of one tensor
	maxDataDepth = 64 // nesting of a "data" array
	maxTensors   = 1024
)

// inferRequest is a decoded inference request: the JSON header's fields and
// the input tensors, whose bytes live in memory from the request's allocator.
type inferRequest struct {
	id           []byte // raw JSON string literal of "id", quotes included; nil if absent
	binaryOutput bool   // request-level "binary_data_output"
	inputs       []requestInput
	outputs      []requestOutput // empty: all outputs
}

type requestInput struct {
	tensor     inference.Tensor
	binarySize int64 // "binary_data_size"; -1 when absent
	shm        shmRef
	hasData    bool
	raw        []byte // "data" seen before "datatype"/"shape": decoded at the object's end
}

type requestOutput struct {
	name      string
	binary    bool
	hasBinary bool // "binary_data" given: it overrides the request-level default
	shm       shmRef
}

// shmRef is a tensor's place in a system shared-memory region: the
// shared_memory_region, shared_memory_offset and shared_memory_byte_size
// parameters.
type shmRef struct {
	region       string
	offset, size int64
	set, hasSize bool
	hasWindow    bool
}

// decodeLimits carry what the decoder needs to know about the body to bound
// allocations before it has read the data they are for.
type decodeLimits struct {
	// bodyBytes is the most the body can hold: the smaller of
	// Content-Length (when known) and the configured limit.
	bodyBytes int64
	// headerLen is Inference-Header-Content-Length, or -1 when the body is
	// JSON only.
	headerLen int64
}

var decoderPool = sync.Pool{New: func() any { return jsontext.NewDecoder(bytes.NewReader(nil)) }}

// requestDecoder decodes one request against one model's tensor infos.
type requestDecoder struct {
	ctx     context.Context
	alloc   inference.Allocator
	inputs  []inference.TensorInfo
	outputs []inference.TensorInfo
	limits  decodeLimits
	// bytesArena holds the bytes of JSON BYTES elements; Strings slice it.
	bytesArena []byte
	// shm resolves shared-memory inputs (nil: the extension is off); the
	// caller runs releases once the request is done with them.
	shm      *sysshm.Registry
	releases []func()
}

// decodeRequest reads an inference request from body: the JSON header
// (the whole body, or its first limits.headerLen bytes), then the binary
// sections in the order the header lists them, each read straight into a
// buffer from rd.alloc. It checks the request against the model's inputs and
// outputs and rejects anything left in the body.
func (rd *requestDecoder) decodeRequest(body io.Reader) (*inferRequest, error) {
	d := decoderPool.Get().(*jsontext.Decoder)
	defer func() {
		d.Reset(bytes.NewReader(nil))
		decoderPool.Put(d)
	}()
	var hdr io.Reader = body
	if rd.limits.headerLen >= 0 {
		hdr = &io.LimitedReader{R: body, N: rd.limits.headerLen}
	}
	d.Reset(hdr)
	req, err := rd.decodeHeader(d)
	if err != nil {
		return nil, err
	}
	if _, err := d.ReadToken(); err != io.EOF {
		if err == nil || isSyntaxError(err) {
			return nil, badRequest(reasonJSON, "unexpected data after the request's JSON object at byte %d", d.InputOffset())
		}
		return nil, jsonError(err)
	}
	if rd.limits.headerLen >= 0 {
		if lr := hdr.(*io.LimitedReader); lr.N != 0 {
			return nil, badRequest(reasonHeader, "Inference-Header-Content-Length is %d but the body ends after %d bytes", rd.limits.headerLen, rd.limits.headerLen-lr.N)
		}
		if err := rd.readBinary(req, body); err != nil {
			return nil, err
		}
	} else {
		for i := range req.inputs {
			if req.inputs[i].binarySize >= 0 {
				return nil, badRequest(reasonBinary, "input %q has binary_data_size but the request has no Inference-Header-Content-Length header", req.inputs[i].tensor.Name)
			}
		}
	}
	if err := expectEOF(body); err != nil {
		return nil, err
	}
	for i := range req.inputs {
		if req.inputs[i].shm.set {
			if err := rd.shmInput(&req.inputs[i]); err != nil {
				return nil, err
			}
		}
	}
	return req, nil
}

// shmInput points an input at its shared-memory window: the registered
// mapping itself, no copy. The window must be exactly the tensor's size
// (BYTES: hold exactly its length-prefixed elements).
func (rd *requestDecoder) shmInput(in *requestInput) error {
	t := &in.tensor
	n, err := inference.ElementCount(t.Shape)
	if err != nil {
		return badRequest(reasonInput, "input %q: %v", t.Name, err)
	}
	if t.DataType != inference.Bytes {
		if want := n * int64(t.DataType.Size()); in.shm.size != want {
			return badRequest(reasonInput, "input %q: shared_memory_byte_size is %d but %s shape %v needs %d bytes", t.Name, in.shm.size, t.DataType, t.Shape, want)
		}
	}
	b, release, err := rd.shm.Acquire(in.shm.region, uint64(in.shm.offset), uint64(in.shm.size))
	if err != nil {
		return fmt.Errorf("input %q: %w", t.Name, err)
	}
	rd.releases = append(rd.releases, release)
	if t.DataType == inference.Bytes {
		strs, err := SplitBytesElements(b, n)
		if err != nil {
			return badRequest(reasonInput, "input %q: shared memory: %v", t.Name, err)
		}
		t.Strings = strs
		return nil
	}
	t.Data = b
	return nil
}

// decodeShmParameter reads one of the shared-memory parameters into ref;
// it reports whether name was one.
func (rd *requestDecoder) decodeShmParameter(d *jsontext.Decoder, ref *shmRef, key []byte, where func() string) (bool, error) {
	// key aliases the decoder's buffer, which the next read overwrites.
	var name string
	switch string(key) {
	case "shared_memory_region", "shared_memory_offset", "shared_memory_byte_size":
		name = string(key)
	default:
		return false, nil
	}
	switch name {
	case "shared_memory_region":
		if rd.shm == nil {
			return false, &apiError{status: 501, reason: reasonUnsupported, msg: where() + ": system shared memory is not enabled on this node"}
		}
		v, err := d.ReadValue()
		if err != nil {
			return true, jsonError(err)
		}
		var scratch []byte
		s, err := unquote(v, &scratch)
		if err != nil || len(s) == 0 {
			return true, badRequest(reasonJSON, "%s: shared_memory_region must be a non-empty string", where())
		}
		ref.region, ref.set = string(s), true
		return true, nil
	case "shared_memory_offset", "shared_memory_byte_size":
		n, err := readInt(d, func() string { return where() + ": " + name })
		if err != nil {
			return true, err
		}
		if n < 0 {
			return true, badRequest(reasonInput, "%s: %s is negative (%d)", where(), name, n)
		}
		if name == "shared_memory_offset" {
			ref.offset = n
		} else {
			ref.size, ref.hasSize = n, true
		}
		ref.hasWindow = true
		return true, nil
	}
	return false, nil
}

// checkShm checks a tensor's shared-memory parameters once its object has
// ended.
func checkShm(ref shmRef, what string) error {
	switch {
	case !ref.set && ref.hasWindow:
		return badRequest(reasonInput, "%s has shared_memory_offset or shared_memory_byte_size but no shared_memory_region", what)
	case ref.set && !ref.hasSize:
		return badRequest(reasonInput, "%s names shared_memory_region %q without shared_memory_byte_size", what, ref.region)
	}
	return nil
}

// expectEOF rejects trailing bytes after the last section.
func expectEOF(r io.Reader) error {
	var one [1]byte
	n, err := io.ReadFull(r, one[:])
	if n > 0 {
		return badRequest(reasonBinary, "request body has bytes after the last tensor")
	}
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return nil
	}
	return err
}

func isSyntaxError(err error) bool {
	var se *jsontext.SyntacticError
	return errors.As(err, &se) || errors.Is(err, io.ErrUnexpectedEOF)
}

// jsonError turns a decoder error into a 400, or passes an I/O error
// (body too large, client gone) through.
func jsonError(err error) error {
	if err == nil { // the common case: nothing to map, and no errors.As allocation
		return nil
	}
	var ae *apiError
	if errors.As(err, &ae) {
		return err
	}
	if err == io.EOF {
		return badRequest(reasonJSON, "invalid JSON: the body ends in the middle of the request")
	}
	if isSyntaxError(err) {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return badRequest(reasonJSON, "invalid JSON: the body ends in the middle of the request")
		}
		return badRequest(reasonJSON, "invalid JSON: %v", err)
	}
	return err
}

// readKey reads an object member name and returns its unquoted bytes, valid
// until the next read.
func readKey(d *jsontext.Decoder, scratch *[]byte) ([]byte, error) {
	v, err := d.ReadValue()
	if err != nil {
		return nil, jsonError(err)
	}
	return unquote(v, scratch)
}

// unquote returns the contents of the JSON string literal v, unescaping into
// scratch only when v has escapes.
func unquote(v jsontext.Value, scratch *[]byte) ([]byte, error) {
	if len(v) < 2 || v[0] != '"' {
		return nil, badRequest(reasonJSON, "expected a string, found %s", kindName(v.Kind()))
	}
	if bytes.IndexByte(v, '\\') < 0 {
		return v[1 : len(v)-1], nil
	}
	out, err := jsontext.AppendUnquote((*scratch)[:0], v)
	if err != nil {
		return nil, badRequest(reasonJSON, "invalid JSON string: %v", err)
	}
	*scratch = out
	return out, nil
}

func kindName(k jsontext.Kind) string {
	switch k {
	case '"':
		return "a string"
	case '0':
		return "a number"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case ']':
		return "the end of an array"
	case '}':
		return "the end of an object"
	}
	return "the end of the body"
}

// lit is a constant description for error messages. Descriptions are
// functions so that the hot path never formats one unless it reports an
// error.
func lit(s string) func() string { return func() string { return s } }

// expect reads one token and checks its kind.
func expect(d *jsontext.Decoder, k jsontext.Kind, what func() string) error {
	if pk := d.PeekKind(); pk != k {
		if pk == 0 {
			_, err := d.ReadToken()
			return jsonError(err)
		}
		return badRequest(reasonJSON, "%s must be %s, found %s", what(), kindName(k), kindName(pk))
	}
	_, err := d.ReadToken()
	return jsonError(err)
}

func (rd *requestDecoder) decodeHeader(d *jsontext.Decoder) (*inferRequest, error) {
	req := &inferRequest{}
	if err := expect(d, '{', lit("the request")); err != nil {
		return nil, err
	}
	var scratch []byte
	for d.PeekKind() != '}' {
		key, err := readKey(d, &scratch)
		if err != nil {
			return nil, err
		}
		switch string(key) {
		case "id":
			v, err := d.ReadValue()
			if err != nil {
				return nil, jsonError(err)
			}
			if v.Kind() != '"' {
				return nil, badRequest(reasonJSON, `"id" must be a string, found %s`, kindName(v.Kind()))
			}
			req.id = bytes.Clone(v)
		case "parameters":
			err = rd.decodeParameters(d, lit("the request's parameters"), func(name []byte) (bool, error) {
				if string(name) != "binary_data_output" {
					return false, nil
				}
				req.binaryOutput, err = readBool(d, lit(`"binary_data_output"`))
				return true, err
			})
		case "inputs":
			err = rd.decodeArray(d, lit(`"inputs"`), func() error {
				if len(req.inputs) == maxTensors {
					return badRequest(reasonInput, "more than %d inputs", maxTensors)
				}
				in, err := rd.decodeInput(d, req)
				if err == nil {
					req.inputs = append(req.inputs, in)
				}
				return err
			})
		case "outputs":
			err = rd.decodeArray(d, lit(`"outputs"`), func() error {
				if len(req.outputs) == maxTensors {
					return badRequest(reasonOutput, "more than %d outputs", maxTensors)
				}
				out, err := rd.decodeOutput(d, req)
				if err == nil {
					req.outputs = append(req.outputs, out)
				}
				return err
			})
		default:
			err = jsonError(d.SkipValue())
		}
		if err != nil {
			return nil, err
		}
	}
	if _, err := d.ReadToken(); err != nil {
		return nil, jsonError(err)
	}
	if len(req.inputs) == 0 {
		return nil, badRequest(reasonInput, `the request has no "inputs"`)
	}
	for _, info := range rd.inputs {
		if findInput(req.inputs, info.Name) < 0 {
			return nil, badRequest(reasonInput, "missing input %q", info.Name)
		}
	}
	return req, nil
}

func findInput(ins []requestInput, name string) int {
	for i := range ins {
		if ins[i].tensor.Name == name {
			return i
		}
	}
	return -1
}

// decodeArray reads a JSON array, calling elem with the decoder positioned
// at each element.
func (rd *requestDecoder) decodeArray(d *jsontext.Decoder, what func() string, elem func() error) error {
	if err := expect(d, '[', what); err != nil {
		return err
	}
	for d.PeekKind() != ']' {
		if err := elem(); err != nil {
			return err
		}
	}
	_, err := d.ReadToken()
	return jsonError(err)
}

// decodeParameters reads a "parameters" object; member is called with each
// name and returns whether it consumed the value (others are skipped).
func (rd *requestDecoder) decodeParameters(d *jsontext.Decoder, what func() string, member func(name []byte) (bool, error)) error {
	if err := expect(d, '{', what); err != nil {
		return err
	}
	var scratch []byte
	for d.PeekKind() != '}' {
		key, err := readKey(d, &scratch)
		if err != nil {
			return err
		}
		used, err := member(key)
		if err != nil {
			return err
		}
		if !used {
			if err := d.SkipValue(); err != nil {
				return jsonError(err)
			}
		}
	}
	_, err := d.ReadToken()
	return jsonError(err)
}

func readBool(d *jsontext.Decoder, what func() string) (bool, error) {
	tok, err := d.ReadToken()
	if err != nil {
		return false, jsonError(err)
	}
	switch tok.Kind() {
	case 't':
		return true, nil
	case 'f':
		return false, nil
	}
	return false, badRequest(reasonJSON, "%s must be a boolean, found %s", what(), kindName(tok.Kind()))
}

func readInt(d *jsontext.Decoder, what func() string) (int64, error) {
	v, err := d.ReadValue()
	if err != nil {
		return 0, jsonError(err)
	}
	if v.Kind() != '0' {
		return 0, badRequest(reasonJSON, "%s must be an integer, found %s", what(), kindName(v.Kind()))
	}
	n, err := strconv.ParseInt(bytesToString(v), 10, 64)
	if err != nil {
		return 0, badRequest(reasonJSON, "%s must be an integer, found %s", what(), v)
	}
	return n, nil
}

func (rd *requestDecoder) decodeInput(d *jsontext.Decoder, req *inferRequest) (requestInput, error) {
	in := requestInput{binarySize: -1}
	if err := expect(d, '{', lit("each input")); err != nil {
		return in, err
	}
	var scratch []byte
	var haveType, haveShape, checked bool
	where := func() string {
		if in.tensor.Name != "" {
			return strconv.Quote(in.tensor.Name)
		}
		return fmt.Sprintf("#%d", len(req.inputs))
	}
	for d.PeekKind() != '}' {
		key, err := readKey(d, &scratch)
		if err != nil {
			return in, err
		}
		switch string(key) {
		case "name":
			v, err := d.ReadValue()
			if err != nil {
				return in, jsonError(err)
			}
			name, err := unquote(v, &scratch)
			if err != nil {
				return in, badRequest(reasonJSON, "input %s: \"name\" must be a string", where())
			}
			in.tensor.Name = string(name)
			if findInput(req.inputs, in.tensor.Name) >= 0 {
				return in, badRequest(reasonInput, "input %q appears twice", in.tensor.Name)
			}
		case "datatype":
			v, err := d.ReadValue()
			if err != nil {
				return in, jsonError(err)
			}
			s, err := unquote(v, &scratch)
			if err != nil {
				return in, badRequest(reasonJSON, "input %s: \"datatype\" must be a string", where())
			}
			dt, ok := inference.ParseDataType(bytesToString(s))
			if !ok {
				return in, badRequest(reasonInput, "input %s: unknown datatype %q", where(), s)
			}
			in.tensor.DataType, haveType = dt, true
		case "shape":
			shape := in.tensor.Shape[:0]
			err := rd.decodeArray(d, func() string { return "input " + where() + `: "shape"` }, func() error {
				if len(shape) == maxRank {
					return badRequest(reasonInput, "input %s: shape has more than %d dimensions", where(), maxRank)
				}
				n, err := readInt(d, func() string { return "input " + where() + ": each dimension" })
				shape = append(shape, n)
				return err
			})
			if err != nil {
				return in, err
			}
			if shape == nil {
				shape = []int64{}
			}
			in.tensor.Shape, haveShape = shape, true
		case "parameters":
			err := rd.decodeParameters(d, func() string { return "input " + where() + `: "parameters"` }, func(name []byte) (bool, error) {
				switch string(name) {
				case "binary_data_size":
					n, err := readInt(d, func() string { return "input " + where() + `: "binary_data_size"` })
					if err == nil && n < 0 {
						err = badRequest(reasonBinary, "input %s: binary_data_size is negative (%d)", where(), n)
					}
					in.binarySize = n
					return true, err
				}
				return rd.decodeShmParameter(d, &in.shm, name, func() string { return "input " + where() })
			})
			if err != nil {
				return in, err
			}
		case "data":
			if in.hasData {
				return in, badRequest(reasonJSON, "input %s: \"data\" appears twice", where())
			}
			in.hasData = true
			if !haveType || !haveShape {
				// Rare: keep the raw value and decode it once the
				// datatype and shape are known.
				v, err := d.ReadValue()
				if err != nil {
					return in, jsonError(err)
				}
				in.raw = bytes.Clone(v)
				continue
			}
			if in.tensor.Name != "" {
				if err := rd.checkInput(&in.tensor); err != nil {
					return in, err
				}
				checked = true
			}
			if err := rd.decodeData(d, &in.tensor); err != nil {
				return in, err
			}
		default:
			if err := d.SkipValue(); err != nil {
				return in, jsonError(err)
			}
		}
	}
	if _, err := d.ReadToken(); err != nil {
		return in, jsonError(err)
	}
	switch {
	case in.tensor.Name == "":
		return in, badRequest(reasonInput, "input #%d has no \"name\"", len(req.inputs))
	case !haveType:
		return in, badRequest(reasonInput, "input %q has no \"datatype\"", in.tensor.Name)
	case !haveShape:
		return in, badRequest(reasonInput, "input %q has no \"shape\"", in.tensor.Name)
	case in.hasData && in.binarySize >= 0:
		return in, badRequest(reasonBinary, "input %q has both \"data\" and binary_data_size", in.tensor.Name)
	case in.shm.set && (in.hasData || in.binarySize >= 0):
		return in, badRequest(reasonInput, "input %q has shared_memory_region and also \"data\" or binary_data_size", in.tensor.Name)
	case !in.hasData && in.binarySize < 0 && !in.shm.set:
		return in, badRequest(reasonInput, "input %q has no \"data\", no binary_data_size and no shared_memory_region", in.tensor.Name)
	}
	if err := checkShm(in.shm, fmt.Sprintf("input %q", in.tensor.Name)); err != nil {
		return in, err
	}
	if !checked {
		if err := rd.checkInput(&in.tensor); err != nil {
			return in, err
		}
	}
	if in.raw != nil {
		raw := in.raw
		in.raw = nil
		d2 := jsontext.NewDecoder(bytes.NewReader(raw))
		if err := rd.decodeData(d2, &in.tensor); err != nil {
			return in, err
		}
	}
	return in, nil
}

// checkInput checks a named input's datatype and shape against the model.
func (rd *requestDecoder) checkInput(t *inference.Tensor) error {
	for _, info := range rd.inputs {
		if info.Name != t.Name {
			continue
		}
		if info.DataType != t.DataType {
			return badRequest(reasonInput, "input %q: datatype %s does not match the model's %s", t.Name, t.DataType, info.DataType)
		}
		if _, err := inference.ElementCount(t.Shape); err != nil {
			return badRequest(reasonInput, "input %q: %v", t.Name, err)
		}
		if !shapeFits(info.Shape, t.Shape) {
			return badRequest(reasonInput, "input %q: shape %v does not match the model's %v", t.Name, t.Shape, info.Shape)
		}
		return nil
	}
	return badRequest(reasonInput, "unknown input %q (the model's inputs are %s)", t.Name, tensorNames(rd.inputs))
}

// shapeFits reports whether shape matches model, where -1 in model matches
// any dimension.
func shapeFits(model, shape []int64) bool {
	if len(model) != len(shape) {
		return false
	}
	for i, d := range model {
		if d >= 0 && d != shape[i] {
			return false
		}
	}
	return true
}

func tensorNames(infos []inference.TensorInfo) string {
	var b []byte
	for i, info := range infos {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = strconv.AppendQuote(b, info.Name)
	}
	return string(b)
}

func (rd *requestDecoder) decodeOutput(d *jsontext.Decoder, req *inferRequest) (requestOutput, error) {
	var out requestOutput
	if err := expect(d, '{', lit("each requested output")); err != nil {
		return out, err
	}
	var scratch []byte
	for d.PeekKind() != '}' {
		key, err := readKey(d, &scratch)
		if err != nil {
			return out, err
		}
		switch string(key) {
		case "name":
			v, err := d.ReadValue()
			if err != nil {
				return out, jsonError(err)
			}
			name, err := unquote(v, &scratch)
			if err != nil {
				return out, badRequest(reasonJSON, "requested output #%d: \"name\" must be a string", len(req.outputs))
			}
			out.name = string(name)
		case "parameters":
			err := rd.decodeParameters(d, lit(`an output's "parameters"`), func(name []byte) (bool, error) {
				switch string(name) {
				case "binary_data":
					b, err := readBool(d, lit(`"binary_data"`))
					out.binary, out.hasBinary = b, true
					return true, err
				case "classification":
					return false, &apiError{status: 501, reason: reasonUnsupported, msg: "the classification extension is not supported"}
				}
				return rd.decodeShmParameter(d, &out.shm, name, func() string { return fmt.Sprintf("requested output %q", out.name) })
			})
			if err != nil {
				return out, err
			}
		default:
			if err := d.SkipValue(); err != nil {
				return out, jsonError(err)
			}
		}
	}
	if _, err := d.ReadToken(); err != nil {
		return out, jsonError(err)
	}
	if out.name == "" {
		return out, badRequest(reasonOutput, "requested output #%d has no \"name\"", len(req.outputs))
	}
	if err := checkShm(out.shm, fmt.Sprintf("requested output %q", out.name)); err != nil {
		return out, err
	}
	known := false
	for _, info := range rd.outputs {
		known = known || info.Name == out.name
	}
	if !known {
		return out, badRequest(reasonOutput, "unknown output %q (the model's outputs are %s)", out.name, tensorNames(rd.outputs))
	}
	for _, o := range req.outputs {
		if o.name == out.name {
			return out, badRequest(reasonOutput, "output %q is requested twice", out.name)
		}
	}
	return out, nil
}

// decodeData reads a "data" value (a flat or nested array, or a bare
// scalar) straight into a buffer from the allocator, or for BYTES into
// t.Strings. The element count must match t.Shape.
func (rd *requestDecoder) decodeData(d *jsontext.Decoder, t *inference.Tensor) error {
	n, err := inference.ElementCount(t.Shape)
	if err != nil {
		return badRequest(reasonInput, "input %q: %v", t.Name, err)
	}
	// Every JSON element takes at least two bytes ("0,"), so a shape that
	// needs more than the body can hold is refused before allocating.
	if maxN := rd.limits.bodyBytes/2 + 1; n > maxN {
		return badRequest(reasonData, "input %q: shape %v needs %d elements, more than a %d-byte body can hold as JSON", t.Name, t.Shape, n, rd.limits.bodyBytes)
	}
	size := t.DataType.Size()
	if t.DataType == inference.Bytes {
		t.Strings = make([][]byte, 0, n)
		t.Data = nil
	} else {
		buf, err := inference.AllocOverwrite(rd.ctx, rd.alloc, int(n)*size) // every element, or the request fails
		if err != nil {
			return fmt.Errorf("input %q: allocating %d bytes: %w", t.Name, int(n)*size, err)
		}
		t.Data = buf
	}
	var count int64
	depth := 0
	for {
		switch k := d.PeekKind(); k {
		case '[':
			if depth == maxDataDepth {
				return badRequest(reasonData, "input %q: \"data\" nests deeper than %d arrays", t.Name, maxDataDepth)
			}
			if _, err := d.ReadToken(); err != nil {
				return jsonError(err)
			}
			depth++
			continue
		case ']':
			if _, err := d.ReadToken(); err != nil {
				return jsonError(err)
			}
			depth--
		case 0:
			_, err := d.ReadToken()
			return jsonError(err)
		default:
			if count == n {
				return badRequest(reasonData, "input %q: \"data\" has more than the %d elements shape %v holds", t.Name, n, t.Shape)
			}
			if err := rd.putElem(d, t, count); err != nil {
				return err
			}
			count++
		}
		if depth == 0 {
			break
		}
	}
	if count != n {
		return badRequest(reasonData, "input %q: \"data\" has %d elements but shape %v needs %d", t.Name, count, t.Shape, n)
	}
	return nil
}

// putElem decodes one element into slot i of t.
func (rd *requestDecoder) putElem(d *jsontext.Decoder, t *inference.Tensor, i int64) error {
	v, err := d.ReadValue()
	if err != nil {
		return jsonError(err)
	}
	bad := func(format string) error {
		shown := v
		if len(shown) > 40 {
			shown = append(shown[:37:37], "..."...)
		}
		return badRequest(reasonData, "input %q: element %d: "+format, t.Name, i, shown, t.DataType)
	}
	switch t.DataType {
	case inference.Bytes:
		if v.Kind() != '"' {
			return bad("%s is not a string, as %s data must be")
		}
		start := len(rd.bytesArena)
		arena, err := jsontext.AppendUnquote(rd.bytesArena, v)
		if err != nil {
			return bad("%s is not a valid string for %s")
		}
		rd.bytesArena = arena
		t.Strings = append(t.Strings, arena[start:len(arena):len(arena)])
		return nil
	case inference.Bool:
		switch v.Kind() {
		case 't':
			t.Data[i] = 1
		case 'f':
			t.Data[i] = 0
		default:
			return bad("%s is not true or false, as %s data must be")
		}
		return nil
	}
	if v.Kind() != '0' {
		return bad("%s is not a number, as %s data must be")
	}
	s := bytesToString(v)
	b := t.Data
	switch t.DataType {
	case inference.FP32:
		f, ok := parseFloat32(s)
		if !ok {
			f64, err := strconv.ParseFloat(s, 32)
			if err != nil {
				return bad("%s is out of range for %s")
			}
			f = float32(f64)
		}
		binary.LittleEndian.PutUint32(b[i*4:], math.Float32bits(f))
	case inference.FP64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return bad("%s is out of range for %s")
		}
		binary.LittleEndian.PutUint64(b[i*8:], math.Float64bits(f))
	case inference.FP16, inference.BF16:
		f, err := strconv.ParseFloat(s, 64)
		var h uint16
		if t.DataType == inference.FP16 {
			h = inference.Float64ToFP16(f)
			err = errOr(err, inference.FP16IsInf(h))
		} else {
			h = inference.Float64ToBF16(f)
			err = errOr(err, inference.BF16IsInf(h))
		}
		if err != nil {
			return bad("%s is out of range for %s")
		}
		binary.LittleEndian.PutUint16(b[i*2:], h)
	case inference.Int8, inference.Int16, inference.Int32, inference.Int64:
		size := t.DataType.Size()
		x, err := strconv.ParseInt(s, 10, size*8)
		if err != nil {
			return bad("%s is not a valid %s")
		}
		inference.PutUint(b[i*int64(size):], size, uint64(x))
	case inference.Uint8, inference.Uint16, inference.Uint32, inference.Uint64:
		size := t.DataType.Size()
		x, err := strconv.ParseUint(s, 10, size*8)
		if err != nil {
			return bad("%s is not a valid %s")
		}
		inference.PutUint(b[i*int64(size):], size, x)
	default:
		return badRequest(reasonInput, "input %q: datatype %s cannot carry data", t.Name, t.DataType)
	}
	return nil
}

var errOutOfRange = errors.New("out of range")

func errOr(err error, inf bool) error {
	if err == nil && inf {
		return errOutOfRange
	}
	return err
}
