package kserve

import (
	"net/http"
	"time"

	"github.com/rs/zerolog"
)

// accessWriter records what a response carried, for the access log.
type accessWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *accessWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *accessWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *accessWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// newAccessLog returns the sampled access logger (every Nth request), or
// nil when every is 0.
func newAccessLog(log zerolog.Logger, every uint32) *zerolog.Logger {
	if every == 0 {
		return nil
	}
	l := log.Sample(&zerolog.BasicSampler{N: every})
	return &l
}

// serveObserved serves r inside its server span (when tracing) and writes
// its access log line (when sampled): request id, trace id, method, path,
// status, bytes in and out, and the duration as a string ("1.2ms").
func (h *Handler) serveObserved(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	r, span := h.startServerSpan(r)
	aw := &accessWriter{ResponseWriter: w}
	h.mux.ServeHTTP(aw, r)
	status := aw.status
	if status == 0 {
		status = http.StatusOK
	}
	endServerSpan(span, status)
	if h.accessLog == nil {
		return
	}
	ev := h.accessLog.Info().Str("request_id", RequestID(r.Context()))
	if sc := span.SpanContext(); sc.IsValid() {
		ev = ev.Str("trace_id", sc.TraceID().String())
	}
	ev.Str("method", r.Method).Str("path", r.URL.Path).
		Int("status", status).Int64("bytes_in", r.ContentLength).Int64("bytes_out", aw.bytes).
		Str("duration", time.Since(start).String()).Str("remote", r.RemoteAddr).Msg("request")
}
