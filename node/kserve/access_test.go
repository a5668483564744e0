package kserve

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/internal/logtest"
)

// TestAccessLog: with access_every N, every Nth request gets one info line
// with its request id, method, path, status, bytes out and a duration as a
// string; with 0 only rejected requests are logged. Every line's keys are
// unique (a JSON decoder keeps the last of a duplicate).
func TestAccessLog(t *testing.T) {
	for _, tc := range []struct {
		every       uint32
		requests    int
		wantEntries int
	}{
		{0, 4, 0},
		{1, 4, 4},
		{2, 4, 2},
	} {
		var buf bytes.Buffer
		h, err := NewHandler(newTestBackend(t), zerolog.New(&buf), accessOptions(tc.every))
		if err != nil {
			t.Fatal(err)
		}
		for i := range tc.requests {
			path := "/v2/health/live"
			if i == 0 {
				path = "/v2/nothing/here" // a 404: logged as rejected too
			}
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", path, nil))
		}
		var entries []map[string]any
		for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			if !strings.Contains(line, `"message":"request"`) {
				continue
			}
			if k, err := logtest.RepeatedKey(line); err != nil || k != "" {
				t.Errorf("access line %s: key %q twice (%v)", line, k, err)
			}
			var e map[string]any
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatalf("access line %q: %v", line, err)
			}
			entries = append(entries, e)
		}
		if len(entries) != tc.wantEntries {
			t.Errorf("every %d: %d access lines for %d requests, want %d:\n%s", tc.every, len(entries), tc.requests, tc.wantEntries, buf.String())
			continue
		}
		for _, e := range entries {
			d, ok := e["duration"].(string)
			if _, err := time.ParseDuration(d); !ok || err != nil {
				t.Errorf("duration %v is not a duration string", e["duration"])
			}
			if e["level"] != "info" || e["method"] != "GET" || e["request_id"] == "" || e["path"] == nil {
				t.Errorf("access line %v lacks a field", e)
			}
		}
		if tc.every == 1 {
			// A caller's W3C trace id is logged, with no tracer provider
			// (the no-op tracer carries the caller's span context).
			var b2 bytes.Buffer
			h2, err := NewHandler(newTestBackend(t), zerolog.New(&b2), accessOptions(tc.every))
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest("GET", "/v2/health/live", nil)
			r.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
			h2.ServeHTTP(httptest.NewRecorder(), r)
			if !strings.Contains(b2.String(), `"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"`) {
				t.Errorf("access line %s lacks the caller's trace id", b2.String())
			}
			if entries[0]["status"] != float64(http.StatusNotFound) || entries[1]["status"] != float64(http.StatusOK) {
				t.Errorf("statuses %v, %v; want 404, 200", entries[0]["status"], entries[1]["status"])
			}
		}
	}
}

func accessOptions(every uint32) Options {
	o := DefaultOptions()
	o.Registerer = prometheus.NewRegistry()
	o.AccessLogEvery = every
	return o
}
