package app

import (
	"context"
	"fmt"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// newTracerProvider returns the tracer provider of cfg and the function
// that flushes and stops it (nil when there is nothing to stop): the
// injected cfg.TracerProvider (owned by the caller), an OTLP/HTTP exporter
// when cfg.OTLPEndpoint is set, or nil, which turns tracing off entirely.
// Nothing reads or sets the otel globals.
func newTracerProvider(ctx context.Context, cfg Config) (trace.TracerProvider, func(context.Context) error, error) {
	if cfg.TracerProvider != nil {
		return cfg.TracerProvider, nil, nil
	}
	if cfg.OTLPEndpoint == "" {
		return nil, nil, nil
	}
	// OTEL_EXPORTER_OTLP_ENDPOINT is a base URL; the signal path is
	// appended (OTLP exporter specification).
	endpoint := strings.TrimSuffix(cfg.OTLPEndpoint, "/") + "/v1/traces"
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint))
	if err != nil {
		return nil, nil, fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", cfg.ServiceName))),
	}
	if cfg.SampleRatio > 0 {
		// Our default when OTEL_TRACES_SAMPLER is unset; otherwise the
		// SDK reads the standard variables.
		opts = append(opts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SampleRatio))))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	return tp, tp.Shutdown, nil
}

// tracer returns the named tracer of tp, or nil (the packages' no-op
// default) when tracing is off.
func tracer(tp trace.TracerProvider, name string) trace.Tracer {
	if tp == nil {
		return nil
	}
	return tp.Tracer(name)
}
