package rpc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"

	"connectrpc.com/connect"

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
// middleware included.
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

// correlationInterceptor does what withCorrelationID does for a call that
// did not pass through it; after it, the ID is already in the context and
// the response headers (setting it again would repeat the header, as
// Connect appends a response's headers to the writer's).
type correlationInterceptor struct{}

func (correlationInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if eventlog.CorrelationID(ctx) != "" {
			return next(ctx, req)
		}
		id := req.Header().Get(HeaderCorrelationID)
		if !validCorrelationID(id) {
			id = newCorrelationID()
		}
		ctx = eventlog.WithCorrelationID(ctx, id)
		resp, err := next(ctx, req)
		if resp != nil {
			resp.Header().Set(HeaderCorrelationID, id)
		}
		if ce, ok := err.(*connect.Error); ok {
			ce.Meta().Set(HeaderCorrelationID, id)
		}
		return resp, err
	}
}

func (correlationInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (correlationInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if eventlog.CorrelationID(ctx) != "" {
			return next(ctx, conn)
		}
		id := conn.RequestHeader().Get(HeaderCorrelationID)
		if !validCorrelationID(id) {
			id = newCorrelationID()
		}
		conn.ResponseHeader().Set(HeaderCorrelationID, id)
		return next(eventlog.WithCorrelationID(ctx, id), conn)
	}
}
