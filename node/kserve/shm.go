package kserve

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/node/kserve/sysshm"
)

// Triton's system shared-memory extension over REST: register, unregister
// and status of regions (node/kserve/sysshm), and tensors that name one.

// maxShmBody bounds a register request body.
const maxShmBody = 64 << 10

// shmRegisterRequest is POST /v2/systemsharedmemory/region/{r}/register.
type shmRegisterRequest struct {
	Key      *string `json:"key"`
	Offset   uint64  `json:"offset"`
	ByteSize *uint64 `json:"byte_size"`
}

// decodeShmRegister parses a register body strictly: key and byte_size
// are required, offset defaults to 0, nothing else is allowed.
func decodeShmRegister(body []byte) (key string, offset, size uint64, err error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var req shmRegisterRequest
	if err := dec.Decode(&req); err != nil {
		return "", 0, 0, badRequest(reasonJSON, "invalid shared memory register request: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", 0, 0, badRequest(reasonJSON, "invalid shared memory register request: data after the JSON object")
	}
	if req.Key == nil || req.ByteSize == nil {
		return "", 0, 0, badRequest(reasonJSON, "shared memory register request needs \"key\" and \"byte_size\"")
	}
	return *req.Key, req.Offset, *req.ByteSize, nil
}

func (h *Handler) serveShmRegister(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxShmBody))
	if err != nil {
		h.writeError(w, r, toAPIError(err))
		return
	}
	key, offset, size, err := decodeShmRegister(body)
	if err == nil {
		err = h.opts.SharedMemory.Register(r.PathValue("region"), key, offset, size)
	}
	if err != nil {
		h.writeError(w, r, toAPIError(err))
		return
	}
	writeEmptyOK(w)
}

func (h *Handler) serveShmUnregister(w http.ResponseWriter, r *http.Request) {
	if err := h.opts.SharedMemory.Unregister(r.PathValue("region")); err != nil {
		h.writeError(w, r, toAPIError(err))
		return
	}
	writeEmptyOK(w)
}

func (h *Handler) serveShmStatus(w http.ResponseWriter, r *http.Request) {
	st, err := h.opts.SharedMemory.Status(r.PathValue("region"))
	if err != nil {
		h.writeError(w, r, toAPIError(err))
		return
	}
	if st == nil {
		st = []sysshm.Status{}
	}
	writeJSON(w, http.StatusOK, st)
}

func writeEmptyOK(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
}

// writeShmOutputs writes each output that names a shared-memory region
// into its window (one copy: ONNX Runtime wrote the output into the
// request's buffers first) and returns the region per output ("" for the
// others), whose binary flag it clears. The window must hold the output.
func (h *Handler) writeShmOutputs(req *inferRequest, outs []inference.Tensor, binaryOut []bool, releases *[]func()) ([]string, error) {
	var shm []string
	for i := range outs {
		for _, o := range req.outputs {
			if o.name != outs[i].Name || !o.shm.set {
				continue
			}
			t := &outs[i]
			size := RawSize(t)
			if size > o.shm.size {
				return nil, badRequest(reasonOutput, "output %q needs %d bytes but its shared_memory_byte_size is %d", t.Name, size, o.shm.size)
			}
			b, release, err := h.opts.SharedMemory.Acquire(o.shm.region, uint64(o.shm.offset), uint64(o.shm.size))
			if err != nil {
				return nil, fmt.Errorf("output %q: %w", t.Name, err)
			}
			*releases = append(*releases, release)
			PutRaw(b, t)
			if shm == nil {
				shm = make([]string, len(outs))
			}
			shm[i], binaryOut[i] = o.shm.region, false
		}
	}
	return shm, nil
}
