package rpc

import (
	"context"
	"crypto/rand"
	"encoding/hex"

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

// correlationInterceptor reads X-Correlation-ID (or makes one), echoes it
// and puts it in the context, from where the event log stamps it on every
// event the request causes.
type correlationInterceptor struct{}

func (correlationInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
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
		id := conn.RequestHeader().Get(HeaderCorrelationID)
		if !validCorrelationID(id) {
			id = newCorrelationID()
		}
		conn.ResponseHeader().Set(HeaderCorrelationID, id)
		return next(eventlog.WithCorrelationID(ctx, id), conn)
	}
}
