package bench

import (
	"context"
	"errors"
	"net"
	"net/http"
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

// BenchmarkObservability is GenerateTokens (ES256, h2c, 16 workers) with
// observability off — no metrics, no tracing — and on — Prometheus
// metrics on every RPC, append and outcome, and tracing with the SDK
// recording every span (RPC, append, sign) into a batching processor whose
// exporter discards them. Three rounds interleave off and on, so a noisy
// neighbour hits both alike; the target is on/off CPU per call under 1.05.
func BenchmarkObservability(b *testing.B) {
	for _, run := range []string{"off/1", "on/1", "off/2", "on/2", "off/3", "on/3"} {
		mode, _, _ := strings.Cut(run, "/")
		b.Run(run+"/c=16", func(b *testing.B) {
			var metrics *rpc.Metrics
			var tp *sdktrace.TracerProvider
			opts := issuertest.Options{Algorithm: signing.ES256, Clock: issuertest.NewClock(time.Now())}
			if mode == "on" {
				metrics = rpc.NewMetrics(nil)
				tp = sdktrace.NewTracerProvider(sdktrace.WithBatcher(discard{}), sdktrace.WithSampler(sdktrace.AlwaysSample()))
				b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
				opts.Observer, opts.LogObserver, opts.Tracer = metrics, metrics, tp.Tracer("tokend")
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
