// Package admin is the node's admin API (GET/PUT/POST/DELETE under
// /admin/): import, activate, roll back, roll out, abort, delete, release
// an override, and GC. It is a face of the serving owner only: every change
// is a call to the small Owner interface below, which node/serving's Owner
// implements; the admin API never touches the store or the router itself.
// Errors map to HTTP statuses through the one mapper, errdefs.HTTPStatus.
package admin

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
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/errdefs"
	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/node/serving"
)

// Owner is what the admin API needs from the serving owner.
type Owner interface {
	Models(ctx context.Context) ([]models.ModelInfo, error)
	Model(ctx context.Context, name string) (models.ModelInfo, error)
	Version(ctx context.Context, model, version string) (models.VersionInfo, error)
	Rollouts(ctx context.Context) ([]serving.RolloutStatus, error)
	Import(ctx context.Context, req models.ImportRequest, activate bool) (models.VersionInfo, error)
	Activate(ctx context.Context, model, version string, a serving.Admin) (models.VersionInfo, error)
	Rollback(ctx context.Context, model string, a serving.Admin) (models.VersionInfo, error)
	ClearOverride(ctx context.Context, model string) error
	StartRollout(ctx context.Context, model, version string, s models.Strategy, a serving.Admin) error
	AbortRollout(ctx context.Context, model, reason string) (models.Rollout, error)
	Rollout(ctx context.Context, model string) (models.Rollout, error)
	WaitRollout(ctx context.Context, model string) (models.Rollout, error)
	Delete(ctx context.Context, model, version string) error
	GC(ctx context.Context) (models.GCStats, error)
}

// Config configures the admin API.
type Config struct {
	// Token, when set, is required as "Authorization: Bearer <token>".
	Token string
	// UploadDir holds imports in progress; it must be on the store's file
	// system (the import renames into the store).
	UploadDir string
	// MaxUploadBytes bounds an imported model file.
	MaxUploadBytes int64
}

// New serves the node's admin API (separate from the KServe endpoints).
// Activate, rollback and rollout are local operator decisions: each is
// recorded as the model's override, which holds against desired state
// until a newer desired generation names the model (DELETE
// .../override hands it back at once). While a rollout of another version
// runs they answer 409 naming it, unless ?abort_rollout=true.
//
//	GET    /admin/models                                   models, versions, states, reasons
//	GET    /admin/models/{model}                           one model
//	PUT    /admin/models/{model}/versions/{version}        import the body (an .onnx file) as a version
//	POST   /admin/models/{model}/versions/{version}/activate   load, warm up and serve exactly this version
//	POST   /admin/models/{model}/versions/{version}/rollout    start a rollout (body: models.Strategy JSON; empty = immediate)
//	GET    /admin/models/{model}/rollout[?wait=DURATION]   the latest rollout; with wait, once it ended (or the wait passed)
//	DELETE /admin/models/{model}/rollout                   abort a running or held rollout (candidate retired)
//	POST   /admin/models/{model}/rollback                  serve the Previous version again
//	DELETE /admin/models/{model}/override                  hand the model back to desired state
//	DELETE /admin/models/{model}/versions/{version}        delete a version (not the Active one)
//	POST   /admin/gc                                       collect unreferenced versions and blobs
func New(o Owner, cfg Config, log zerolog.Logger) http.Handler {
	a := &admin{o: o, cfg: cfg, log: log.With().Str("component", "admin").Logger()}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/models", a.listModels)
	mux.HandleFunc("GET /admin/models/{model}", a.getModel)
	mux.HandleFunc("PUT /admin/models/{model}/versions/{version}", a.importVersion)
	mux.HandleFunc("POST /admin/models/{model}/versions/{version}/activate", a.activate)
	mux.HandleFunc("POST /admin/models/{model}/versions/{version}/rollout", a.startRollout)
	mux.HandleFunc("GET /admin/models/{model}/rollout", a.getRollout)
	mux.HandleFunc("DELETE /admin/models/{model}/rollout", a.abortRollout)
	mux.HandleFunc("POST /admin/models/{model}/rollback", a.rollback)
	mux.HandleFunc("DELETE /admin/models/{model}/override", a.clearOverride)
	mux.HandleFunc("DELETE /admin/models/{model}/versions/{version}", a.deleteVersion)
	mux.HandleFunc("POST /admin/gc", a.gc)
	mux.HandleFunc("/admin/", func(w http.ResponseWriter, r *http.Request) {
		adminError(w, http.StatusNotFound, fmt.Errorf("no admin route for %s %s", r.Method, r.URL.Path))
	})
	return a.auth(mux)
}

type admin struct {
	o   Owner
	cfg Config
	log zerolog.Logger
}

// adminOpts reads ?abort_rollout=true.
func adminOpts(r *http.Request) serving.Admin {
	return serving.Admin{AbortRollout: r.URL.Query().Get("abort_rollout") == "true"}
}

func (a *admin) auth(next http.Handler) http.Handler {
	if a.cfg.Token == "" {
		return next
	}
	want := []byte("Bearer " + a.cfg.Token)
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
	ms, err := a.o.Models(r.Context())
	if err != nil {
		adminError(w, errdefs.HTTPStatus(err), err)
		return
	}
	ros, err := a.o.Rollouts(r.Context())
	if err != nil {
		adminError(w, errdefs.HTTPStatus(err), err)
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
	if err := a.o.StartRollout(r.Context(), model, version, s, adminOpts(r)); err != nil {
		adminError(w, errdefs.HTTPStatus(err), err)
		return
	}
	ro, err := a.o.Rollout(r.Context(), model)
	if err != nil {
		adminError(w, errdefs.HTTPStatus(err), err)
		return
	}
	a.log.Info().Str("model", model).Str("version", version).Str("strategy", string(ro.Strategy.Kind)).Msg("rollout started by admin call")
	writeJSON(w, http.StatusAccepted, ro)
}

// maxRolloutWait bounds ?wait= on GET .../rollout.
const maxRolloutWait = 10 * time.Minute

// getRollout answers the model's latest rollout record. With ?wait=D (a Go
// duration, at most maxRolloutWait) it first waits up to D for a running
// rollout to end — what a script that started one waits on. The record
// says whether it ended (phase).
func (a *admin) getRollout(w http.ResponseWriter, r *http.Request) {
	model, _, ok := pathNames(w, r, false)
	if !ok {
		return
	}
	if q := r.URL.Query().Get("wait"); q != "" {
		d, err := time.ParseDuration(q)
		if err != nil || d < 0 || d > maxRolloutWait {
			adminError(w, http.StatusBadRequest, fmt.Errorf("wait %q: want a duration from 0s to %v", q, maxRolloutWait))
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), d)
		_, err = a.o.WaitRollout(ctx, model)
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			adminError(w, errdefs.HTTPStatus(err), err)
			return
		}
	}
	ro, err := a.o.Rollout(r.Context(), model)
	if err != nil {
		adminError(w, errdefs.HTTPStatus(err), err)
		return
	}
	writeJSON(w, http.StatusOK, ro)
}

func (a *admin) abortRollout(w http.ResponseWriter, r *http.Request) {
	ro, err := a.o.AbortRollout(r.Context(), r.PathValue("model"), "aborted by an admin call")
	if err != nil {
		adminError(w, errdefs.HTTPStatus(err), err)
		return
	}
	writeJSON(w, http.StatusOK, ro)
}

func (a *admin) getModel(w http.ResponseWriter, r *http.Request) {
	model, _, ok := pathNames(w, r, false)
	if !ok {
		return
	}
	m, err := a.o.Model(r.Context(), model)
	if err != nil {
		adminError(w, errdefs.HTTPStatus(err), err)
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
	dir := a.cfg.UploadDir
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
	_, err = io.Copy(f, http.MaxBytesReader(w, r.Body, a.cfg.MaxUploadBytes))
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
	activate := r.URL.Query().Get("activate") == "true"
	v, err := a.o.Import(r.Context(), models.ImportRequest{Model: model, Version: version, ModelFile: f.Name(), Config: cfg}, activate)
	if err != nil {
		if activate {
			a.activationFailed(r.Context(), "import", model, version, err)
		}
		adminError(w, errdefs.HTTPStatus(err), err)
		return
	}
	a.log.Info().Str("model", model).Str("version", version).Str("state", string(v.State)).Msg("imported")
	writeJSON(w, http.StatusOK, v)
}

func (a *admin) activate(w http.ResponseWriter, r *http.Request) {
	model, version, ok := pathNames(w, r, true)
	if !ok {
		return
	}
	v, err := a.o.Activate(r.Context(), model, version, adminOpts(r))
	if err != nil {
		a.activationFailed(r.Context(), "activate", model, version, err)
		adminError(w, errdefs.HTTPStatus(err), err)
		return
	}
	a.log.Info().Str("model", model).Str("version", version).Msg("activated by admin call")
	writeJSON(w, http.StatusOK, v)
}

// activationFailed logs a failed activation once, with the reason and
// detail the store recorded when it failed the version (LoadError,
// WarmupFailed, ...), or the error when the node could not carry it out
// (5xx). A refused call (unknown version, a rollout in the way: 4xx and the
// version not Failed) is not logged: its response says why.
func (a *admin) activationFailed(ctx context.Context, call, model, version string, err error) {
	ev := a.log.Warn().Err(err).Str("call", call).Str("model", model).Str("version", version)
	if v, verr := a.o.Version(context.WithoutCancel(ctx), model, version); verr == nil && v.State == models.Failed {
		ev = ev.Str("reason", string(v.Reason)).Str("detail", v.Detail)
	} else if errdefs.HTTPStatus(err) < http.StatusInternalServerError {
		return
	}
	ev.Msg("activation by admin call failed")
}

func (a *admin) rollback(w http.ResponseWriter, r *http.Request) {
	model, _, ok := pathNames(w, r, false)
	if !ok {
		return
	}
	v, err := a.o.Rollback(r.Context(), model, adminOpts(r))
	if err != nil {
		adminError(w, errdefs.HTTPStatus(err), err)
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
	if err := a.o.Delete(r.Context(), model, version); err != nil {
		adminError(w, errdefs.HTTPStatus(err), err)
		return
	}
	a.log.Info().Str("model", model).Str("version", version).Msg("deleted by admin call")
	w.WriteHeader(http.StatusNoContent)
}

func (a *admin) gc(w http.ResponseWriter, r *http.Request) {
	st, err := a.o.GC(r.Context())
	if err != nil {
		adminError(w, errdefs.HTTPStatus(err), err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (a *admin) clearOverride(w http.ResponseWriter, r *http.Request) {
	model, _, ok := pathNames(w, r, false)
	if !ok {
		return
	}
	if err := a.o.ClearOverride(r.Context(), model); err != nil {
		adminError(w, errdefs.HTTPStatus(err), err)
		return
	}
	a.log.Info().Str("model", model).Msg("override cleared by admin call: desired state governs the model again")
	w.WriteHeader(http.StatusNoContent)
}

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
	writeJSON(w, status, map[string]string{"error": err.Error()})
}

// writeJSON answers with v as JSON (admin bodies are small and our own).
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
