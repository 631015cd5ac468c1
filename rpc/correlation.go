package rpc

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"

	"github.com/auth-platform/tokenservice/eventlog"
)

// HeaderCorrelationID carries the correlation ID of a request.
const HeaderCorrelationID = "X-Correlation-Id"

const maxCorrelationLen = 128

// validCorrelationID accepts 1 to 128 characters of [A-Za-z0-9._:-]: an
// ID from outside ends up in logs and event headers.
func validCorrelationID(s string) bool {
	if s == "" || len(s) > maxCorrelationLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

func newCorrelationID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// withCorrelationID reads X-Correlation-ID (or makes one), echoes it in
// the response headers and puts it in the request's context, from where
// the event log stamps it on every event the request causes and the logs
// (of a refused caller too) record it. It is the outermost layer of the
// handler, so that every answer carries the ID, a refusal by the guard's
// middleware included, and every RPC has it in its context before any
// interceptor runs.
func withCorrelationID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(HeaderCorrelationID)
		if !validCorrelationID(id) {
			id = newCorrelationID()
		}
		w.Header().Set(HeaderCorrelationID, id)
		next.ServeHTTP(w, r.WithContext(eventlog.WithCorrelationID(r.Context(), id)))
	})
}
