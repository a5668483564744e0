package kserve

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/edgeai/edge-node/errdefs"
)

// Triton's repository control: POST /v2/repository/models/{m}/load and
// /unload.

// RepositoryController is implemented by a Backend that can load and
// unload models (the node, through its serving owner); with it, and
// Options.RepositoryControl, the handler serves Triton's load and unload.
// Errors wrap errdefs sentinels (an unknown model ErrNotFound, a rollout in
// the way ErrFailedPrecondition).
type RepositoryController interface {
	LoadModel(ctx context.Context, model string) error
	UnloadModel(ctx context.Context, model string) error
}

// maxRepositoryBody bounds a load or unload request body.
const maxRepositoryBody = 64 << 10

// repositoryRequest is the body of a load or unload request:
// {"parameters": {...}}, every member optional.
type repositoryRequest struct {
	Parameters map[string]json.RawMessage `json:"parameters"`
}

// decodeRepositoryRequest parses a load (unload false) or unload body.
// Accepted parameters: unload_dependents (a bool, unload only; the node
// has no ensembles, so it changes nothing). Triton's load parameters
// "config" and "file:..." (a model supplied in the request) are refused as
// unsupported: models reach the node through its store.
func decodeRepositoryRequest(body []byte, unload bool) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var req repositoryRequest
	if err := dec.Decode(&req); err != nil {
		return badRequest(reasonJSON, "invalid repository request: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest(reasonJSON, "invalid repository request: data after the JSON object")
	}
	for name, raw := range req.Parameters {
		switch {
		case name == "unload_dependents" && unload:
			var b bool
			if err := json.Unmarshal(raw, &b); err != nil {
				return badRequest(reasonJSON, "parameter unload_dependents: want true or false, got %s", raw)
			}
		case !unload && (name == "config" || strings.HasPrefix(name, "file:")):
			return &apiError{status: http.StatusNotImplemented, reason: reasonUnsupported,
				msg: fmt.Sprintf("load parameter %q is not supported: models reach the node through its store (admin API import or desired state)", name)}
		default:
			return badRequest(reasonJSON, "unknown repository request parameter %q", name)
		}
	}
	return nil
}

func (h *Handler) serveRepositoryLoad(w http.ResponseWriter, r *http.Request) {
	h.serveRepositoryControl(w, r, false)
}

func (h *Handler) serveRepositoryUnload(w http.ResponseWriter, r *http.Request) {
	h.serveRepositoryControl(w, r, true)
}

func (h *Handler) serveRepositoryControl(w http.ResponseWriter, r *http.Request, unload bool) {
	if !h.opts.RepositoryControl {
		h.writeError(w, r, toAPIError(fmt.Errorf("repository control is disabled on this node (repository_control: true in its config enables load and unload): %w", errdefs.ErrUnsupported)))
		return
	}
	if tok := h.opts.RepositoryToken; tok != "" {
		want := []byte("Bearer " + tok)
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="edge-node repository"`)
			h.writeError(w, r, &apiError{status: http.StatusUnauthorized, reason: reasonUnauthorized,
				msg: "repository load and unload need Authorization: Bearer <admin token>"})
			return
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRepositoryBody))
	if err != nil {
		h.writeError(w, r, toAPIError(err))
		return
	}
	if err := decodeRepositoryRequest(body, unload); err != nil {
		h.writeError(w, r, toAPIError(err))
		return
	}
	rc := h.backend.(RepositoryController)
	model := r.PathValue("model")
	if unload {
		err = rc.UnloadModel(r.Context(), model)
	} else {
		err = rc.LoadModel(r.Context(), model)
	}
	if err != nil {
		what := "load"
		if unload {
			what = "unload"
		}
		ae := toAPIError(err)
		ae.msg = fmt.Sprintf("failed to %s '%s': %s", what, model, ae.msg)
		h.writeError(w, r, ae)
		return
	}
	h.log.Info().Str("model", model).Bool("unload", unload).Msg("repository control")
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
}
