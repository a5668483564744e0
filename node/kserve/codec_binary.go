package kserve

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/edgeai/edge-node/inference"
)

// readBinary reads the binary sections that follow the JSON header, in the
// order the header lists the inputs that have binary_data_size. Each section
// goes with io.ReadFull straight from the body into a buffer from the
// request's allocator: there is no intermediate copy and the body is never
// read whole.
func (rd *requestDecoder) readBinary(req *inferRequest, body io.Reader) error {
	left := rd.limits.bodyBytes - rd.limits.headerLen // bytes the body can still hold
	for i := range req.inputs {
		in := &req.inputs[i]
		if in.binarySize < 0 {
			continue
		}
		t := &in.tensor
		n, err := inference.ElementCount(t.Shape)
		if err != nil {
			return badRequest(reasonInput, "input %q: %v", t.Name, err)
		}
		size := in.binarySize
		if t.DataType != inference.Bytes {
			if want := n * int64(t.DataType.Size()); size != want {
				return badRequest(reasonBinary, "input %q: binary_data_size is %d but %s shape %v needs %d bytes", t.Name, size, t.DataType, t.Shape, want)
			}
		} else if size < 4*n {
			return badRequest(reasonBinary, "input %q: binary_data_size %d is too small for %d BYTES elements (4 bytes of length each)", t.Name, size, n)
		}
		if size > left {
			return badRequest(reasonBinary, "input %q: binary_data_size %d is past the end of the body (%d bytes left)", t.Name, size, left)
		}
		buf, err := inference.AllocOverwrite(rd.ctx, rd.alloc, int(size)) // read in full, or the request fails
		if err != nil {
			return fmt.Errorf("input %q: allocating %d bytes: %w", t.Name, size, err)
		}
		got, err := io.ReadFull(body, buf)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return badRequest(reasonBinary, "input %q: the body ends after %d of its %d binary bytes", t.Name, got, size)
			}
			return err
		}
		left -= size
		if t.DataType == inference.Bytes {
			strs, err := SplitBytesElements(buf, n)
			if err != nil {
				return badRequest(reasonBinary, "input %q: %v", t.Name, err)
			}
			t.Strings = strs
			continue
		}
		t.Data = buf
	}
	return nil
}

// SplitBytesElements splits a binary BYTES section (each element a 4-byte
// little-endian length then its bytes, the binary extension's and gRPC
// raw_input_contents' layout) into n elements that alias buf.
func SplitBytesElements(buf []byte, n int64) ([][]byte, error) {
	if int64(len(buf)) < 4*n {
		return nil, fmt.Errorf("%d bytes cannot hold %d BYTES elements", len(buf), n)
	}
	strs := make([][]byte, n)
	off := 0
	for i := range strs {
		if len(buf)-off < 4 {
			return nil, fmt.Errorf("BYTES element %d: section ends before its length", i)
		}
		l := binary.LittleEndian.Uint32(buf[off:])
		off += 4
		if uint64(l) > uint64(len(buf)-off) {
			return nil, fmt.Errorf("BYTES element %d: length %d is past the end of the section", i, l)
		}
		strs[i] = buf[off : off+int(l) : off+int(l)]
		off += int(l)
	}
	if off != len(buf) {
		return nil, fmt.Errorf("%d bytes left after %d BYTES elements", len(buf)-off, n)
	}
	return strs, nil
}

// bytesSectionSize is the binary size of BYTES elements.
func bytesSectionSize(strs [][]byte) int64 {
	n := int64(0)
	for _, s := range strs {
		n += 4 + int64(len(s))
	}
	return n
}
