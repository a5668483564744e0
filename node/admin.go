package node

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/errdefs"
	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/models"
)

// newAdminHandler serves the node's admin API (separate from the KServe
// endpoints). With a token configured every call needs
// "Authorization: Bearer <token>".
//
//	GET    /admin/models                                   models, versions, states, reasons
//	GET    /admin/models/{model}                           one model
//	PUT    /admin/models/{model}/versions/{version}        import the body (an .onnx file) as a version
//	POST   /admin/models/{model}/versions/{version}/activate   load, warm up and serve exactly this version
//	POST   /admin/models/{model}/versions/{version}/rollout    start a rollout (body: models.Strategy JSON; empty = immediate)
//	DELETE /admin/models/{model}/rollout                   abort a running or held rollout (candidate retired)
//	POST   /admin/models/{model}/rollback                  serve the Previous version again
//	DELETE /admin/models/{model}/versions/{version}        delete a version (not the Active one)
//	POST   /admin/gc                                       collect unreferenced versions and blobs
func newAdminHandler(n *Node, token string, log zerolog.Logger) http.Handler {
	a := &admin{n: n, token: token, log: log.With().Str("component", "admin").Logger()}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/models", a.listModels)
	mux.HandleFunc("GET /admin/models/{model}", a.getModel)
	mux.HandleFunc("PUT /admin/models/{model}/versions/{version}", a.importVersion)
	mux.HandleFunc("POST /admin/models/{model}/versions/{version}/activate", a.activate)
	mux.HandleFunc("POST /admin/models/{model}/versions/{version}/rollout", a.startRollout)
	mux.HandleFunc("DELETE /admin/models/{model}/rollout", a.abortRollout)
	mux.HandleFunc("POST /admin/models/{model}/rollback", a.rollback)
	mux.HandleFunc("DELETE /admin/models/{model}/versions/{version}", a.deleteVersion)
	mux.HandleFunc("POST /admin/gc", a.gc)
	mux.HandleFunc("/admin/", func(w http.ResponseWriter, r *http.Request) {
		adminError(w, http.StatusNotFound, fmt.Errorf("no admin route for %s %s", r.Method, r.URL.Path))
	})
	return a.auth(mux)
}

type admin struct {
	n     *Node
	token string
	log   zerolog.Logger
}

func (a *admin) auth(next http.Handler) http.Handler {
	if a.token == "" {
		return next
	}
	want := []byte("Bearer " + a.token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="edge-node admin"`)
			adminError(w, http.StatusUnauthorized, errors.New("admin API needs Authorization: Bearer <admin token>"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (a *admin) listModels(w http.ResponseWriter, r *http.Request) {
	ms, err := a.n.store.Models(r.Context())
	if err != nil {
		adminError(w, statusOf(err), err)
		return
	}
	ros, err := a.n.Rollouts(r.Context())
	if err != nil {
		adminError(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"models": ms, "rollouts": ros})
}

// startRollout starts an on-device rollout and answers 202 with its
// record; GET /admin/models shows its progress.
func (a *admin) startRollout(w http.ResponseWriter, r *http.Request) {
	model, version := r.PathValue("model"), r.PathValue("version")
	body, err := io.ReadAll(io.LimitReader(r.Body, models.MaxStrategyBytes+1))
	if err != nil {
		adminError(w, http.StatusBadRequest, fmt.Errorf("reading the strategy: %w", err))
		return
	}
	var s models.Strategy
	if len(bytes.TrimSpace(body)) > 0 {
		if s, err = models.DecodeStrategy(body); err != nil {
			adminError(w, http.StatusBadRequest, err)
			return
		}
	}
	if err := a.n.Rollout(r.Context(), model, version, s); err != nil {
		adminError(w, statusOf(err), err)
		return
	}
	ro, err := a.n.store.Rollout(r.Context(), model)
	if err != nil {
		adminError(w, statusOf(err), err)
		return
	}
	a.log.Info().Str("model", model).Str("version", version).Str("strategy", string(ro.Strategy.Kind)).Msg("rollout started by admin call")
	writeJSON(w, http.StatusAccepted, ro)
}

func (a *admin) abortRollout(w http.ResponseWriter, r *http.Request) {
	ro, err := a.n.AbortRollout(r.Context(), r.PathValue("model"), "aborted by an admin call")
	if err != nil {
		adminError(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, ro)
}

func (a *admin) getModel(w http.ResponseWriter, r *http.Request) {
	model, _, ok := pathNames(w, r, false)
	if !ok {
		return
	}
	m, err := a.n.store.Model(r.Context(), model)
	if err != nil {
		adminError(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, m)
}

// importVersion streams the body into a temporary file beside the store (so
// the store's rename stays on one file system), then imports it. The body is
// bounded by the node's max request size. ?activate=true also activates it.
func (a *admin) importVersion(w http.ResponseWriter, r *http.Request) {
	model, version, ok := pathNames(w, r, true)
	if !ok {
		return
	}
	dir := filepath.Join(a.n.cfg.DataDir, "upload")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		adminError(w, http.StatusInternalServerError, err)
		return
	}
	f, err := os.CreateTemp(dir, "import-*.onnx")
	if err != nil {
		adminError(w, http.StatusInternalServerError, err)
		return
	}
	defer os.Remove(f.Name())
	_, err = io.Copy(f, http.MaxBytesReader(w, r.Body, a.n.cfg.MaxRequestBytes))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			adminError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("model file is larger than %d bytes", tooBig.Limit))
			return
		}
		adminError(w, http.StatusBadRequest, fmt.Errorf("reading the model file: %w", err))
		return
	}
	var cfg []byte
	if c := r.URL.Query().Get("config"); c != "" {
		cfg = []byte(c)
	}
	v, err := a.n.store.Import(r.Context(), models.ImportRequest{Model: model, Version: version, ModelFile: f.Name(), Config: cfg})
	if err != nil {
		adminError(w, statusOf(err), err)
		return
	}
	if r.URL.Query().Get("activate") == "true" {
		if err := a.n.activate(r.Context(), model, version); err != nil {
			adminError(w, statusOf(err), err)
			return
		}
		v, _ = a.n.store.Version(r.Context(), model, version)
	}
	a.log.Info().Str("model", model).Str("version", version).Str("state", string(v.State)).Msg("imported")
	writeJSON(w, http.StatusOK, v)
}

func (a *admin) activate(w http.ResponseWriter, r *http.Request) {
	model, version, ok := pathNames(w, r, true)
	if !ok {
		return
	}
	if err := a.n.activate(r.Context(), model, version); err != nil {
		adminError(w, statusOf(err), err)
		return
	}
	v, err := a.n.store.Version(r.Context(), model, version)
	if err != nil {
		adminError(w, statusOf(err), err)
		return
	}
	a.log.Info().Str("model", model).Str("version", version).Msg("activated by admin call")
	writeJSON(w, http.StatusOK, v)
}

func (a *admin) rollback(w http.ResponseWriter, r *http.Request) {
	model, _, ok := pathNames(w, r, false)
	if !ok {
		return
	}
	v, err := a.n.rollback(r.Context(), model)
	if err != nil {
		adminError(w, statusOf(err), err)
		return
	}
	a.log.Info().Str("model", v.Model).Str("version", v.Version).Msg("rolled back by admin call")
	writeJSON(w, http.StatusOK, v)
}

func (a *admin) deleteVersion(w http.ResponseWriter, r *http.Request) {
	model, version, ok := pathNames(w, r, true)
	if !ok {
		return
	}
	if err := a.n.deleteVersion(r.Context(), model, version); err != nil {
		adminError(w, statusOf(err), err)
		return
	}
	a.log.Info().Str("model", model).Str("version", version).Msg("deleted by admin call")
	w.WriteHeader(http.StatusNoContent)
}

func (a *admin) gc(w http.ResponseWriter, r *http.Request) {
	st, err := a.n.store.GC(r.Context())
	if err != nil {
		adminError(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// rollback makes the model's Previous version Active again. When it is still
// loaded (the usual case) the switch is instant; otherwise it is reloaded
// from the store first. The demoted version is unloaded.
func (n *Node) rollback(ctx context.Context, model string) (models.VersionInfo, error) {
	n.lifecycleMu.Lock()
	defer n.lifecycleMu.Unlock()
	l := n.engine.loader()
	defer l.discard()
	mi, err := n.store.Model(ctx, model)
	if err != nil {
		return models.VersionInfo{}, err
	}
	opts := models.RollbackOptions{}
	if mi.Previous == "" || !n.engine.routed(model, mi.Previous) {
		opts.Loader = l
	}
	v, err := n.store.Rollback(ctx, model, opts)
	if err != nil {
		return v, err
	}
	if err := n.engine.promote(l.take(), v); err != nil {
		return v, err
	}
	// The demoted version is Retired (or Failed) in the store: stop routing to it.
	if mi.Active != "" && mi.Active != v.Version {
		if err := n.engine.remove(model, mi.Active); err != nil && !errors.Is(err, inference.ErrNotFound) {
			n.log.Warn().Err(err).Str("model", model).Str("version", mi.Active).Msg("unloading the demoted version")
		}
	}
	return v, nil
}

// deleteVersion removes a version from the store and, if it was still
// loaded (the rollback target), unloads it once its in-flight requests
// finish. The store refuses the Active version (models.ErrInUse).
func (n *Node) deleteVersion(ctx context.Context, model, version string) error {
	n.lifecycleMu.Lock()
	defer n.lifecycleMu.Unlock()
	if err := n.store.Delete(ctx, model, version); err != nil {
		return err
	}
	if err := n.engine.remove(model, version); err != nil && !errors.Is(err, inference.ErrNotFound) {
		n.log.Warn().Err(err).Str("model", model).Str("version", version).Msg("unloading a deleted version")
	}
	return nil
}

// statusOf maps store and engine errors to HTTP status codes: the one
// mapper, errdefs.HTTPStatus (the table in package models' doc).
func statusOf(err error) int { return errdefs.HTTPStatus(err) }

// pathNames returns the {model} (and {version}) path values, answering 400
// and returning ok false when one is not a legal name.
func pathNames(w http.ResponseWriter, r *http.Request, withVersion bool) (model, version string, ok bool) {
	model = r.PathValue("model")
	err := models.ValidModelName(model)
	if withVersion {
		version = r.PathValue("version")
		err = errors.Join(err, models.ValidVersion(version))
	}
	if err != nil {
		adminError(w, http.StatusBadRequest, err)
		return "", "", false
	}
	return model, version, true
}

func adminError(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}

// writeJSON answers v as JSON with status (the KServe handler, now in
// node/kserve, keeps its own).
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil { // only our own plain types are marshalled
		status, b = http.StatusInternalServerError, []byte(`{"error":"encoding the response failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
