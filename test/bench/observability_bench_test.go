package bench

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/auth-platform/tokenservice/dpop"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
	"github.com/auth-platform/tokenservice/proto/token/v1/tokenv1connect"
	"github.com/auth-platform/tokenservice/rpc"
	"github.com/auth-platform/tokenservice/signing"
)

// observabilityRounds is how many times each mode runs; compare medians.
const observabilityRounds = 5

// BenchmarkObservability is GenerateTokens (ES256, h2c, 16 workers) with
// observability
//
//	off        no metrics, no tracing;
//	metrics    Prometheus metrics on every RPC, append and outcome;
//	trace10    metrics, and tracing with 10% of traces sampled
//	           (ParentBased(TraceIDRatioBased(0.1)), what a busy
//	           deployment sets with OTEL_TRACES_SAMPLER);
//	trace100   metrics, and every trace recorded (the SDK default).
//
// Recorded spans (RPC, append, sign) go through a batching processor to
// an exporter that discards them. Rounds interleave the modes so that a
// noisy neighbour hits all alike; the target is CPU per call with
// observability on within 5% of off.
func BenchmarkObservability(b *testing.B) {
	var runs []string
	for round := 1; round <= observabilityRounds; round++ {
		for _, mode := range []string{"off", "metrics", "trace10", "trace100"} {
			runs = append(runs, mode+"/"+strconv.Itoa(round))
		}
	}
	for _, run := range runs {
		mode, _, _ := strings.Cut(run, "/")
		b.Run(run+"/c=16", func(b *testing.B) {
			var metrics *rpc.Metrics
			var tp *sdktrace.TracerProvider
			opts := issuertest.Options{Algorithm: signing.ES256, Clock: issuertest.NewClock(time.Now())}
			if mode != "off" {
				metrics = rpc.NewMetrics(nil)
				opts.Observer, opts.LogObserver = metrics, metrics
			}
			if mode == "trace10" || mode == "trace100" {
				sampler := sdktrace.ParentBased(sdktrace.AlwaysSample())
				if mode == "trace10" {
					sampler = sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.1))
				}
				tp = sdktrace.NewTracerProvider(sdktrace.WithBatcher(discard{}), sdktrace.WithSampler(sampler))
				b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
				opts.Tracer = tp.Tracer("tokend")
			}
			env := issuertest.New(b, opts)
			verifier, err := dpop.NewVerifier(dpop.Config{Algorithms: signing.Algorithms, Replay: dpop.LogReplayStore{Log: env.Log}})
			if err != nil {
				b.Fatal(err)
			}
			cfg := rpc.Config{Issuer: env.Issuer, DPoP: verifier, Keys: env.Set, Metrics: metrics, Ready: func() bool { return true }}
			if tp != nil {
				cfg.TracerProvider = tp
			}
			h := rpc.New(cfg)
			client := serveH2C(b, h)
			drive(b, &server{client: client}, 16, func(int) call {
				return func(ctx context.Context, n int) error {
					resp, err := client.GenerateTokens(ctx, connect.NewRequest(generateRequest(n)))
					if err != nil {
						return err
					}
					if resp.Msg.GetAccessToken() == "" {
						return errors.New("no access token")
					}
					return nil
				}
			})
		})
	}
}

// serveH2C serves h over HTTP/2 cleartext on loopback and returns a client.
func serveH2C(b *testing.B, h http.Handler) tokenv1connect.TokenServiceClient {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: protocols}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Close() })
	tr := &http.Transport{Protocols: protocols}
	b.Cleanup(tr.CloseIdleConnections)
	return tokenv1connect.NewTokenServiceClient(&http.Client{Transport: tr}, "http://"+ln.Addr().String())
}

// discard is a span exporter that drops spans after the SDK built them.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// BenchmarkInstrumentation isolates what observability adds to one call,
// on one goroutine where the measurement is steady: a GetJWKS call served
// by the handler directly (no network; the handler's own work is tiny)
// with observability off, with metrics, and with metrics and every trace
// recorded; and the two spans a GenerateTokens call adds inside the
// issuer (append, sign). The difference on/off, plus the spans, divided
// by BenchmarkObservability's CPU per call, is observability's share of a
// GenerateTokens call.
func BenchmarkInstrumentation(b *testing.B) {
	env := issuertest.New(b, issuertest.Options{Algorithm: signing.ES256})
	verifier, err := dpop.NewVerifier(dpop.Config{Algorithms: signing.Algorithms, Replay: dpop.LogReplayStore{Log: env.Log}})
	if err != nil {
		b.Fatal(err)
	}
	body := []byte("{}")
	for _, mode := range []string{"off", "metrics", "trace10", "trace100"} {
		b.Run("rpc/"+mode, func(b *testing.B) {
			cfg := rpc.Config{Issuer: env.Issuer, DPoP: verifier, Keys: env.Set, Ready: func() bool { return true }}
			if mode != "off" {
				cfg.Metrics = rpc.NewMetrics(nil)
			}
			if mode == "trace10" || mode == "trace100" {
				sampler := sdktrace.ParentBased(sdktrace.AlwaysSample())
				if mode == "trace10" {
					sampler = sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.1))
				}
				tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discard{}), sdktrace.WithSampler(sampler))
				b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
				cfg.TracerProvider = tp
			}
			h := rpc.New(cfg)
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, tokenv1connect.TokenServiceGetJWKSProcedure, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatalf("GetJWKS: %d %s", w.Code, w.Body)
				}
			}
		})
	}
	b.Run("spans/append+sign", func(b *testing.B) {
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discard{}), sdktrace.WithSampler(sdktrace.AlwaysSample()))
		b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		tr := tp.Tracer("tokend")
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			for _, name := range []string{"eventlog.Append", "issuer.SignAccessToken"} {
				_, span := tr.Start(ctx, name)
				span.End()
			}
		}
	})
}
