package kserve

import (
	"context"
	"net/http"

	"github.com/rs/xid"
)

// requestIDHeader carries the request id both ways: a caller's sane value is
// kept, anything else is replaced by a generated one.
const requestIDHeader = "X-Request-Id"

// maxRequestIDLen bounds a caller's id; longer ones are replaced.
const maxRequestIDLen = 128

type requestIDKey struct{}

// RequestID returns the request id the handler put on ctx, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// saneRequestID reports whether id is 1 to 128 printable ASCII characters.
func saneRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x20 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

// withRequestID sets X-Request-Id on the response and puts the id on the
// request's context.
func withRequestID(w http.ResponseWriter, r *http.Request) *http.Request {
	id := r.Header.Get(requestIDHeader)
	if !saneRequestID(id) {
		id = xid.New().String()
	}
	w.Header().Set(requestIDHeader, id)
	return r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id))
}
