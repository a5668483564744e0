package kserve

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Every response carries X-Request-Id: the caller's sane value echoed, a
// generated one when it sent none or a hostile one; the error log line of
// the request names the same id.
func TestRequestID(t *testing.T) {
	for _, tc := range []struct {
		name, sent string
		echoed     bool
	}{
		{"echoed", "abc-123_XYZ.7", true},
		{"echoed at 128", strings.Repeat("a", 128), true},
		{"absent", "", false},
		{"too long", strings.Repeat("a", 129), false},
		{"control char", "abc\x01def", false},
		{"tab", "abc\tdef", false},
		{"non-ASCII", "abcé", false},
		{"DEL", "abc\x7f", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			opts := DefaultOptions()
			opts.Registerer = prometheus.NewRegistry()
			h, err := NewHandler(newTestBackend(t), zerolog.New(&buf), opts)
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest("GET", "/v2/nothing/here", nil)
			if tc.sent != "" {
				r.Header.Set(requestIDHeader, tc.sent)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			got := w.Header().Get(requestIDHeader)
			if tc.echoed && got != tc.sent {
				t.Errorf("X-Request-Id %q, want the caller's %q", got, tc.sent)
			}
			if !tc.echoed && (got == tc.sent || !saneRequestID(got)) {
				t.Errorf("X-Request-Id %q, want a generated id (sent %q)", got, tc.sent)
			}
			if !strings.Contains(buf.String(), `"request_id":"`+got+`"`) {
				t.Errorf("error log %q does not name request id %q", buf.String(), got)
			}
		})
	}
}
