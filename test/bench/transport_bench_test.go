package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/dpop"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
	"github.com/auth-platform/tokenservice/projections"
	"github.com/auth-platform/tokenservice/proto/token/v1/tokenv1connect"
	"github.com/auth-platform/tokenservice/rpc"
	"github.com/auth-platform/tokenservice/rpc/auth"
	"github.com/auth-platform/tokenservice/signing"
)

// BenchmarkGenerateTokensHTTP1 is GenerateTokens ES256 the way issue 16
// and the peers' comparison (test/peers, wrk) measure it: Connect JSON over
// HTTP/1.1, one kept-alive connection per worker, against the in-process
// app. The client writes the same pre-built request bytes every time and
// reads the answer with net/http's response parser, so that the profile
// (-cpuprofile, -memprofile) is mostly the server's: its HTTP/1.1 path,
// middlewares, Connect handler and interceptors, around the issuer.
func BenchmarkGenerateTokensHTTP1(b *testing.B) {
	s := startServer(b, signing.ES256)
	body := `{"subject":"bench-user","clientId":"` + clientID + `","audience":["api"],"scopes":["api"]}`
	req := []byte("POST " + tokenv1connect.TokenServiceGenerateTokensProcedure + " HTTP/1.1\r\n" +
		"Host: " + s.main.Addr() + "\r\n" +
		"Content-Type: application/json\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	for _, conc := range []int{1, 8} {
		b.Run("c="+strconv.Itoa(conc), func(b *testing.B) {
			drive(b, s, conc, func(int) call {
				conn, err := net.Dial("tcp", s.main.Addr())
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _ = conn.Close() })
				r := bufio.NewReader(conn)
				return func(context.Context, int) error {
					if _, err := conn.Write(req); err != nil {
						return err
					}
					resp, err := http.ReadResponse(r, nil)
					if err != nil {
						return err
					}
					n, err := io.Copy(io.Discard, resp.Body)
					if err != nil {
						return err
					}
					if resp.StatusCode != http.StatusOK || n < 200 {
						return fmt.Errorf("status %d, %d bytes", resp.StatusCode, n)
					}
					return nil
				}
			})
		})
	}
}

// BenchmarkMetricsPerCall is what the Prometheus metrics cost a
// GenerateTokens call besides its latency histogram: the issued counter,
// the append's histogram and counter, and the families projector's write
// of the family, on every core (b.RunParallel: the vectors' locks are
// shared).
func BenchmarkMetricsPerCall(b *testing.B) {
	m := rpc.NewMetrics(nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Issued(issuer.TokenTypeBearer, string(signing.ES256))
			m.AppendDone(30*time.Microsecond, nil)
			m.CacheOperation(projections.CacheWrite, projections.CacheOK)
		}
	})
}

// BenchmarkServerPath is the server path of one call without the network
// and without the issuer: a GetJWKS call (Connect JSON) served straight by
// the handler of tokend's wiring on loopback (rpc.New with metrics and
// the guard of AUTH_MODE=none: correlation ID, guard middleware, body
// bound, mux, Connect, the three interceptors), on one goroutine. Its
// allocations are deterministic, so they show a change in the path that
// the end-to-end figures' noise hides.
func BenchmarkServerPath(b *testing.B) {
	env := issuertest.New(b, issuertest.Options{Algorithm: signing.ES256})
	verifier, err := dpop.NewVerifier(dpop.Config{Algorithms: signing.Algorithms, Replay: dpop.LogReplayStore{Log: env.Log}})
	if err != nil {
		b.Fatal(err)
	}
	guard, err := auth.New(auth.Config{Disabled: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	h := rpc.New(rpc.Config{Issuer: env.Issuer, DPoP: verifier, Keys: env.Set, Metrics: rpc.NewMetrics(nil), Guard: guard,
		Logger: slog.New(slog.DiscardHandler), Ready: func() bool { return true }})
	body := []byte("{}")
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "http://127.0.0.1"+tokenv1connect.TokenServiceGetJWKSProcedure, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("GetJWKS: %d %s", w.Code, w.Body)
		}
	}
}
