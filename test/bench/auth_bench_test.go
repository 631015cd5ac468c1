package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/proto/token/v1/tokenv1connect"
	"github.com/auth-platform/tokenservice/rpc/auth"
	"github.com/auth-platform/tokenservice/rpc/auth/authtest"
)

// authRounds is how many times each caller mode runs; compare medians.
const authRounds = 9

// BenchmarkCallerAuth is GenerateTokens (ES256, 16 workers, one kept-alive
// HTTP/2 connection over TLS) against three tokends that differ only in
// how callers authenticate:
//
//	none     AUTH_MODE=none: TLS, no credential, no guard work;
//	apikey   AUTH_MODE=apikey: a bearer API key on every call (SHA-256,
//	         lookup, constant-time compare, role and client_id checks,
//	         the caller's rate limit, the actor on the event);
//	mtls     AUTH_MODE=mtls: a client certificate verified once per
//	         connection, its identity looked up on every call.
//
// All three use TLS so that the difference is authentication and
// authorization, not encryption; the handshake is paid once per
// connection. Rounds interleave the modes, in an order that turns every
// round, so that a noisy neighbour hits all alike. The sub-benchmark
// "median" reports the median CPU per call of each mode and the median of
// each mode's overhead against the none run of the same round (target
// under 5%). On a shared machine the rounds differ by ±10%, more than the
// effect: BenchmarkGuard measures the guard's own cost per call.
func BenchmarkCallerAuth(b *testing.B) {
	servers := map[string]*server{}
	for _, mode := range []string{"none", "apikey", "mtls"} {
		servers[mode] = startAuthServer(b, mode)
	}
	cpu := map[string][]float64{}      // mode → cpu_us/op of each round's final run
	overhead := map[string][]float64{} // mode → overhead_pct of each round
	modes := []string{"none", "apikey", "mtls"}
	for round := 1; round <= authRounds; round++ {
		// The order turns every round, so that no mode always runs first.
		order := append(slices.Clone(modes[(round-1)%3:]), modes[:(round-1)%3]...)
		got := map[string]float64{}
		for _, mode := range order {
			b.Run(mode+"/"+strconv.Itoa(round)+"/c=16", func(b *testing.B) {
				s := servers[mode]
				cpu0 := processCPU()
				drive(b, s, 16, func(int) call {
					return func(ctx context.Context, n int) error {
						resp, err := s.client.GenerateTokens(ctx, connect.NewRequest(generateRequest(n)))
						if err != nil {
							return err
						}
						if resp.Msg.GetAccessToken() == "" {
							return errors.New("no access token")
						}
						return nil
					}
				})
				if c := processCPU() - cpu0; c > 0 {
					got[mode] = float64(c) / float64(time.Microsecond) / float64(b.N)
				}
			})
		}
		for _, mode := range modes {
			cpu[mode] = append(cpu[mode], got[mode])
			if mode != "none" && got["none"] > 0 && got[mode] > 0 {
				overhead[mode] = append(overhead[mode], 100*(got[mode]-got["none"])/got["none"])
			}
		}
	}
	med := func(xs []float64) float64 {
		s := slices.Clone(xs)
		slices.Sort(s)
		return s[len(s)/2]
	}
	// The medians, as the metrics of a last sub-benchmark that does
	// nothing else (a benchmark with sub-benchmarks reports nothing).
	b.Run("median", func(b *testing.B) {
		none := med(cpu["none"])
		if none <= 0 {
			b.Skip("no CPU measurement on this platform")
		}
		b.ReportMetric(none, "none_cpu_us/op")
		for _, mode := range []string{"apikey", "mtls"} {
			b.ReportMetric(med(cpu[mode]), mode+"_cpu_us/op")
			b.ReportMetric(med(overhead[mode]), mode+"_overhead_pct")
		}
	})
}

// startAuthServer starts a TLS tokend whose callers authenticate by mode
// and a client that authenticates that way, over one kept-alive HTTP/2
// connection.
func startAuthServer(b *testing.B, mode string) *server {
	b.Helper()
	dir := b.TempDir()
	ca := authtest.NewCA(b, "bench CA")
	certFile, keyFile := ca.ServerCert(b).WriteFiles(b, dir, "server")
	clientCert := ca.ClientURI(b, "spiffe://bench.example/ns/auth/sa/login")
	key, entry, err := auth.GenerateAPIKey(rand.Reader, "bench-login", auth.RoleIssuer)
	if err != nil {
		b.Fatal(err)
	}
	entry.ClientIDs = []string{clientID}
	// The default limit (500/s) would refuse a benchmark's load.
	limit := "rate_limit: {per_second: 1000000000, burst: 1000000000}"
	policy := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policy, []byte(fmt.Sprintf("api_keys:\n  - name: %s\n    sha256: %s\n    roles: [issuer]\n    client_ids: [%s]\n    %s\n"+
		"mtls:\n  - identity: %s\n    name: bench-login-mtls\n    roles: [issuer]\n    client_ids: [%s]\n    %s\n"+auth.EndMarker+"\n",
		entry.Name, entry.SHA256, clientID, limit, clientCert.Leaf.URIs[0], clientID, limit)), 0o600); err != nil {
		b.Fatal(err)
	}
	env := map[string]string{
		"HOST": "127.0.0.1", "PORT": "0", "DATA_DIR": b.TempDir(), "NATS_LISTEN": "127.0.0.1:0",
		"LOG_LEVEL": "error", "ENCRYPTION_KEY": encryptionKey, "JWT_ALGORITHM": "ES256",
		"TLS_CERT_FILE": certFile, "TLS_KEY_FILE": keyFile, "AUTH_MODE": "none",
	}
	switch mode {
	case "apikey":
		env["AUTH_MODE"], env["AUTH_POLICY_FILE"] = "apikey", policy
	case "mtls":
		env["AUTH_MODE"], env["AUTH_POLICY_FILE"], env["TLS_CLIENT_CA_FILE"] = "mtls", policy, ca.WriteFile(b, dir, "ca.pem")
	}
	m := startApp(b, env)
	var cert *authtest.Cert
	var opts []connect.ClientOption
	switch mode {
	case "apikey":
		opts = append(opts, connect.WithInterceptors(bearer("Bearer "+key)))
	case "mtls":
		cert = clientCert
	}
	tlsCfg := authtest.ClientTLS(ca, cert)
	tlsCfg.ClientSessionCache = tls.NewLRUClientSessionCache(8)
	tr := &http.Transport{TLSClientConfig: tlsCfg, ForceAttemptHTTP2: true, MaxConnsPerHost: 1}
	b.Cleanup(tr.CloseIdleConnections)
	s := &server{main: m, client: tokenv1connect.NewTokenServiceClient(&http.Client{Transport: tr}, "https://"+m.Addr(), opts...)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := s.client.GenerateTokens(ctx, connect.NewRequest(generateRequest(-1))); err != nil {
		b.Fatalf("%s: warm-up GenerateTokens: %v", mode, err)
	}
	return s
}

// bearer sets the Authorization header of every unary call.
type bearer string

func (h bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", string(h))
		return next(ctx, req)
	}
}

func (h bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (h bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// BenchmarkGuard isolates what the guard adds to one call, on one
// goroutine where the measurement is steady: a GenerateTokens call served
// by a handler that answers at once, with the guard disabled (none), with
// an API key, and with a verified client certificate (the TLS connection
// state as the server sees it after the handshake). The difference from
// none, divided by BenchmarkCallerAuth's CPU per GenerateTokens, is the
// guard's share of a real call.
func BenchmarkGuard(b *testing.B) {
	dir := b.TempDir()
	ca := authtest.NewCA(b, "bench CA")
	clientCert := ca.ClientURI(b, "spiffe://bench.example/ns/auth/sa/login")
	key, entry, err := auth.GenerateAPIKey(rand.Reader, "bench-login", auth.RoleIssuer)
	if err != nil {
		b.Fatal(err)
	}
	// A policy of realistic size: the caller among 200 keys.
	var policy strings.Builder
	policy.WriteString("api_keys:\n")
	for i := range 199 {
		_, e, err := auth.GenerateAPIKey(rand.Reader, fmt.Sprintf("other-%d", i), auth.RoleResourceServer)
		if err != nil {
			b.Fatal(err)
		}
		policy.WriteString("  " + e.Line() + "\n")
	}
	limit := "{per_second: 1000000000, burst: 1000000000}"
	fmt.Fprintf(&policy, "  - {name: %s, sha256: %s, roles: [issuer], client_ids: [%s], rate_limit: %s}\n", entry.Name, entry.SHA256, clientID, limit)
	fmt.Fprintf(&policy, "mtls:\n  - {identity: %q, name: bench-mtls, roles: [issuer], client_ids: [%s], rate_limit: %s}\n", clientCert.Leaf.URIs[0].String(), clientID, limit)
	policy.WriteString(auth.EndMarker + "\n")
	path := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(path, []byte(policy.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	pol, err := auth.LoadPolicy(path, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	body := []byte(`{"subject":"alice","clientId":"` + clientID + `","audience":["api"]}`)
	verified := &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{clientCert.Leaf},
		VerifiedChains: [][]*x509.Certificate{{clientCert.Leaf, ca.Cert}}}
	for _, mode := range []string{"none", "apikey", "mtls"} {
		b.Run(mode, func(b *testing.B) {
			guard, err := auth.New(auth.Config{Policy: pol, Disabled: mode == "none", Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			mux := http.NewServeMux()
			mux.Handle(tokenv1connect.NewTokenServiceHandler(answerAtOnce{}, connect.WithInterceptors(guard.Interceptor())))
			h := guard.Middleware(mux)
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, tokenv1connect.TokenServiceGenerateTokensProcedure, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				switch mode {
				case "apikey":
					req.Header.Set("Authorization", "Bearer "+key)
				case "mtls":
					req.TLS = verified
				}
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatalf("%s: %d %s", mode, w.Code, w.Body)
				}
			}
		})
	}
}

// answerAtOnce answers GenerateTokens with an empty response.
type answerAtOnce struct {
	tokenv1connect.UnimplementedTokenServiceHandler
}

func (answerAtOnce) GenerateTokens(context.Context, *connect.Request[tokenv1.GenerateTokensRequest]) (*connect.Response[tokenv1.TokenResponse], error) {
	return connect.NewResponse(&tokenv1.TokenResponse{}), nil
}
