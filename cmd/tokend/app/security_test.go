package app_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/proto/token/v1/tokenv1connect"
)

// Outcomes of a call in the matrix: a Connect code name ("ok" for
// success), an HTTP status ("200"), or "tls" for a failed handshake.
const (
	ok      = "ok"
	unauth  = "unauthenticated"
	denied  = "permission_denied"
	limited = "resource_exhausted"
	tlsFail = "tls"
	na      = "" // the case does not apply to this endpoint
)

// rpcEndpoint is one RPC (or one kind of RevokeToken) of the matrix.
type rpcEndpoint struct {
	name string
	// req returns a fresh request; clientID, if not "", replaces its
	// client_id.
	req  func(clientID string) proto.Message
	call func(context.Context, tokenv1connect.TokenServiceClient, proto.Message) error
	// right may call it ("" public); wrongKey and wrongCert hold roles
	// that may not.
	right, wrongKey, wrongCert string
	clientBound                bool
}

func rpcEndpoints() []rpcEndpoint {
	unary := func(f func(context.Context, tokenv1connect.TokenServiceClient, proto.Message) error) func(context.Context, tokenv1connect.TokenServiceClient, proto.Message) error {
		return f
	}
	return []rpcEndpoint{
		{name: "GenerateTokens", right: "login", wrongKey: "orders-api", wrongCert: "cert:admin", clientBound: true,
			req: func(c string) proto.Message {
				return &tokenv1.GenerateTokensRequest{Subject: "matrix-user", ClientId: or(c, "web"), Audience: []string{"api"}}
			},
			call: unary(func(ctx context.Context, c tokenv1connect.TokenServiceClient, m proto.Message) error {
				_, err := c.GenerateTokens(ctx, connect.NewRequest(m.(*tokenv1.GenerateTokensRequest)))
				return err
			})},
		{name: "RefreshTokens", right: "login", wrongKey: "orders-api", wrongCert: "cert:rs", clientBound: true,
			req: func(c string) proto.Message {
				return &tokenv1.RefreshTokensRequest{RefreshToken: "f.s", ClientId: or(c, "web")}
			},
			call: unary(func(ctx context.Context, c tokenv1connect.TokenServiceClient, m proto.Message) error {
				_, err := c.RefreshTokens(ctx, connect.NewRequest(m.(*tokenv1.RefreshTokensRequest)))
				return err
			})},
		{name: "RevokeToken/token", right: "login", wrongKey: "orders-api", wrongCert: "cert:rs",
			req: func(string) proto.Message {
				return &tokenv1.RevokeTokenRequest{Target: &tokenv1.RevokeTokenRequest_RefreshToken{RefreshToken: "f.s"}}
			},
			call: revokeCall},
		{name: "RevokeToken/family", right: "login", wrongKey: "orders-api", wrongCert: "cert:rs",
			req: func(string) proto.Message {
				return &tokenv1.RevokeTokenRequest{Target: &tokenv1.RevokeTokenRequest_FamilyId{FamilyId: "nofamily"}}
			},
			call: revokeCall},
		{name: "RevokeToken/subject", right: "ops", wrongKey: "login-any", wrongCert: "cert:issuer",
			req: func(string) proto.Message {
				return &tokenv1.RevokeTokenRequest{Target: &tokenv1.RevokeTokenRequest_Subject{Subject: "matrix-victim"}}
			},
			call: revokeCall},
		{name: "GetJWKS", right: "",
			req: func(string) proto.Message { return &tokenv1.GetJWKSRequest{} },
			call: unary(func(ctx context.Context, c tokenv1connect.TokenServiceClient, m proto.Message) error {
				_, err := c.GetJWKS(ctx, connect.NewRequest(m.(*tokenv1.GetJWKSRequest)))
				return err
			})},
		{name: "ValidateDPoP", right: "orders-api", wrongKey: "login-any", wrongCert: "cert:issuer",
			req: func(string) proto.Message {
				return &tokenv1.ValidateDPoPRequest{Proof: "x.y.z", HttpMethod: "GET", HttpUri: "https://api.example/x", AccessToken: "a.b.c"}
			},
			call: unary(func(ctx context.Context, c tokenv1connect.TokenServiceClient, m proto.Message) error {
				_, err := c.ValidateDPoP(ctx, connect.NewRequest(m.(*tokenv1.ValidateDPoPRequest)))
				return err
			})},
		{name: "RotateSigningKey", right: "ops", wrongKey: "login-any", wrongCert: "cert:rs",
			req: func(string) proto.Message { return &tokenv1.RotateSigningKeyRequest{} },
			call: unary(func(ctx context.Context, c tokenv1connect.TokenServiceClient, m proto.Message) error {
				_, err := c.RotateSigningKey(ctx, connect.NewRequest(m.(*tokenv1.RotateSigningKeyRequest)))
				return err
			})},
		{name: "ListSigningKeys", right: "ops", wrongKey: "orders-api", wrongCert: "cert:issuer",
			req: func(string) proto.Message { return &tokenv1.ListSigningKeysRequest{} },
			call: unary(func(ctx context.Context, c tokenv1connect.TokenServiceClient, m proto.Message) error {
				_, err := c.ListSigningKeys(ctx, connect.NewRequest(m.(*tokenv1.ListSigningKeysRequest)))
				return err
			})},
		{name: "IntrospectToken", right: "orders-api", wrongKey: "ops", wrongCert: "cert:issuer",
			req: func(string) proto.Message { return &tokenv1.IntrospectTokenRequest{Token: "a.b.c"} },
			call: unary(func(ctx context.Context, c tokenv1connect.TokenServiceClient, m proto.Message) error {
				_, err := c.IntrospectToken(ctx, connect.NewRequest(m.(*tokenv1.IntrospectTokenRequest)))
				return err
			})},
		{name: "ListFamilies", right: "ops", wrongKey: "login-any", wrongCert: "cert:rs",
			req: func(string) proto.Message { return &tokenv1.ListFamiliesRequest{Subject: "matrix-user"} },
			call: unary(func(ctx context.Context, c tokenv1connect.TokenServiceClient, m proto.Message) error {
				_, err := c.ListFamilies(ctx, connect.NewRequest(m.(*tokenv1.ListFamiliesRequest)))
				return err
			})},
		{name: "WatchRevocations", right: "orders-api", wrongKey: "login-any", wrongCert: "cert:admin",
			req: func(string) proto.Message { return &tokenv1.WatchRevocationsRequest{} },
			call: func(ctx context.Context, c tokenv1connect.TokenServiceClient, m proto.Message) error {
				ctx, cancel := context.WithCancel(ctx)
				defer cancel()
				st, err := c.WatchRevocations(ctx, connect.NewRequest(m.(*tokenv1.WatchRevocationsRequest)))
				if err != nil {
					return err
				}
				defer st.Close()
				if st.Receive() { // the heartbeat sent once subscribed
					return nil
				}
				if st.Err() == nil {
					return errors.New("stream ended without a message")
				}
				return st.Err()
			}},
	}
}

func revokeCall(ctx context.Context, c tokenv1connect.TokenServiceClient, m proto.Message) error {
	_, err := c.RevokeToken(ctx, connect.NewRequest(m.(*tokenv1.RevokeTokenRequest)))
	return err
}

func or(s, def string) string {
	if s != "" {
		return s
	}
	return def
}

// pad makes m larger than MAX_REQUEST_BYTES (4096) with an unknown field,
// which every codec carries.
func pad(m proto.Message) proto.Message {
	raw := protowire.AppendTag(nil, 9999, protowire.BytesType)
	raw = protowire.AppendBytes(raw, make([]byte, 8192))
	m.ProtoReflect().SetUnknown(raw)
	return m
}

// outcome names the result of a call.
func outcome(err error) string {
	if err == nil {
		return ok
	}
	if isHandshakeFailure(err) {
		return tlsFail
	}
	return connect.CodeOf(err).String()
}

// isHandshakeFailure reports whether err is the client's view of a TLS
// handshake the server refused: not an answer of the service. With TLS 1.3
// the client's handshake completes before the server has verified the
// client certificate, so the client meets the server's alert on its first
// read, or, if it was still writing the request, a reset connection. The
// server's log tells which certificate it refused (checked separately).
func isHandshakeFailure(err error) bool {
	var ce *connect.Error
	if errors.As(err, &ce) && ce.Code() != connect.CodeUnavailable && ce.Code() != connect.CodeUnknown && ce.Code() != connect.CodeCanceled {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "remote error: tls: ") || strings.Contains(s, "broken pipe") || strings.Contains(s, "connection reset by peer") ||
		strings.Contains(s, "http2: client conn could not be established")
}

// matrixCase is one column of the matrix.
type matrixCase struct {
	name string
	// caller of the call for an endpoint ("" none; see secured.client).
	caller func(rpcEndpoint) string
	// clientID, if set, is the client_id of the request.
	clientID string
	oversize bool
	// want for a protected endpoint and a public one.
	want, wantPublic string
	// only client-bound endpoints.
	clientBoundOnly bool
}

func matrixCases(unknownKey string) []matrixCase {
	fixed := func(c string) func(rpcEndpoint) string { return func(rpcEndpoint) string { return c } }
	return []matrixCase{
		{name: "no credential", caller: fixed(""), want: unauth, wantPublic: ok},
		{name: "wrong role, API key", caller: func(e rpcEndpoint) string { return e.wrongKey }, want: denied, wantPublic: ok},
		{name: "wrong role, certificate", caller: func(e rpcEndpoint) string { return e.wrongCert }, want: denied, wantPublic: ok},
		{name: "expired API key", caller: fixed("retired"), want: unauth, wantPublic: ok},
		{name: "unknown API key", caller: fixed("key:" + unknownKey), want: unauth, wantPublic: ok},
		{name: "certificate of another CA", caller: fixed("cert:other-ca"), want: tlsFail, wantPublic: tlsFail},
		{name: "expired certificate", caller: fixed("cert:expired"), want: tlsFail, wantPublic: tlsFail},
		{name: "client_id not owned, API key", caller: fixed("login"), clientID: "mobile", want: denied, clientBoundOnly: true},
		{name: "client_id not owned, certificate", caller: fixed("cert:issuer"), clientID: "mobile", want: denied, clientBoundOnly: true},
		{name: "oversized request", caller: func(e rpcEndpoint) string { return e.right }, oversize: true, want: limited, wantPublic: limited},
		{name: "flood over the rate limit", caller: fixed("flood"), want: limited, wantPublic: ok},
	}
}

// TestSecurityMatrix calls every RPC and HTTP endpoint of a tokend started
// in process (TLS, mTLS and API keys; certificates from authtest) with
// every kind of unwelcome caller, over Connect, gRPC and gRPC-Web, and
// checks the code and that the stream's last sequence did not move.
func TestSecurityMatrix(t *testing.T) {
	s := startSecured(t, nil)
	ctx := context.Background()
	unknownKey := "tdk_" + base64.RawURLEncoding.EncodeToString(randomBytes(t, 32))

	// The flood caller's bucket holds one call and refills in 1000 s:
	// spend it, then flood from many goroutines while another caller
	// keeps being served.
	if _, err := s.client(t, "grpc", "flood").ListSigningKeys(ctx, connect.NewRequest(&tokenv1.ListSigningKeysRequest{})); err != nil {
		t.Fatalf("flood caller's first call: %v", err)
	}
	t.Run("flood does not starve others", func(t *testing.T) {
		before := lastSeq(t, s.m)
		flood, steady := s.client(t, "grpc", "flood"), s.client(t, "connect", "login")
		var wg sync.WaitGroup
		codes := make(chan string, 64)
		for range 64 {
			wg.Go(func() {
				_, err := flood.GenerateTokens(ctx, connect.NewRequest(&tokenv1.GenerateTokensRequest{Subject: "flood", ClientId: "web"}))
				codes <- outcome(err)
			})
		}
		for i := range 5 {
			if _, err := steady.GenerateTokens(ctx, connect.NewRequest(&tokenv1.GenerateTokensRequest{Subject: "steady", ClientId: "web", Audience: []string{"api"}})); err != nil {
				t.Fatalf("another caller during the flood, call %d: %v", i, err)
			}
		}
		wg.Wait()
		close(codes)
		for c := range codes {
			if c != limited {
				t.Fatalf("flood call: %s, want %s", c, limited)
			}
		}
		if got := lastSeq(t, s.m) - before; got != 5 {
			t.Fatalf("%d events appended, want the other caller's 5", got)
		}
	})

	cases := matrixCases(unknownKey)
	for _, e := range rpcEndpoints() {
		for _, protocol := range []string{"connect", "grpc", "grpc-web"} {
			// The right caller passes the policy (the handler may still
			// refuse the made-up input, but not as a refusal of the
			// caller).
			t.Run(fmt.Sprintf("%s/%s/right caller", e.name, protocol), func(t *testing.T) {
				err := e.call(ctx, s.client(t, protocol, e.right), e.req(""))
				switch outcome(err) {
				case unauth, denied, limited, tlsFail:
					t.Fatalf("%s refused to %q: %v", e.name, e.right, err)
				}
			})
			for _, c := range cases {
				if c.clientBoundOnly && !e.clientBound {
					continue
				}
				want := c.want
				if e.right == "" {
					want = c.wantPublic
				}
				t.Run(fmt.Sprintf("%s/%s/%s", e.name, protocol, c.name), func(t *testing.T) {
					req := e.req(c.clientID)
					if c.oversize {
						req = pad(req)
					}
					before := lastSeq(t, s.m)
					err := e.call(ctx, s.client(t, protocol, c.caller(e)), req)
					if got := outcome(err); got != want {
						t.Fatalf("got %s (%v), want %s", got, err, want)
					}
					if c.name == "flood over the rate limit" && want == limited && !strings.Contains(err.Error(), "temporarily_unavailable") {
						t.Fatalf("flood refused as %v, want the rate limit's temporarily_unavailable", err)
					}
					if want != ok {
						if after := lastSeq(t, s.m); after != before {
							t.Fatalf("a refused call appended %d events", after-before)
						}
					}
					if want == unauth || want == denied {
						var ce *connect.Error
						if errors.As(err, &ce) && ce.Meta().Get("X-Correlation-Id") == "" {
							t.Errorf("refusal without correlation ID: %v", err)
						}
					}
				})
			}
		}
	}

	for _, e := range httpEndpoints(s) {
		for i, c := range cases {
			if c.clientBoundOnly {
				continue
			}
			want := e.want[i]
			if want == na {
				continue
			}
			t.Run(fmt.Sprintf("%s/%s", e.name, c.name), func(t *testing.T) {
				before := lastSeq(t, s.m)
				got := e.call(t, c.caller(rpcEndpoint{right: e.right, wrongKey: e.wrongKey, wrongCert: e.wrongCert}), c.oversize)
				if got != want {
					t.Fatalf("got %s, want %s", got, want)
				}
				if after := lastSeq(t, s.m); after != before {
					t.Fatalf("appended %d events", after-before)
				}
			})
		}
	}

	t.Run("the server refused the certificates in the handshake", func(t *testing.T) {
		logs := s.logs.String()
		for _, why := range []string{"certificate signed by unknown authority", "certificate has expired"} {
			if !strings.Contains(logs, "TLS handshake error") || !strings.Contains(logs, why) {
				t.Errorf("no TLS handshake error %q in the log", why)
			}
		}
	})

	t.Run("refusals are counted", func(t *testing.T) {
		body := get(t, http.DefaultClient, "http://"+s.m.MetricsAddr()+"/metrics", "")
		for _, series := range []string{
			`token_service_auth_refused_total{procedure="/token.v1.TokenService/GenerateTokens",reason="unauthenticated"}`,
			`token_service_auth_refused_total{procedure="/token.v1.TokenService/GenerateTokens",reason="client_not_allowed"}`,
			`token_service_auth_refused_total{procedure="/token.v1.TokenService/RotateSigningKey",reason="permission_denied"}`,
			`token_service_auth_refused_total{procedure="/token.v1.TokenService/WatchRevocations",reason="rate_limited"}`,
			`token_service_auth_refused_total{procedure="/projections/digest",reason="unauthenticated"}`,
		} {
			v, found := metricValue(body, series)
			if !found || v == 0 {
				t.Errorf("%s = %v (exposed %v), want > 0", series, v, found)
			}
		}
		// 3 protocols × (API key + certificate) + 64 from the flood's
		// own refusals are rate_limited, not client_not_allowed.
		if v, _ := metricValue(body, `token_service_auth_refused_total{procedure="/token.v1.TokenService/GenerateTokens",reason="client_not_allowed"}`); v != 6 {
			t.Errorf("client_not_allowed on GenerateTokens = %v, want 6", v)
		}
	})
}

// httpEndpoint is a row of the matrix that is not an RPC of the service;
// want holds the expected outcome per case of matrixCases, in order.
type httpEndpoint struct {
	name                       string
	right, wrongKey, wrongCert string
	call                       func(t *testing.T, caller string, oversize bool) string
	want                       []string
}

func httpEndpoints(s *secured) []httpEndpoint {
	getCall := func(path string) func(*testing.T, string, bool) string {
		return func(t *testing.T, caller string, oversize bool) string {
			return s.get(t, path, caller, oversize)
		}
	}
	//                  none    wrongKey wrongCert expired unknown otherCA  expCert  (cid)(cid) oversize flood
	public := []string{"200", "200", "200", "200", "200", tlsFail, tlsFail, na, na, "431", "200"}
	admin := []string{"401", "403", "403", "401", "401", tlsFail, tlsFail, na, na, "431", "429"}
	return []httpEndpoint{
		{name: "/.well-known/jwks.json", call: getCall("/.well-known/jwks.json"), want: public},
		{name: "/healthz", call: getCall("/healthz"), want: public},
		{name: "/readyz", call: getCall("/readyz"), want: public},
		{name: "/projections/digest", right: "ops", wrongKey: "login-any", wrongCert: "cert:rs", call: getCall("/projections/digest"), want: admin},
		// /metrics is on METRICS_ADDR: on the main port it is an admin
		// path that is not served.
		{name: "/metrics on the main port", right: "ops", wrongKey: "orders-api", wrongCert: "cert:issuer", call: getCall("/metrics"), want: admin},
		{name: "gRPC health", call: s.healthCall, want: []string{ok, ok, ok, ok, ok, tlsFail, tlsFail, na, na, limited, ok}},
		// Reflection is for any known caller: no role is wrong.
		{name: "gRPC reflection", right: "orders-api", wrongKey: "ops", wrongCert: "cert:issuer", call: s.reflectionCall,
			want: []string{unauth, ok, ok, unauth, unauth, tlsFail, tlsFail, na, na, limited, limited}},
	}
}

// get GETs path on the main port as caller and returns the status (or
// "tls"); oversize sends a header larger than the server's 64 KiB limit
// over HTTP/1.1 (an HTTP/2 client refuses to send it).
func (s *secured) get(t *testing.T, path, caller string, oversize bool) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	cert := ""
	switch {
	case strings.HasPrefix(caller, "cert:"):
		cert = strings.TrimPrefix(caller, "cert:")
	case strings.HasPrefix(caller, "key:"):
		req.Header.Set("Authorization", "Bearer "+strings.TrimPrefix(caller, "key:"))
	case caller != "":
		req.Header.Set("Authorization", "Bearer "+s.keys[caller])
	}
	if oversize {
		req.Header.Set("X-Padding", strings.Repeat("p", 70<<10))
	}
	resp, err := s.httpClient(t, cert, oversize).Do(req)
	if err != nil {
		if isHandshakeFailure(err) {
			return tlsFail
		}
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
		t.Error("401 without WWW-Authenticate")
	}
	return strconv.Itoa(resp.StatusCode)
}

// rawClient returns a gRPC client of procedure that sends Empty messages
// (padded ones for oversize), as caller.
func (s *secured) rawClient(t *testing.T, procedure, caller string) *connect.Client[emptypb.Empty, emptypb.Empty] {
	cert, authorization := "", ""
	switch {
	case strings.HasPrefix(caller, "cert:"):
		cert = strings.TrimPrefix(caller, "cert:")
	case strings.HasPrefix(caller, "key:"):
		authorization = "Bearer " + strings.TrimPrefix(caller, "key:")
	case caller != "":
		authorization = "Bearer " + s.keys[caller]
	}
	return connect.NewClient[emptypb.Empty, emptypb.Empty](s.httpClient(t, cert, false), s.url+procedure, protocolOptions("grpc", authorization)...)
}

func (s *secured) healthCall(t *testing.T, caller string, oversize bool) string {
	if oversize {
		_, err := s.rawClient(t, "/grpc.health.v1.Health/Check", caller).CallUnary(context.Background(), connect.NewRequest(pad(&emptypb.Empty{}).(*emptypb.Empty)))
		return outcome(err)
	}
	cert, authorization := s.split(caller)
	hc := grpchealth.NewClient(s.httpClient(t, cert, false), s.url, protocolOptions("grpc", authorization)...)
	res, err := hc.Check(context.Background(), &grpchealth.CheckRequest{Service: tokenv1connect.TokenServiceName})
	if err == nil && res.Status != grpchealth.StatusServing {
		t.Fatalf("health status %v", res.Status)
	}
	return outcome(err)
}

func (s *secured) reflectionCall(t *testing.T, caller string, oversize bool) string {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if oversize {
		st := s.rawClient(t, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", caller).CallBidiStream(ctx)
		_ = st.Send(pad(&emptypb.Empty{}).(*emptypb.Empty))
		_ = st.CloseRequest()
		_, err := st.Receive()
		_ = st.CloseResponse()
		return outcome(err)
	}
	cert, authorization := s.split(caller)
	var opts []grpcreflect.ClientStreamOption
	if authorization != "" {
		opts = append(opts, grpcreflect.WithRequestHeaders(http.Header{"Authorization": {authorization}}))
	}
	st := grpcreflect.NewClient(s.httpClient(t, cert, false), s.url).NewStream(ctx, opts...)
	defer func() { _, _ = st.Close() }()
	names, err := st.ListServices()
	if err == nil && len(names) == 0 {
		t.Fatal("reflection lists no service")
	}
	return outcome(err)
}

// split returns the certificate name and Authorization header of caller.
func (s *secured) split(caller string) (cert, authorization string) {
	switch {
	case strings.HasPrefix(caller, "cert:"):
		return strings.TrimPrefix(caller, "cert:"), ""
	case strings.HasPrefix(caller, "key:"):
		return "", "Bearer " + strings.TrimPrefix(caller, "key:")
	case caller != "":
		return "", "Bearer " + s.keys[caller]
	}
	return "", ""
}

// get returns the body of a GET with an optional Authorization header.
func get(t *testing.T, c *http.Client, url, authorization string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return string(b)
}

// metricValue finds series (name{labels} as exposed) in a scrape.
func metricValue(body, series string) (float64, bool) {
	for _, line := range strings.Split(body, "\n") {
		if v, found := strings.CutPrefix(line, series+" "); found {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}
