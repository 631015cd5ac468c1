package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/contrib/bridges/otelslog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/sdk/resource"
)

// With LOGGING_SERVICE_ADDRESS set, every record also goes to an OTLP/gRPC
// receiver, through the OpenTelemetry bridge of log/slog. A request only
// puts its records in a bounded in-memory queue (the SDK's batch
// processor: a ring that drops its oldest record when full, and never
// blocks); one goroutine of the processor exports batches. So a receiver
// that is down, refuses or stalls costs lost records, never a slower
// request.
const (
	// logQueueSize bounds the records waiting for the receiver (about 4
	// MiB at 1 KiB a record).
	logQueueSize = 4096
	// logBatchSize is the most records one export sends.
	logBatchSize = 512
	// logExportTimeout bounds one export, retries included, so that a
	// stalled receiver holds the exporting goroutine for that long at most.
	logExportTimeout = 5 * time.Second
	// logFlushTimeout bounds the flush at Close.
	logFlushTimeout = 5 * time.Second
	// logScope is the instrumentation scope of the records.
	logScope = "github.com/auth-platform/tokenservice/cmd/tokend"
)

// newLoggerProvider returns the provider that exports log records to
// cfg.LoggingAddress over OTLP/gRPC, or nil when it is unset. It does not
// connect: a receiver that is not there yet is not an error.
func newLoggerProvider(ctx context.Context, cfg Config) (*sdklog.LoggerProvider, error) {
	if cfg.LoggingAddress == "" {
		return nil, nil
	}
	exp, err := otlploggrpc.New(ctx, otlploggrpc.WithEndpointURL(cfg.LoggingAddress), otlploggrpc.WithTimeout(logExportTimeout))
	if err != nil {
		return nil, fmt.Errorf("LOGGING_SERVICE_ADDRESS: %w", err)
	}
	bp := sdklog.NewBatchProcessor(exp,
		sdklog.WithMaxQueueSize(logQueueSize),
		sdklog.WithExportMaxBatchSize(logBatchSize),
		sdklog.WithExportTimeout(logExportTimeout))
	return sdklog.NewLoggerProvider(
		sdklog.WithProcessor(bp),
		sdklog.WithResource(resource.NewSchemaless(attribute.String("service.name", cfg.ServiceName))),
	), nil
}

// withLogExport returns h, unwrapped from WithRequestIDs, teed to the
// bridge of lp (when not nil), then wrapped with WithRequestIDs: the IDs
// are added once, before the tee, so both outputs carry the same
// attributes.
func withLogExport(h slog.Handler, lp *sdklog.LoggerProvider) slog.Handler {
	if rh, ok := h.(requestIDHandler); ok {
		h = rh.next
	}
	if lp != nil {
		h = teeHandler{primary: h, export: otelslog.NewHandler(logScope, otelslog.WithLoggerProvider(lp))}
	}
	return WithRequestIDs(h)
}

// teeHandler writes every record the primary handler (stdout) takes to the
// export handler too: the primary's level decides for both. It is as safe
// for concurrent use as its two handlers.
type teeHandler struct {
	primary, export slog.Handler
}

func (h teeHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.primary.Enabled(ctx, level)
}

func (h teeHandler) Handle(ctx context.Context, r slog.Record) error {
	err := h.primary.Handle(ctx, r)
	if h.export.Enabled(ctx, r.Level) {
		out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
		r.Attrs(func(a slog.Attr) bool {
			out.AddAttrs(sameAsStdout(a))
			return true
		})
		// The bridge converts the record before it returns and only
		// enqueues it: this does not wait for the receiver.
		err = errors.Join(err, h.export.Handle(ctx, out))
	}
	return err
}

func (h teeHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	exported := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		exported[i] = sameAsStdout(a)
	}
	return teeHandler{primary: h.primary.WithAttrs(attrs), export: h.export.WithAttrs(exported)}
}

// sameAsStdout returns a with an error value as its text: the bridge
// would otherwise turn it into exception.message and exception.type, and
// a query for the error attribute must find it under the same key in both
// places.
func sameAsStdout(a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindAny:
		if err, ok := a.Value.Any().(error); ok {
			return slog.String(a.Key, err.Error())
		}
	case slog.KindGroup:
		g := a.Value.Group()
		out := make([]slog.Attr, len(g))
		for i, ga := range g {
			out[i] = sameAsStdout(ga)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(out...)}
	}
	return a
}

func (h teeHandler) WithGroup(name string) slog.Handler {
	return teeHandler{primary: h.primary.WithGroup(name), export: h.export.WithGroup(name)}
}

// stopLogExport flushes the records still queued and stops the exporter,
// bounded by ctx and by logFlushTimeout: a receiver that is down must not
// hold the shutdown. What could not be sent is reported on stdout only.
func (m *Main) stopLogExport(ctx context.Context) {
	if m.logs == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, logFlushTimeout)
	defer cancel()
	if err := m.logs.Shutdown(ctx); err != nil {
		m.Logger.Warn("LOGGING_SERVICE_ADDRESS: the last log records may not have reached the receiver", "error", err)
	}
}
