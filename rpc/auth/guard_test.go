package auth_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/auth-platform/tokenservice/eventlog"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/proto/token/v1/tokenv1connect"
	"github.com/auth-platform/tokenservice/rpc/auth"
	"github.com/auth-platform/tokenservice/rpc/auth/authtest"
)

// fakeService records what reached it: a refused call must not.
type fakeService struct {
	tokenv1connect.UnimplementedTokenServiceHandler
	mu    sync.Mutex
	calls []call
}

type call struct {
	procedure string
	actor     string
	identity  auth.Identity
}

func (f *fakeService) record(ctx context.Context, procedure string) {
	id, _ := auth.FromContext(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call{procedure: procedure, actor: eventlog.Actor(ctx), identity: id})
}

func (f *fakeService) take() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

func (f *fakeService) GenerateTokens(ctx context.Context, req *connect.Request[tokenv1.GenerateTokensRequest]) (*connect.Response[tokenv1.TokenResponse], error) {
	f.record(ctx, req.Spec().Procedure)
	return connect.NewResponse(&tokenv1.TokenResponse{}), nil
}

func (f *fakeService) RefreshTokens(ctx context.Context, req *connect.Request[tokenv1.RefreshTokensRequest]) (*connect.Response[tokenv1.TokenResponse], error) {
	f.record(ctx, req.Spec().Procedure)
	return connect.NewResponse(&tokenv1.TokenResponse{}), nil
}

func (f *fakeService) RevokeToken(ctx context.Context, req *connect.Request[tokenv1.RevokeTokenRequest]) (*connect.Response[tokenv1.RevokeTokenResponse], error) {
	f.record(ctx, req.Spec().Procedure)
	return connect.NewResponse(&tokenv1.RevokeTokenResponse{}), nil
}

func (f *fakeService) GetJWKS(ctx context.Context, req *connect.Request[tokenv1.GetJWKSRequest]) (*connect.Response[tokenv1.GetJWKSResponse], error) {
	f.record(ctx, req.Spec().Procedure)
	return connect.NewResponse(&tokenv1.GetJWKSResponse{}), nil
}

func (f *fakeService) ValidateDPoP(ctx context.Context, req *connect.Request[tokenv1.ValidateDPoPRequest]) (*connect.Response[tokenv1.ValidateDPoPResponse], error) {
	f.record(ctx, req.Spec().Procedure)
	return connect.NewResponse(&tokenv1.ValidateDPoPResponse{}), nil
}

func (f *fakeService) RotateSigningKey(ctx context.Context, req *connect.Request[tokenv1.RotateSigningKeyRequest]) (*connect.Response[tokenv1.RotateSigningKeyResponse], error) {
	f.record(ctx, req.Spec().Procedure)
	return connect.NewResponse(&tokenv1.RotateSigningKeyResponse{}), nil
}

func (f *fakeService) ListSigningKeys(ctx context.Context, req *connect.Request[tokenv1.ListSigningKeysRequest]) (*connect.Response[tokenv1.ListSigningKeysResponse], error) {
	f.record(ctx, req.Spec().Procedure)
	return connect.NewResponse(&tokenv1.ListSigningKeysResponse{}), nil
}

func (f *fakeService) IntrospectToken(ctx context.Context, req *connect.Request[tokenv1.IntrospectTokenRequest]) (*connect.Response[tokenv1.IntrospectTokenResponse], error) {
	f.record(ctx, req.Spec().Procedure)
	return connect.NewResponse(&tokenv1.IntrospectTokenResponse{}), nil
}

func (f *fakeService) ListFamilies(ctx context.Context, req *connect.Request[tokenv1.ListFamiliesRequest]) (*connect.Response[tokenv1.ListFamiliesResponse], error) {
	f.record(ctx, req.Spec().Procedure)
	return connect.NewResponse(&tokenv1.ListFamiliesResponse{}), nil
}

func (f *fakeService) WatchRevocations(ctx context.Context, req *connect.Request[tokenv1.WatchRevocationsRequest], stream *connect.ServerStream[tokenv1.WatchRevocationsResponse]) error {
	f.record(ctx, req.Spec().Procedure)
	return stream.Send(&tokenv1.WatchRevocationsResponse{})
}

// refusals is an auth.Observer.
type refusals struct {
	mu sync.Mutex
	n  map[string]int // "procedure reason"
}

func (r *refusals) Refused(procedure string, reason auth.Reason) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = map[string]int{}
	}
	r.n[procedure+" "+string(reason)]++
}

func (r *refusals) count(procedure string, reason auth.Reason) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[procedure+" "+string(reason)]
}

// env is a TLS server with the guard in front of a fake service, and the
// credentials of the test policy.
type env struct {
	t      *testing.T
	dir    string
	url    string
	ca     *authtest.CA
	svc    *fakeService
	obs    *refusals
	policy *auth.Policy
	certs  *auth.CertReloader
	keys   map[string]string // name -> API key
	now    time.Time
}

const (
	issuerURI = "spiffe://test.example/ns/auth/sa/login"
	adminCN   = "ops-admin"
)

// policyYAML writes a policy with the given keys (name -> roles and extra
// YAML fields) and returns the keys.
func writePolicy(t *testing.T, path string, entries map[string]string, extra string) map[string]string {
	t.Helper()
	keys := map[string]string{}
	var b strings.Builder
	b.WriteString("# test policy\napi_keys:\n")
	for name, fields := range entries {
		key, e, err := auth.GenerateAPIKey(rand.Reader, name, auth.RoleAdmin)
		if err != nil {
			t.Fatal(err)
		}
		keys[name] = key
		fmt.Fprintf(&b, "  - name: %s\n    sha256: %s\n%s", name, e.SHA256, fields)
	}
	b.WriteString(extra)
	b.WriteString(auth.EndMarker + "\n")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return keys
}

var testEntries = map[string]string{
	"issuer":   "    roles: [issuer]\n    client_ids: [web]\n",
	"issuer2":  "    roles: [issuer]\n",
	"rs":       "    roles: [resource-server]\n",
	"admin":    "    roles: [admin]\n",
	"expired":  "    roles: [issuer, resource-server, admin]\n    expires: \"2020-01-01T00:00:00Z\"\n",
	"future":   "    roles: [resource-server]\n    expires: \"2999-01-01T00:00:00Z\"\n",
	"flood-a":  "    roles: [resource-server]\n    rate_limit: {per_second: 0.001, burst: 3}\n",
	"flood-b":  "    roles: [resource-server]\n    rate_limit: {per_second: 0.001, burst: 3}\n",
	"everyone": "    roles: [issuer, resource-server, admin]\n",
}

const testMTLS = `mtls:
  - identity: ` + issuerURI + `
    name: login-mtls
    roles: [issuer]
    client_ids: [web]
  - identity: ` + adminCN + `
    name: ops
    roles: [admin]
`

func newEnv(t *testing.T, mutate func(*auth.Config)) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), ca: authtest.NewCA(t, "test client and server CA"), svc: &fakeService{}, obs: &refusals{},
		now: time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	policyFile := filepath.Join(e.dir, "policy.yaml")
	e.keys = writePolicy(t, policyFile, testEntries, testMTLS)
	var err error
	if e.policy, err = auth.LoadPolicy(policyFile, log); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := e.ca.ServerCert(t).WriteFiles(t, e.dir, "server")
	if e.certs, err = auth.NewCertReloader(certFile, keyFile, log); err != nil {
		t.Fatal(err)
	}
	cfg := auth.Config{Policy: e.policy, Observer: e.obs, Logger: log, Now: func() time.Time { return e.now }}
	if mutate != nil {
		mutate(&cfg)
	}
	guard, err := auth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(tokenv1connect.NewTokenServiceHandler(e.svc, connect.WithInterceptors(guard.Interceptor())))
	for _, p := range []string{"/healthz", "/metrics", "/.well-known/jwks.json"} {
		mux.HandleFunc("GET "+p, func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	}
	srv := &http.Server{Handler: guard.Middleware(mux), TLSConfig: auth.ServerTLSConfig(e.certs, e.ca.Pool(), false), ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	e.url = "https://" + ln.Addr().String()
	return e
}

// httpClient returns a client presenting cert (nil: none) over HTTP/2.
func (e *env) httpClient(cert *authtest.Cert, ca *authtest.CA) *http.Client {
	if ca == nil {
		ca = e.ca
	}
	tr := &http.Transport{TLSClientConfig: authtest.ClientTLS(ca, cert), ForceAttemptHTTP2: true}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

type bearerInterceptor string

func (b bearerInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", string(b))
		return next(ctx, req)
	}
}

func (b bearerInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", string(b))
		return conn
	}
}

func (b bearerInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

func bearer(key string) string { return "Bearer " + key }

type rpcCall func(context.Context, tokenv1connect.TokenServiceClient) error

func generate(clientID string) rpcCall {
	return func(ctx context.Context, c tokenv1connect.TokenServiceClient) error {
		_, err := c.GenerateTokens(ctx, connect.NewRequest(&tokenv1.GenerateTokensRequest{Subject: "alice", ClientId: clientID}))
		return err
	}
}

func refresh(clientID string) rpcCall {
	return func(ctx context.Context, c tokenv1connect.TokenServiceClient) error {
		_, err := c.RefreshTokens(ctx, connect.NewRequest(&tokenv1.RefreshTokensRequest{RefreshToken: "f.s", ClientId: clientID}))
		return err
	}
}

func revoke(r *tokenv1.RevokeTokenRequest) rpcCall {
	return func(ctx context.Context, c tokenv1connect.TokenServiceClient) error {
		_, err := c.RevokeToken(ctx, connect.NewRequest(r))
		return err
	}
}

func jwks(ctx context.Context, c tokenv1connect.TokenServiceClient) error {
	_, err := c.GetJWKS(ctx, connect.NewRequest(&tokenv1.GetJWKSRequest{}))
	return err
}

func validateDPoP(ctx context.Context, c tokenv1connect.TokenServiceClient) error {
	_, err := c.ValidateDPoP(ctx, connect.NewRequest(&tokenv1.ValidateDPoPRequest{}))
	return err
}

func introspect(ctx context.Context, c tokenv1connect.TokenServiceClient) error {
	_, err := c.IntrospectToken(ctx, connect.NewRequest(&tokenv1.IntrospectTokenRequest{}))
	return err
}

func rotate(ctx context.Context, c tokenv1connect.TokenServiceClient) error {
	_, err := c.RotateSigningKey(ctx, connect.NewRequest(&tokenv1.RotateSigningKeyRequest{}))
	return err
}

func listKeys(ctx context.Context, c tokenv1connect.TokenServiceClient) error {
	_, err := c.ListSigningKeys(ctx, connect.NewRequest(&tokenv1.ListSigningKeysRequest{}))
	return err
}

func listFamilies(ctx context.Context, c tokenv1connect.TokenServiceClient) error {
	_, err := c.ListFamilies(ctx, connect.NewRequest(&tokenv1.ListFamiliesRequest{}))
	return err
}

func watch(ctx context.Context, c tokenv1connect.TokenServiceClient) error {
	s, err := c.WatchRevocations(ctx, connect.NewRequest(&tokenv1.WatchRevocationsRequest{}))
	if err != nil {
		return err
	}
	defer s.Close()
	for s.Receive() {
	}
	return s.Err()
}

var (
	revokeFamily  = revoke(&tokenv1.RevokeTokenRequest{Target: &tokenv1.RevokeTokenRequest_FamilyId{FamilyId: "f"}})
	revokeToken   = revoke(&tokenv1.RevokeTokenRequest{Target: &tokenv1.RevokeTokenRequest_RefreshToken{RefreshToken: "f.s"}})
	revokeSubject = revoke(&tokenv1.RevokeTokenRequest{Target: &tokenv1.RevokeTokenRequest_Subject{Subject: "alice"}})
)

// TestSecurityMatrix calls every RPC with every kind of caller, over
// Connect and gRPC, and checks the code and that a refused call reached
// nothing.
func TestSecurityMatrix(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	const ok = connect.Code(0)
	unauth, denied := connect.CodeUnauthenticated, connect.CodePermissionDenied
	issuerCert := e.ca.ClientURI(t, issuerURI)
	adminCert := e.ca.ClientCN(t, adminCN)
	unknownCert := e.ca.ClientURI(t, "spiffe://test.example/ns/x/sa/unknown")
	twoURIs := e.ca.Issue(t, authtest.Options{URIs: []string{issuerURI, "spiffe://test.example/other"}})
	cnNotInPolicy := e.ca.ClientCN(t, "not-in-policy")
	cnLikeURI := e.ca.ClientCN(t, issuerURI) // passing for the issuer's SPIFFE ID

	type caller struct {
		name string
		cert *authtest.Cert
		auth string // Authorization header
	}
	var (
		none     = caller{name: "none"}
		issuer   = caller{name: "issuer key", auth: bearer(e.keys["issuer"])}
		issuer2  = caller{name: "unrestricted issuer key", auth: bearer(e.keys["issuer2"])}
		rs       = caller{name: "resource-server key", auth: bearer(e.keys["rs"])}
		admin    = caller{name: "admin key", auth: bearer(e.keys["admin"])}
		expired  = caller{name: "expired key", auth: bearer(e.keys["expired"])}
		unknown  = caller{name: "unknown key", auth: bearer("tdk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")}
		basic    = caller{name: "basic auth", auth: "Basic dXNlcjpwYXNz"}
		mIssuer  = caller{name: "mtls issuer", cert: issuerCert}
		mAdmin   = caller{name: "mtls admin (CN)", cert: adminCert}
		mUnknown = caller{name: "mtls identity not in policy", cert: unknownCert}
		mTwoURIs = caller{name: "mtls two URI SANs", cert: twoURIs}
		mNoEntry = caller{name: "mtls CN not in policy", cert: cnNotInPolicy}
		mCNURI   = caller{name: "mtls CN spelling a URI SAN", cert: cnLikeURI}
		keyWins  = caller{name: "rs key over issuer cert", cert: issuerCert, auth: bearer(e.keys["rs"])}
		badKey   = caller{name: "unknown key with issuer cert", cert: issuerCert, auth: bearer("tdk_nope")}
	)
	type tc struct {
		caller    caller
		procedure string
		call      rpcCall
		want      connect.Code
		wantActor string
	}
	G := tokenv1connect.TokenServiceGenerateTokensProcedure
	cases := []tc{
		{none, tokenv1connect.TokenServiceGetJWKSProcedure, jwks, ok, ""},
		{expired, tokenv1connect.TokenServiceGetJWKSProcedure, jwks, ok, ""},
		{none, G, generate("web"), unauth, ""},
		{unknown, G, generate("web"), unauth, ""},
		{expired, G, generate("web"), unauth, ""},
		{basic, G, generate("web"), unauth, ""},
		{rs, G, generate("web"), denied, ""},
		{admin, G, generate("web"), denied, ""},
		{issuer, G, generate("web"), ok, "apikey:issuer"},
		{issuer, G, generate("mobile"), denied, ""},
		{issuer, G, generate(""), denied, ""},
		{issuer2, G, generate("anything"), ok, "apikey:issuer2"},
		{issuer, tokenv1connect.TokenServiceRefreshTokensProcedure, refresh("web"), ok, "apikey:issuer"},
		{issuer, tokenv1connect.TokenServiceRefreshTokensProcedure, refresh(""), denied, ""},
		{rs, tokenv1connect.TokenServiceRefreshTokensProcedure, refresh("web"), denied, ""},
		{issuer, tokenv1connect.TokenServiceRevokeTokenProcedure, revokeFamily, ok, "apikey:issuer"},
		{issuer, tokenv1connect.TokenServiceRevokeTokenProcedure, revokeToken, ok, "apikey:issuer"},
		{issuer, tokenv1connect.TokenServiceRevokeTokenProcedure, revokeSubject, denied, ""},
		{admin, tokenv1connect.TokenServiceRevokeTokenProcedure, revokeSubject, ok, "apikey:admin"},
		{admin, tokenv1connect.TokenServiceRevokeTokenProcedure, revokeFamily, ok, "apikey:admin"},
		{rs, tokenv1connect.TokenServiceRevokeTokenProcedure, revokeFamily, denied, ""},
		{none, tokenv1connect.TokenServiceRevokeTokenProcedure, revokeFamily, unauth, ""},
		{rs, tokenv1connect.TokenServiceValidateDPoPProcedure, validateDPoP, ok, "apikey:rs"},
		{issuer, tokenv1connect.TokenServiceValidateDPoPProcedure, validateDPoP, denied, ""},
		{none, tokenv1connect.TokenServiceValidateDPoPProcedure, validateDPoP, unauth, ""},
		{rs, tokenv1connect.TokenServiceIntrospectTokenProcedure, introspect, ok, "apikey:rs"},
		{admin, tokenv1connect.TokenServiceIntrospectTokenProcedure, introspect, denied, ""},
		{rs, tokenv1connect.TokenServiceWatchRevocationsProcedure, watch, ok, "apikey:rs"},
		{issuer, tokenv1connect.TokenServiceWatchRevocationsProcedure, watch, denied, ""},
		{none, tokenv1connect.TokenServiceWatchRevocationsProcedure, watch, unauth, ""},
		{admin, tokenv1connect.TokenServiceRotateSigningKeyProcedure, rotate, ok, "apikey:admin"},
		{issuer, tokenv1connect.TokenServiceRotateSigningKeyProcedure, rotate, denied, ""},
		{rs, tokenv1connect.TokenServiceRotateSigningKeyProcedure, rotate, denied, ""},
		{none, tokenv1connect.TokenServiceRotateSigningKeyProcedure, rotate, unauth, ""},
		{admin, tokenv1connect.TokenServiceListSigningKeysProcedure, listKeys, ok, "apikey:admin"},
		{rs, tokenv1connect.TokenServiceListSigningKeysProcedure, listKeys, denied, ""},
		{admin, tokenv1connect.TokenServiceListFamiliesProcedure, listFamilies, ok, "apikey:admin"},
		{issuer, tokenv1connect.TokenServiceListFamiliesProcedure, listFamilies, denied, ""},
		{mIssuer, G, generate("web"), ok, "mtls:" + issuerURI},
		{mIssuer, G, generate("mobile"), denied, ""},
		{mIssuer, tokenv1connect.TokenServiceRotateSigningKeyProcedure, rotate, denied, ""},
		{mAdmin, tokenv1connect.TokenServiceRotateSigningKeyProcedure, rotate, ok, "mtls:" + adminCN},
		{mAdmin, tokenv1connect.TokenServiceRevokeTokenProcedure, revokeSubject, ok, "mtls:" + adminCN},
		{mUnknown, G, generate("web"), unauth, ""},
		{mTwoURIs, G, generate("web"), unauth, ""},
		{mNoEntry, tokenv1connect.TokenServiceValidateDPoPProcedure, validateDPoP, unauth, ""},
		{mCNURI, tokenv1connect.TokenServiceGenerateTokensProcedure, generate("web"), unauth, ""},
		{keyWins, G, generate("web"), denied, ""},
		{keyWins, tokenv1connect.TokenServiceValidateDPoPProcedure, validateDPoP, ok, "apikey:rs"},
		{badKey, G, generate("web"), unauth, ""},
	}
	for _, grpc := range []bool{false, true} {
		for _, c := range cases {
			proto := "connect"
			if grpc {
				proto = "grpc"
			}
			name := fmt.Sprintf("%s/%s/%s", proto, c.caller.name, c.procedure[strings.LastIndexByte(c.procedure, '/')+1:])
			t.Run(name, func(t *testing.T) {
				client := tokenv1connect.NewTokenServiceClient(e.httpClient(c.caller.cert, nil), e.url, clientOpts(grpc, c.caller.auth)...)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				err := c.call(ctx, client)
				got := e.svc.take()
				if c.want == ok {
					if err != nil {
						t.Fatalf("err = %v, want success", err)
					}
					if len(got) != 1 || got[0].procedure != c.procedure || got[0].actor != c.wantActor {
						t.Fatalf("reached %+v, want one call of %s by %q", got, c.procedure, c.wantActor)
					}
					return
				}
				if code := connect.CodeOf(err); code != c.want {
					t.Fatalf("code = %v (%v), want %v", code, err, c.want)
				}
				if len(got) != 0 {
					t.Fatalf("a refused call reached the service: %+v", got)
				}
				checkRefusal(t, err)
			})
		}
	}
	if n := e.obs.count(G, auth.ReasonClientNotAllowed); n != 2*3 {
		t.Errorf("client_not_allowed refusals of GenerateTokens counted %d, want 6", n)
	}
	if n := e.obs.count(G, auth.ReasonUnauthenticated); n == 0 {
		t.Error("unauthenticated refusals not counted")
	}
}

// clientOpts selects gRPC or Connect and sets the Authorization header
// (if not "").
func clientOpts(grpc bool, authorization string) []connect.ClientOption {
	var opts []connect.ClientOption
	if authorization != "" {
		opts = append(opts, connect.WithInterceptors(bearerInterceptor(authorization)))
	}
	if grpc {
		opts = append(opts, connect.WithGRPC())
	}
	return opts
}

// checkRefusal checks that a refusal says little, in the service's OAuth
// error format.
func checkRefusal(t *testing.T, err error) {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Fatalf("%v is not a Connect error", err)
	}
	msg := ce.Message()
	for _, leak := range []string{"expired", "unknown", "policy", "tdk_", "spiffe"} {
		if strings.Contains(msg, leak) {
			t.Errorf("message %q tells %q", msg, leak)
		}
	}
	var found bool
	for _, d := range ce.Details() {
		if v, derr := d.Value(); derr == nil {
			if o, isOAuth := v.(*tokenv1.OAuthError); isOAuth && strings.HasPrefix(msg, o.GetError()+": ") {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("refusal %q has no OAuth error detail matching its message", msg)
	}
}

// TestTLSRefusesBadCertificates: a certificate from another CA or an
// expired one fails the handshake; no call is made.
func TestTLSRefusesBadCertificates(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	otherCA := authtest.NewCA(t, "another CA")
	for name, cert := range map[string]*authtest.Cert{
		"another CA": otherCA.ClientURI(t, issuerURI),
		"expired":    e.ca.Expired(t, issuerURI),
	} {
		t.Run(name, func(t *testing.T) {
			// Present the certificate whatever CAs the server names (Go's
			// client would not send one the server's CA list excludes).
			cfg := authtest.ClientTLS(e.ca, nil)
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert.TLS, nil }
			tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
			defer tr.CloseIdleConnections()
			client := tokenv1connect.NewTokenServiceClient(&http.Client{Transport: tr}, e.url, connect.WithGRPC())
			err := generate("web")(context.Background(), client)
			if err == nil {
				t.Fatal("call succeeded")
			}
			// The handshake fails: the client sees a transport error
			// (how it is worded depends on when TLS 1.3 reports it: a
			// handshake alert, or a broken pipe while the request is
			// written, which connect-go reports as canceled), not an
			// answer of the service.
			if code := connect.CodeOf(err); code != connect.CodeUnavailable && code != connect.CodeUnknown && code != connect.CodeCanceled {
				t.Fatalf("err = %v, want a TLS handshake failure", err)
			}
			if got := e.svc.take(); len(got) != 0 {
				t.Fatalf("reached %+v", got)
			}
		})
	}
	// Go's client keeps a certificate of another CA to itself: the call
	// then has no credential.
	client := tokenv1connect.NewTokenServiceClient(e.httpClient(otherCA.ClientURI(t, issuerURI), nil), e.url, connect.WithGRPC())
	if code := connect.CodeOf(generate("web")(context.Background(), client)); code != connect.CodeUnauthenticated {
		t.Fatalf("certificate of another CA, not sent: %v, want unauthenticated", code)
	}
	// A client that does not trust the server's CA does not talk to it.
	client = tokenv1connect.NewTokenServiceClient(e.httpClient(nil, otherCA), e.url)
	if err := jwks(context.Background(), client); err == nil {
		t.Fatal("client accepted a server certificate from an untrusted CA")
	}
	if got := e.svc.take(); len(got) != 0 {
		t.Fatalf("reached %+v", got)
	}
}

// TestHTTPPaths: the paths that are not RPCs.
func TestHTTPPaths(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	for _, tc := range []struct {
		path, auth string
		cert       *authtest.Cert
		want       int
	}{
		{"/healthz", "", nil, http.StatusOK},
		{"/.well-known/jwks.json", "", nil, http.StatusOK},
		{"/.well-known/jwks.json", bearer("tdk_unknown"), nil, http.StatusOK},
		{"/metrics", "", nil, http.StatusUnauthorized},
		{"/metrics", bearer("tdk_unknown"), nil, http.StatusUnauthorized},
		{"/metrics", bearer(e.keys["expired"]), nil, http.StatusUnauthorized},
		{"/metrics", bearer(e.keys["rs"]), nil, http.StatusForbidden},
		{"/metrics", bearer(e.keys["admin"]), nil, http.StatusOK},
		{"/metrics", "", e.ca.ClientCN(t, adminCN), http.StatusOK},
		{"/nope", "", nil, http.StatusUnauthorized},
		{"/nope", bearer(e.keys["everyone"]), nil, http.StatusForbidden},
		{"/healthz/../metrics", bearer(e.keys["rs"]), nil, http.StatusForbidden},
		{"/token.v1.TokenService/Unknown", bearer(e.keys["everyone"]), nil, http.StatusForbidden},
	} {
		t.Run(tc.path+" "+tc.auth, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, e.url+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := e.httpClient(tc.cert, nil).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
			if resp.StatusCode == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
}

// TestRateLimitFlood: one caller floods and is refused past its burst;
// another caller, flooding at the same time within its own burst, is not.
func TestRateLimitFlood(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil) // the clock stands still: buckets never refill
	a := tokenv1connect.NewTokenServiceClient(e.httpClient(nil, nil), e.url, clientOpts(true, bearer(e.keys["flood-a"]))...)
	b := tokenv1connect.NewTokenServiceClient(e.httpClient(nil, nil), e.url, clientOpts(false, bearer(e.keys["flood-b"]))...)
	ctx := context.Background()
	const flood = 50
	var wg sync.WaitGroup
	codes := make(chan connect.Code, flood)
	for range flood {
		wg.Go(func() { codes <- connect.CodeOf(validateDPoP(ctx, a)) })
	}
	var bErrs []error
	for range 3 { // flood-b's burst
		if err := validateDPoP(ctx, b); err != nil {
			bErrs = append(bErrs, err)
		}
	}
	wg.Wait()
	close(codes)
	okA, limitedA := 0, 0
	for c := range codes {
		switch c {
		case connect.CodeUnknown: // CodeOf(nil)
			okA++
		case connect.CodeResourceExhausted:
			limitedA++
		default:
			t.Fatalf("flood-a got %v", c)
		}
	}
	if okA != 3 || limitedA != flood-3 {
		t.Fatalf("flood-a: %d allowed, %d limited; want 3 and %d", okA, limitedA, flood-3)
	}
	if len(bErrs) != 0 {
		t.Fatalf("flood-b starved: %v", bErrs)
	}
	if n := e.obs.count(tokenv1connect.TokenServiceValidateDPoPProcedure, auth.ReasonRateLimited); n != flood-3 {
		t.Fatalf("rate-limited refusals counted %d, want %d", n, flood-3)
	}
	err := validateDPoP(ctx, a)
	checkRefusal(t, err)
	// Time passes: the bucket refills (0.001/s: one token in 1000 s).
	e.now = e.now.Add(1000 * time.Second)
	if err := validateDPoP(ctx, a); err != nil {
		t.Fatalf("after refill: %v", err)
	}
}

// TestPolicyReload: a reloaded policy applies to the next call; a bad file
// keeps the previous policy.
func TestPolicyReload(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	old := tokenv1connect.NewTokenServiceClient(e.httpClient(nil, nil), e.url, clientOpts(false, bearer(e.keys["rs"]))...)
	if err := validateDPoP(ctx, old); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(e.dir, "policy.yaml")
	newKeys := writePolicy(t, path, map[string]string{"rs-new": "    roles: [resource-server]\n"}, "")
	if err := e.policy.Reload(); err != nil {
		t.Fatal(err)
	}
	if code := connect.CodeOf(validateDPoP(ctx, old)); code != connect.CodeUnauthenticated {
		t.Fatalf("removed key: %v, want unauthenticated", code)
	}
	fresh := tokenv1connect.NewTokenServiceClient(e.httpClient(nil, nil), e.url, clientOpts(true, bearer(newKeys["rs-new"]))...)
	if err := validateDPoP(ctx, fresh); err != nil {
		t.Fatalf("new key: %v", err)
	}
	if err := os.WriteFile(path, []byte("api_keys:\n  - name: x\n    sha256: zz\n"+auth.EndMarker+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.policy.Reload(); !errors.Is(err, auth.ErrInvalidPolicy) {
		t.Fatalf("reload of a bad file: %v, want ErrInvalidPolicy", err)
	}
	if err := validateDPoP(ctx, fresh); err != nil {
		t.Fatalf("after a bad reload: %v", err)
	}
}

// TestCertificateReload: new connections get the new certificate; a bad
// pair keeps the old one.
func TestCertificateReload(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	served := func() string {
		t.Helper()
		conn, err := tls.Dial("tcp", strings.TrimPrefix(e.url, "https://"), authtest.ClientTLS(e.ca, nil))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		st := conn.ConnectionState()
		if st.NegotiatedProtocol != "h2" {
			t.Errorf("ALPN negotiated %q, want h2", st.NegotiatedProtocol)
		}
		return st.PeerCertificates[0].SerialNumber.String()
	}
	first := served()
	next := e.ca.ServerCert(t)
	next.WriteFiles(t, e.dir, "server")
	if err := e.certs.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := served(); got != next.Leaf.SerialNumber.String() || got == first {
		t.Fatalf("served serial %s, want the new %s", got, next.Leaf.SerialNumber)
	}
	// A new certificate with the old key: refused, the previous pair stays.
	if err := os.WriteFile(filepath.Join(e.dir, "server.crt"), e.ca.ServerCert(t).CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.certs.Reload(); err == nil {
		t.Fatal("a mismatched pair was loaded")
	}
	if got := served(); got != next.Leaf.SerialNumber.String() {
		t.Fatalf("served serial %s after a bad reload, want %s", got, next.Leaf.SerialNumber)
	}
}

// TestDisabled: AUTH_MODE=none lets every call through, with no actor.
func TestDisabled(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *auth.Config) { c.Disabled = true })
	client := tokenv1connect.NewTokenServiceClient(e.httpClient(nil, nil), e.url)
	for _, call := range []rpcCall{generate("any"), revokeSubject, rotate, watch} {
		if err := call(context.Background(), client); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range e.svc.take() {
		if c.actor != "" || c.identity.Kind != auth.KindNone {
			t.Fatalf("call %+v", c)
		}
	}
	resp, err := e.httpClient(nil, nil).Get(e.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
}

// TestDisabledRefusesForeignHost: with AUTH_MODE=none a request whose
// Host is a foreign name (a page rebound to 127.0.0.1) is refused with a
// message that says why; localhost and loopback addresses are served.
func TestDisabledRefusesForeignHost(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *auth.Config) { c.Disabled = true })
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(e.url, "https://"))
	for _, tc := range []struct {
		host string
		ok   bool
	}{
		{"127.0.0.1:" + port, true},
		{"localhost:" + port, true},
		{"[::1]:" + port, true},
		{"attacker.example:" + port, false},
		{"127.0.0.1.nip.io:" + port, false},
	} {
		t.Run(tc.host, func(t *testing.T) {
			hc := e.httpClient(nil, nil)
			hc.Transport = hostTransport{host: tc.host, next: hc.Transport}
			client := tokenv1connect.NewTokenServiceClient(hc, e.url)
			err := rotate(context.Background(), client)
			if tc.ok {
				if err != nil {
					t.Fatalf("Host %q: %v", tc.host, err)
				}
				return
			}
			if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "AUTH_MODE=none") || !strings.Contains(err.Error(), "DNS rebinding") {
				t.Fatalf("Host %q: %v, want permission_denied naming AUTH_MODE=none and DNS rebinding", tc.host, err)
			}
			resp, err := hc.Get(e.url + "/healthz")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("GET /healthz with Host %q: %d, want 403", tc.host, resp.StatusCode)
			}
		})
	}
}

// hostTransport sends every request with Host (HTTP/2 :authority) host.
type hostTransport struct {
	host string
	next http.RoundTripper
}

func (h hostTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Host = h.host
	return h.next.RoundTrip(r)
}

// TestInterceptorAlone: without the middleware, API keys still work and
// a certificate caller is refused (its certificate is not visible).
func TestInterceptorAlone(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	keys := writePolicy(t, filepath.Join(dir, "p.yaml"), map[string]string{"rs": "    roles: [resource-server]\n"}, testMTLS)
	pol, err := auth.LoadPolicy(filepath.Join(dir, "p.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	guard, err := auth.New(auth.Config{Policy: pol, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	svc := &fakeService{}
	ca := authtest.NewCA(t, "ca")
	srv := &http.Server{TLSConfig: &tls.Config{Certificates: []tls.Certificate{ca.ServerCert(t).TLS}, ClientCAs: ca.Pool(), ClientAuth: tls.VerifyClientCertIfGiven, NextProtos: []string{"h2"}}}
	mux := http.NewServeMux()
	mux.Handle(tokenv1connect.NewTokenServiceHandler(svc, connect.WithInterceptors(guard.Interceptor())))
	srv.Handler = mux
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	url := "https://" + ln.Addr().String()
	hc := func(cert *authtest.Cert) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: authtest.ClientTLS(ca, cert), ForceAttemptHTTP2: true}}
	}
	withKey := tokenv1connect.NewTokenServiceClient(hc(nil), url, clientOpts(true, bearer(keys["rs"]))...)
	if err := validateDPoP(context.Background(), withKey); err != nil {
		t.Fatal(err)
	}
	withCert := tokenv1connect.NewTokenServiceClient(hc(ca.ClientURI(t, issuerURI)), url, connect.WithGRPC())
	if code := connect.CodeOf(generate("web")(context.Background(), withCert)); code != connect.CodeUnauthenticated {
		t.Fatalf("certificate caller without middleware: %v", code)
	}
}

func TestAllowedClient(t *testing.T) {
	t.Parallel()
	restricted := auth.NewContext(context.Background(), auth.Identity{Kind: auth.KindAPIKey, ClientIDs: []string{"web"}})
	open := auth.NewContext(context.Background(), auth.Identity{Kind: auth.KindAPIKey})
	for _, tc := range []struct {
		name     string
		ctx      context.Context
		clientID string
		wantErr  error
		wantCode connect.Code
	}{
		{"listed", restricted, "web", nil, 0},
		{"not listed", restricted, "ios", auth.ErrClientNotAllowed, connect.CodePermissionDenied},
		{"empty", restricted, "", auth.ErrClientNotAllowed, connect.CodePermissionDenied},
		{"unrestricted", open, "anything", nil, 0},
		{"no identity", context.Background(), "web", auth.ErrNoCredential, connect.CodeUnauthenticated},
	} {
		err := auth.AllowedClient(tc.ctx, tc.clientID)
		if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.wantErr)
		}
		if err != nil && connect.CodeOf(err) != tc.wantCode {
			t.Errorf("%s: code %v, want %v", tc.name, connect.CodeOf(err), tc.wantCode)
		}
	}
}

func TestNewRequiresPolicy(t *testing.T) {
	t.Parallel()
	if _, err := auth.New(auth.Config{}); err == nil {
		t.Fatal("a guard without policy was made")
	}
	if _, err := auth.New(auth.Config{Disabled: true}); err != nil {
		t.Fatal(err)
	}
}

// TestRefuseAPIKeys: with certificates only (AUTH_MODE=mtls), a key the
// policy holds is refused like an unknown one; certificates still work.
func TestRefuseAPIKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *auth.Config) { c.RefuseAPIKeys = true })
	ctx := context.Background()
	withKey := tokenv1connect.NewTokenServiceClient(e.httpClient(nil, nil), e.url, clientOpts(false, bearer(e.keys["admin"]))...)
	err := rotate(ctx, withKey)
	if code := connect.CodeOf(err); code != connect.CodeUnauthenticated {
		t.Fatalf("admin key: %v, want unauthenticated", err)
	}
	checkRefusal(t, err)
	// A key with a certificate is still a presented credential that fails.
	both := tokenv1connect.NewTokenServiceClient(e.httpClient(e.ca.ClientCN(t, adminCN), nil), e.url, clientOpts(true, bearer(e.keys["admin"]))...)
	if code := connect.CodeOf(rotate(ctx, both)); code != connect.CodeUnauthenticated {
		t.Fatalf("admin key with admin certificate: %v, want unauthenticated", code)
	}
	withCert := tokenv1connect.NewTokenServiceClient(e.httpClient(e.ca.ClientCN(t, adminCN), nil), e.url, connect.WithGRPC())
	if err := rotate(ctx, withCert); err != nil {
		t.Fatalf("admin certificate: %v", err)
	}
	if got := e.svc.take(); len(got) != 1 || got[0].actor != "mtls:"+adminCN {
		t.Fatalf("reached %+v", got)
	}
}

// TestRefusalLabels: the labels an Observer receives are the non-public
// procedures and paths, and "unknown".
func TestRefusalLabels(t *testing.T) {
	t.Parallel()
	labels := auth.RefusalLabels()
	has := map[string]bool{}
	for _, l := range labels {
		has[l] = true
	}
	for _, want := range []string{tokenv1connect.TokenServiceGenerateTokensProcedure, tokenv1connect.TokenServiceWatchRevocationsProcedure, "/metrics", "/projections/digest", auth.UnknownPath} {
		if !has[want] {
			t.Errorf("%s missing from %v", want, labels)
		}
	}
	for _, public := range []string{tokenv1connect.TokenServiceGetJWKSProcedure, "/healthz", "/readyz", "/.well-known/jwks.json"} {
		if has[public] {
			t.Errorf("public %s in %v", public, labels)
		}
	}
	if labels[len(labels)-1] != auth.UnknownPath {
		t.Errorf("last label %q, want %q", labels[len(labels)-1], auth.UnknownPath)
	}
}
