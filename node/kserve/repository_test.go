package kserve

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/edgeai/edge-node/errdefs"
)

// controlBackend records load and unload calls on top of the router
// backend; what they mean is serving.Owner's (tested there and against the
// real node); here it is the HTTP side: routing, auth, bodies, errors.
type controlBackend struct {
	routerBackend
	calls []string
}

func (b *controlBackend) LoadModel(_ context.Context, model string) error {
	return b.control("load", model)
}

func (b *controlBackend) UnloadModel(_ context.Context, model string) error {
	return b.control("unload", model)
}

func (b *controlBackend) control(what, model string) error {
	switch model {
	case "nope":
		return errdefs.Sentinel(errdefs.ErrNotFound, "model \"nope\" is not in the store")
	case "rolling":
		return fmt.Errorf("%s of rolling: a rollout of version 2 is running: %w", what, errdefs.ErrFailedPrecondition)
	}
	b.calls = append(b.calls, what+" "+model)
	return nil
}

func TestRepositoryControl(t *testing.T) {
	b := &controlBackend{routerBackend: newRouterBackend(t)}
	off, _ := newTestHandler(t, b, nil)
	on, _ := newTestHandler(t, b, func(o *Options) { o.RepositoryControl = true })
	tok, _ := newTestHandler(t, b, func(o *Options) { o.RepositoryControl, o.RepositoryToken = true, "s3cret" })
	bearer := http.Header{"Authorization": {"Bearer s3cret"}}
	for _, tc := range []struct {
		name   string
		h      http.Handler
		path   string
		header http.Header
		body   string
		status int
		msg    string
		call   string
	}{
		{"disabled", off, "/v2/repository/models/silero_vad/unload", nil, "", 501, "repository control is disabled", ""},
		{"unload", on, "/v2/repository/models/silero_vad/unload", nil, "", 200, "", "unload silero_vad"},
		{"load", on, "/v2/repository/models/silero_vad/load", nil, `{}`, 200, "", "load silero_vad"},
		{"unload_dependents", on, "/v2/repository/models/silero_vad/unload", nil, `{"parameters":{"unload_dependents":true}}`, 200, "", "unload silero_vad"},
		{"unknown model", on, "/v2/repository/models/nope/load", nil, "", 404, `failed to load 'nope': model "nope" is not in the store`, ""},
		{"rollout in the way", on, "/v2/repository/models/rolling/unload", nil, "", 409, "failed to unload 'rolling': unload of rolling: a rollout of version 2 is running", ""},
		{"no token", tok, "/v2/repository/models/silero_vad/unload", nil, "", 401, "Authorization: Bearer", ""},
		{"wrong token", tok, "/v2/repository/models/silero_vad/unload", http.Header{"Authorization": {"Bearer nope"}}, "", 401, "Authorization: Bearer", ""},
		{"token", tok, "/v2/repository/models/silero_vad/unload", bearer, "", 200, "", "unload silero_vad"},
		{"config parameter", on, "/v2/repository/models/silero_vad/load", nil, `{"parameters":{"config":"{}"}}`, 501, `load parameter "config" is not supported`, ""},
		{"file parameter", on, "/v2/repository/models/silero_vad/load", nil, `{"parameters":{"file:1/model.onnx":"AAAA"}}`, 501, `"file:1/model.onnx" is not supported`, ""},
		{"unload_dependents on load", on, "/v2/repository/models/silero_vad/load", nil, `{"parameters":{"unload_dependents":true}}`, 400, `unknown repository request parameter "unload_dependents"`, ""},
		{"unload_dependents not a bool", on, "/v2/repository/models/silero_vad/unload", nil, `{"parameters":{"unload_dependents":"yes"}}`, 400, "want true or false", ""},
		{"unknown member", on, "/v2/repository/models/silero_vad/load", nil, `{"params":{}}`, 400, "invalid repository request", ""},
		{"not JSON", on, "/v2/repository/models/silero_vad/load", nil, `load`, 400, "invalid repository request", ""},
		{"trailing data", on, "/v2/repository/models/silero_vad/load", nil, `{}}`, 400, "data after the JSON object", ""},
		{"body over 64 KiB", on, "/v2/repository/models/silero_vad/load", nil, `{"parameters":{}}` + strings.Repeat(" ", 65<<10), 413, "larger than the limit of 65536", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b.calls = nil
			w := do(tc.h, "POST", tc.path, tc.header, []byte(tc.body))
			if w.Code != tc.status {
				t.Fatalf("status %d %s, want %d", w.Code, w.Body, tc.status)
			}
			if tc.msg != "" {
				var e struct{ Error string }
				if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || !strings.Contains(e.Error, tc.msg) {
					t.Fatalf("error %q, want it to contain %q", w.Body, tc.msg)
				}
			}
			if got := strings.Join(b.calls, ","); got != tc.call {
				t.Errorf("backend calls %q, want %q", got, tc.call)
			}
		})
	}
	if w := do(on, "GET", "/v2/repository/models/silero_vad/load", nil, nil); w.Code != 405 {
		t.Errorf("GET on load: %d", w.Code)
	}
}

// FuzzDecodeRepositoryRequest: any body is accepted or refused with a 4xx
// or 501 apiError, never a panic.
func FuzzDecodeRepositoryRequest(f *testing.F) {
	for _, s := range []string{"", "{}", `{"parameters":{"unload_dependents":true}}`, `{"parameters":{"config":"{}"}}`,
		`{"parameters":{"file:1/model.onnx":"AAAA"}}`, `{"parameters":null}`, `[]`, `{"parameters":{"unload_dependents":1}}`, `{}{}`} {
		f.Add([]byte(s), true)
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, body []byte, unload bool) {
		err := decodeRepositoryRequest(body, unload)
		if err == nil {
			return
		}
		ae, ok := err.(*apiError)
		if !ok || (ae.status != 400 && ae.status != 501) || ae.msg == "" {
			t.Fatalf("%q: %v (%T)", body, err, err)
		}
	})
}
