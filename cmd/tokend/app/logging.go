package app

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"

	"github.com/auth-platform/tokenservice/eventlog"
)

// Attribute keys added by the handler of WithRequestIDs.
const (
	logKeyTraceID       = "trace_id"
	logKeySpanID        = "span_id"
	logKeyCorrelationID = "correlation_id"
)

// WithRequestIDs returns h wrapped so that every record logged with a
// request context (the *Context methods of slog.Logger) carries the
// request's trace_id and span_id (when the call is traced) and its
// correlation_id. A handler that is already wrapped is returned as is.
func WithRequestIDs(h slog.Handler) slog.Handler {
	if _, ok := h.(requestIDHandler); ok {
		return h
	}
	return requestIDHandler{next: h}
}

// requestIDHandler adds the IDs of the context to each record. It holds no
// state of its own, so it is as safe for concurrent use as next.
type requestIDHandler struct {
	next slog.Handler
}

func (h requestIDHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

func (h requestIDHandler) Handle(ctx context.Context, r slog.Record) error {
	if ctx == nil {
		return h.next.Handle(ctx, r)
	}
	sc := trace.SpanContextFromContext(ctx)
	cid := eventlog.CorrelationID(ctx)
	if !sc.HasTraceID() && cid == "" {
		return h.next.Handle(ctx, r)
	}
	// Clone: the record's attributes may share storage with the caller's.
	r = r.Clone()
	if sc.HasTraceID() {
		r.AddAttrs(slog.String(logKeyTraceID, sc.TraceID().String()))
	}
	if sc.HasSpanID() {
		r.AddAttrs(slog.String(logKeySpanID, sc.SpanID().String()))
	}
	if cid != "" && !hasAttr(r, logKeyCorrelationID) {
		// Validated by rpc (1-128 of [A-Za-z0-9._:-]) or generated.
		r.AddAttrs(slog.String(logKeyCorrelationID, cid))
	}
	return h.next.Handle(ctx, r)
}

func (h requestIDHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return requestIDHandler{next: h.next.WithAttrs(attrs)}
}

func (h requestIDHandler) WithGroup(name string) slog.Handler {
	return requestIDHandler{next: h.next.WithGroup(name)}
}

// hasAttr reports whether r already has a top-level attribute key (rpc's
// server-error log names the correlation ID itself): JSON with a repeated
// key is read differently by different parsers.
func hasAttr(r slog.Record, key string) bool {
	found := false
	r.Attrs(func(a slog.Attr) bool {
		found = a.Key == key
		return !found
	})
	return found
}
