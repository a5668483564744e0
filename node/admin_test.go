package node

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/edgeai/edge-node/models"
)

// servedVersion infers silero_vad through the node (checking the numbers
// against a raw ONNX Runtime run: every variant computes the same) and
// returns the version that answered, after checking that the store agrees
// it is the Active one.
func servedVersion(t *testing.T, url string) string {
	t.Helper()
	v := inferAndCompare(t, url, "silero_vad", "silero_vad", sileroInputs())
	if mi := adminModel(t, url, "silero_vad"); mi.Active != v {
		t.Errorf("version %s answered but the store's Active is %q", v, mi.Active)
	}
	return v
}

// routedVersions is what /v2/models/silero_vad/versions/{v}/ready says for
// each version: which ones the router has loaded.
func routedVersions(t *testing.T, url string, versions ...string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, v := range versions {
		code, _, _ := call(t, "GET", url+"/v2/models/silero_vad/versions/"+v+"/ready", nil, nil)
		out[v] = code == http.StatusOK
	}
	return out
}

func adminCall(t *testing.T, method, url string, body []byte) (int, []byte) {
	t.Helper()
	code, _, b := call(t, method, url, nil, body)
	return code, b
}

// TestAdminVersionLifecycle drives one model through the admin API over
// HTTP: import with activation, activation of an older (still loaded)
// version, rollback to a loaded and to an unloaded Previous, re-activation
// of the Active version, and deletes. After every step the version that
// answers an infer is the store's Active one.
func TestAdminVersionLifecycle(t *testing.T) {
	repo := t.TempDir()
	addToRepo(t, repo, "silero_vad", "1", modelBytes(t, "silero_vad", ""))
	n := startNode(t, testConfig(t, t.TempDir(), repo))
	base := n.url + "/admin/models/silero_vad"

	code, body := adminCall(t, "GET", n.url+"/admin/models", nil)
	var list struct{ Models []models.ModelInfo }
	if code != 200 || json.Unmarshal(body, &list) != nil || len(list.Models) != 1 || list.Models[0].Name != "silero_vad" || list.Models[0].Active != "1" {
		t.Fatalf("GET /admin/models: %d %s", code, body)
	}

	// Import 2 and activate it in the same call.
	code, body = adminCall(t, "PUT", base+"/versions/2?activate=true", modelBytes(t, "silero_vad", "v2"))
	var vi models.VersionInfo
	if code != 200 || json.Unmarshal(body, &vi) != nil || vi.State != models.Active {
		t.Fatalf("PUT version 2?activate=true: %d %s", code, body)
	}
	if v := servedVersion(t, n.url); v != "2" {
		t.Fatalf("after importing 2: version %s serves", v)
	}
	code, _, body = call(t, "GET", n.url+"/v2/models/silero_vad", nil, nil)
	if code != 200 || !bytes.Contains(body, []byte(`"2"`)) {
		t.Errorf("model metadata after importing 2: %d %s", code, body)
	}

	// Activate 1, the Previous version, still loaded: one call.
	if code, body = adminCall(t, "POST", base+"/versions/1/activate", nil); code != 200 {
		t.Fatalf("activate 1: %d %s", code, body)
	}
	if v := servedVersion(t, n.url); v != "1" {
		t.Fatalf("after activating 1: version %s serves", v)
	}

	// Re-activating the Active version is a no-op, not an error.
	if code, body = adminCall(t, "POST", base+"/versions/1/activate", nil); code != 200 {
		t.Errorf("re-activate the Active version: %d %s", code, body)
	}

	// Import 3 without activation, then activate it: 1 is kept loaded as
	// the rollback target, 2 is unloaded.
	if code, body = adminCall(t, "PUT", base+"/versions/3", modelBytes(t, "silero_vad", "v3")); code != 200 {
		t.Fatalf("PUT version 3: %d %s", code, body)
	}
	if v := servedVersion(t, n.url); v != "1" {
		t.Fatalf("a plain import changed the served version to %s", v)
	}
	if code, body = adminCall(t, "POST", base+"/versions/3/activate", nil); code != 200 {
		t.Fatalf("activate 3: %d %s", code, body)
	}
	if v := servedVersion(t, n.url); v != "3" {
		t.Fatalf("after activating 3: version %s serves", v)
	}
	if r := routedVersions(t, n.url, "1", "2", "3"); !r["1"] || r["2"] || !r["3"] {
		t.Errorf("loaded versions after activating 3: %v, want 1 and 3", r)
	}

	// Rollback to 1 (loaded: instant); 3 is demoted and unloaded.
	if code, body = adminCall(t, "POST", base+"/rollback", nil); code != 200 {
		t.Fatalf("rollback: %d %s", code, body)
	}
	if v := servedVersion(t, n.url); v != "1" {
		t.Fatalf("after rollback: version %s serves", v)
	}
	if mi := adminModel(t, n.url, "silero_vad"); mi.Previous != "3" {
		t.Errorf("after rollback: Previous %q, want 3", mi.Previous)
	}
	// Rollback again: Previous (3) is no longer loaded, so it is reloaded.
	if code, body = adminCall(t, "POST", base+"/rollback", nil); code != 200 {
		t.Fatalf("rollback to an unloaded Previous: %d %s", code, body)
	}
	if v := servedVersion(t, n.url); v != "3" {
		t.Fatalf("after the second rollback: version %s serves", v)
	}

	// Deletes: the Active version is refused; a Retired one that is not
	// loaded (2) and the loaded rollback target (1) go.
	if code, body = adminCall(t, "DELETE", base+"/versions/3", nil); code != http.StatusConflict {
		t.Errorf("DELETE the Active version: %d %s, want 409", code, body)
	}
	for _, v := range []string{"2", "1"} {
		if code, body = adminCall(t, "DELETE", base+"/versions/"+v, nil); code != http.StatusNoContent {
			t.Fatalf("DELETE version %s: %d %s", v, code, body)
		}
		if _, ok := versionOf(adminModel(t, n.url, "silero_vad"), v); ok {
			t.Errorf("version %s still listed after DELETE", v)
		}
	}
	if r := routedVersions(t, n.url, "1", "3"); r["1"] || !r["3"] {
		t.Errorf("loaded versions after the deletes: %v, want only 3", r)
	}
	if v := servedVersion(t, n.url); v != "3" {
		t.Errorf("after the deletes: version %s serves", v)
	}
	if code, body = adminCall(t, "POST", base+"/rollback", nil); code != http.StatusNotFound {
		t.Errorf("rollback with no Previous: %d %s, want 404", code, body)
	}
}

// TestAdminRejects: bad names, unknown models and versions, and illegal
// moves get 4xx answers (and change nothing).
func TestAdminRejects(t *testing.T) {
	repo := t.TempDir()
	addToRepo(t, repo, "silero_vad", "1", modelBytes(t, "silero_vad", ""))
	n, logs := startNodeCapturing(t, testConfig(t, t.TempDir(), repo))
	model := modelBytes(t, "silero_vad", "")
	for _, tc := range []struct {
		name, method, path string
		body               []byte
		want               int
	}{
		{"bad model name on import", "PUT", "/admin/models/-bad/versions/1", model, 400},
		{"slash in version", "PUT", "/admin/models/silero_vad/versions/a%2Fb", model, 400},
		{"bad version on import", "PUT", "/admin/models/silero_vad/versions/_1", model, 400},
		{"space in version", "PUT", "/admin/models/silero_vad/versions/a%20b", model, 400},
		{"bad model name on get", "GET", "/admin/models/_x", nil, 400},
		{"bad model name on activate", "POST", "/admin/models/-x/versions/1/activate", nil, 400},
		{"bad version on delete", "DELETE", "/admin/models/silero_vad/versions/-1", nil, 400},
		{"bad model name on rollback", "POST", "/admin/models/.x/rollback", nil, 400},
		{"unknown model", "GET", "/admin/models/nope", nil, 404},
		{"activate unknown model", "POST", "/admin/models/nope/versions/1/activate", nil, 404},
		{"activate unknown version", "POST", "/admin/models/silero_vad/versions/9/activate", nil, 404},
		{"rollback unknown model", "POST", "/admin/models/nope/rollback", nil, 404},
		{"delete unknown version", "DELETE", "/admin/models/silero_vad/versions/9", nil, 404},
		{"delete the Active version", "DELETE", "/admin/models/silero_vad/versions/1", nil, 409},
		{"same version, other content", "PUT", "/admin/models/silero_vad/versions/1", modelBytes(t, "silero_vad", "other"), 409},
		{"bad config", "PUT", "/admin/models/silero_vad/versions/5?config=intra_op_threads:%20-1", model, 400},
		{"unknown route", "GET", "/admin/nothing", nil, 404},
		{"rollout of an unknown model", "GET", "/admin/models/nope/rollout", nil, 404},
		{"rollout wait not a duration", "GET", "/admin/models/silero_vad/rollout?wait=soon", nil, 400},
		{"rollout wait too long", "GET", "/admin/models/silero_vad/rollout?wait=11m", nil, 400},
		{"rollout wait negative", "GET", "/admin/models/silero_vad/rollout?wait=-1s", nil, 400},
		{"wrong method", "PATCH", "/admin/models/silero_vad", nil, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := adminCall(t, tc.method, n.url+tc.path, tc.body)
			if code != tc.want {
				t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, code, body, tc.want)
			}
			var e struct{ Error string }
			if json.Unmarshal(body, &e) != nil || e.Error == "" {
				t.Errorf("body %q is not {\"error\": ...}", body)
			}
		})
	}
	mi := adminModel(t, n.url, "silero_vad")
	if mi.Active != "1" || len(mi.Versions) != 1 {
		t.Errorf("the rejected calls changed the store: %+v", mi)
	}
	// A model file that ONNX Runtime cannot load is imported (the store
	// only hashes it) but its activation fails, and 1 keeps serving.
	code, body := adminCall(t, "PUT", n.url+"/admin/models/silero_vad/versions/6?activate=true", []byte("not an onnx model"))
	if code < 400 {
		t.Errorf("activating garbage: %d %s", code, body)
	}
	if v, _ := versionOf(adminModel(t, n.url, "silero_vad"), "6"); v.State != models.Failed || v.Reason != models.ReasonLoadError {
		t.Errorf("garbage version: %s(%s), want Failed(LoadError)", v.State, v.Reason)
	}
	if v := servedVersion(t, n.url); v != "1" {
		t.Errorf("after a failed activation version %s serves", v)
	}
	// The failed activation is logged once, with the reason the store
	// recorded; the refused calls above (the response says why) are not.
	if got := logs.lines(`"message":"activation by admin call failed"`); len(got) != 1 ||
		!strings.Contains(got[0], `"version":"6"`) || !strings.Contains(got[0], `"reason":"`+string(models.ReasonLoadError)+`"`) {
		t.Errorf("failed activation logged as %q, want one line for version 6 with reason %s", got, models.ReasonLoadError)
	}
}

// TestAdminTokenAndBodyLimit: with a token configured every admin call needs
// it; an import body over max_request_bytes gets 413 and stores nothing.
func TestAdminTokenAndBodyLimit(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "")
	cfg.AdminToken = "s3cret"
	cfg.MaxRequestBytes = 1 << 20
	n := startNode(t, cfg)
	for _, h := range []http.Header{nil, {"Authorization": {"Bearer wrong"}}, {"Authorization": {"s3cret"}}} {
		code, hdr, body := call(t, "GET", n.url+"/admin/models", h, nil)
		if code != http.StatusUnauthorized || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("Authorization %q: %d %s, want 401 with WWW-Authenticate", h.Get("Authorization"), code, body)
		}
	}
	auth := http.Header{"Authorization": {"Bearer s3cret"}}
	if code, _, body := call(t, "GET", n.url+"/admin/models", auth, nil); code != 200 {
		t.Errorf("with the token: %d %s", code, body)
	}
	// The KServe API is not behind the admin token.
	if code, _, _ := call(t, "GET", n.url+"/v2/health/ready", nil, nil); code != 200 {
		t.Errorf("/v2/health/ready without a token: %d", code)
	}
	big := modelBytes(t, "silero_vad", "") // 1.8 MB > 1 MiB
	code, _, body := call(t, "PUT", n.url+"/admin/models/silero_vad/versions/1", auth, big)
	if code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversize import: %d %s, want 413", code, body)
	}
	if code, _, body := call(t, "GET", n.url+"/admin/models/silero_vad", auth, nil); code != http.StatusNotFound {
		t.Errorf("the oversize import left a model: %d %s", code, body)
	}
	ok := modelBytes(t, "ppocr_cls", "") // 0.6 MB
	if code, _, body := call(t, "PUT", n.url+"/admin/models/ppocr_cls/versions/1?activate=true", auth, ok); code != 200 {
		t.Fatalf("import under the limit: %d %s", code, body)
	}
	if v := inferAndCompare(t, n.url, "ppocr_cls", "ppocr_cls", clsInput()); v != "1" {
		t.Errorf("imported model answered as version %q", v)
	}
}

// TestAdminConcurrentVersionChanges: activations and rollbacks racing each
// other end with the router serving exactly the store's Active version, and
// nothing loaded besides Active and Previous. (Each call is a store
// transition then a router change; the node serialises them.)
func TestAdminConcurrentVersionChanges(t *testing.T) {
	repo := t.TempDir()
	addToRepo(t, repo, "silero_vad", "1", modelBytes(t, "silero_vad", ""))
	n := startNode(t, testConfig(t, t.TempDir(), repo))
	base := n.url + "/admin/models/silero_vad"
	for _, v := range []string{"2", "3", "4"} {
		if code, body := adminCall(t, "PUT", base+"/versions/"+v, modelBytes(t, "silero_vad", "v"+v)); code != 200 {
			t.Fatalf("PUT %s: %d %s", v, code, body)
		}
	}
	calls := []string{"/versions/2/activate", "/versions/3/activate", "/rollback", "/versions/4/activate", "/versions/1/activate", "/rollback"}
	for round := range 3 {
		codes := make(chan string, len(calls))
		for _, c := range calls {
			go func() {
				req, _ := http.NewRequest("POST", base+c, nil)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					codes <- c + ": " + err.Error()
					return
				}
				resp.Body.Close()
				codes <- c + ": " + resp.Status
			}()
		}
		for range calls {
			s := <-codes
			// A rollback may find no Previous (404) or race into an
			// illegal move (409); activations of imported versions succeed.
			if strings.Contains(s, "activate") && !strings.HasSuffix(s, "200 OK") {
				t.Errorf("round %d: %s", round, s)
			}
		}
		active := servedVersion(t, n.url) // the infer's version is the store's Active
		mi := adminModel(t, n.url, "silero_vad")
		for v, loaded := range routedVersions(t, n.url, "1", "2", "3", "4") {
			if loaded && v != mi.Active && v != mi.Previous {
				t.Errorf("round %d: version %s loaded; Active %s, Previous %s", round, v, mi.Active, mi.Previous)
			}
		}
		if active != mi.Active {
			t.Errorf("round %d: %s serves, store Active %s", round, active, mi.Active)
		}
	}
}
