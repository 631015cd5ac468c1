package rpc_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/auth-platform/tokenservice/dpop"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
	"github.com/auth-platform/tokenservice/projections"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/proto/token/v1/tokenv1connect"
	"github.com/auth-platform/tokenservice/rpc"
	"github.com/auth-platform/tokenservice/signing"
)

type server struct {
	env     *issuertest.Env
	url     string
	client  tokenv1connect.TokenServiceClient
	http    *http.Client
	metrics *rpc.Metrics
	nonces  *dpop.Nonces
}

func newServer(t *testing.T) *server { return newServerNonce(t, false) }

func newServerNonce(t *testing.T, nonceRequired bool) *server {
	t.Helper()
	return newServerWith(t, nonceRequired, nil)
}

// newServerWith starts a server whose configuration mutate may change.
func newServerWith(t *testing.T, nonceRequired bool, mutate func(*rpc.Config)) *server {
	t.Helper()
	metrics := rpc.NewMetrics(nil)
	env := issuertest.New(t, issuertest.Options{RefreshTTL: time.Hour, Observer: metrics})
	nonces, err := dpop.NewNonces(issuertest.TestKey, time.Minute, env.Clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := dpop.NewVerifier(dpop.Config{Algorithms: signing.Algorithms, Now: env.Clock.Now, Nonces: nonces, NonceRequired: nonceRequired,
		Replay: dpop.LogReplayStore{Log: env.Log, Now: env.Clock.Now}})
	if err != nil {
		t.Fatal(err)
	}
	projector, err := projections.NewFamilyProjector(env.Log, projections.ProjectorConfig{Sealer: env.Sealer, Observer: metrics})
	if err != nil {
		t.Fatal(err)
	}
	families, err := projections.NewFamilyStore(env.Log.JetStream(), projections.StoreConfig{Sealer: env.Sealer, Observer: metrics})
	if err != nil {
		t.Fatal(err)
	}
	pctx, stopProjector := context.WithCancel(context.Background())
	projectorDone := make(chan struct{})
	go func() { defer close(projectorDone); _ = projector.Run(pctx) }()
	t.Cleanup(func() { stopProjector(); <-projectorDone })
	cfg := rpc.Config{Issuer: env.Issuer, DPoP: verifier, Keys: env.Set, KeyAdmin: env.Keyring, KeyCompromiser: env.Responder, Revocations: env.Set, Metrics: metrics, Ready: func() bool { return true },
		Families: families, Feed: projections.RevocationFeed{Log: env.Log},
		MaxRequestBytes: 8 << 10, Now: env.Clock.Now}
	if mutate != nil {
		mutate(&cfg)
	}
	h := rpc.New(cfg)
	h.SetServing(true)
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &server{env: env, url: srv.URL, http: srv.Client(), metrics: metrics, nonces: nonces,
		client: tokenv1connect.NewTokenServiceClient(srv.Client(), srv.URL)}
}

// oauthCode returns the OAuth error code carried by err, checking that the
// message starts with it and the detail holds the same.
func oauthCode(t *testing.T, err error) (connect.Code, string) {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Fatalf("not a connect error: %v", err)
	}
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if derr != nil {
			t.Fatal(derr)
		}
		if oe, ok := v.(*tokenv1.OAuthError); ok {
			if !strings.HasPrefix(ce.Message(), oe.GetError()) {
				t.Fatalf("message %q does not start with the OAuth code %q", ce.Message(), oe.GetError())
			}
			return ce.Code(), oe.GetError()
		}
	}
	t.Fatalf("no OAuthError detail in %v", err)
	return 0, ""
}

func TestBadInput(t *testing.T) {
	s := newServer(t)
	ctx := context.Background()
	good := &tokenv1.GenerateTokensRequest{Subject: "alice", ClientId: "web", Audience: []string{"api"}, Scopes: []string{"read"}}
	tok, err := s.client.GenerateTokens(ctx, connect.NewRequest(good))
	if err != nil {
		t.Fatal(err)
	}
	rt := tok.Msg.GetRefreshToken()
	fid := tok.Msg.GetFamilyId()
	// An expired family: issued, then the clock passes its refresh TTL.
	expired, err := s.client.GenerateTokens(ctx, connect.NewRequest(good))
	if err != nil {
		t.Fatal(err)
	}

	gen := func(mod func(*tokenv1.GenerateTokensRequest)) func() error {
		return func() error {
			r := &tokenv1.GenerateTokensRequest{Subject: "alice", ClientId: "web", Audience: []string{"api"}}
			mod(r)
			_, err := s.client.GenerateTokens(ctx, connect.NewRequest(r))
			return err
		}
	}
	ref := func(token, client string) func() error {
		return func() error {
			_, err := s.client.RefreshTokens(ctx, connect.NewRequest(&tokenv1.RefreshTokensRequest{RefreshToken: token, ClientId: client}))
			return err
		}
	}
	extra, _ := structpb.NewStruct(map[string]any{"sub": "mallory"})
	escapes, _ := structpb.NewStruct(map[string]any{"x": strings.Repeat("\x01", 1000)})
	tests := []struct {
		name     string
		call     func() error
		wantCode string
		appends  uint64
	}{
		{"missing subject", gen(func(r *tokenv1.GenerateTokensRequest) { r.Subject = "" }), "invalid_request", 0},
		{"long subject", gen(func(r *tokenv1.GenerateTokensRequest) { r.Subject = strings.Repeat("a", 256) }), "invalid_request", 0},
		{"control char in subject", gen(func(r *tokenv1.GenerateTokensRequest) { r.Subject = "a\x00b" }), "invalid_request", 0},
		{"missing client", gen(func(r *tokenv1.GenerateTokensRequest) { r.ClientId = "" }), "invalid_request", 0},
		{"missing audience", gen(func(r *tokenv1.GenerateTokensRequest) { r.Audience = nil }), "invalid_request", 0},
		{"scope with space", gen(func(r *tokenv1.GenerateTokensRequest) { r.Scopes = []string{"a b"} }), "invalid_request", 0},
		{"too many scopes", gen(func(r *tokenv1.GenerateTokensRequest) { r.Scopes = make([]string, 65) }), "invalid_request", 0},
		{"registered extra claim", gen(func(r *tokenv1.GenerateTokensRequest) { r.ExtraClaims = extra }), "invalid_request", 0},
		{"extra claims that escape to 6 KB of JSON", gen(func(r *tokenv1.GenerateTokensRequest) { r.ExtraClaims = escapes }), "invalid_request", 0},
		{"dpop proof without method and URI", gen(func(r *tokenv1.GenerateTokensRequest) { r.DpopProof = "x.y.z" }), "invalid_request", 0},
		{"garbage dpop proof", gen(func(r *tokenv1.GenerateTokensRequest) {
			r.DpopProof, r.HttpMethod, r.HttpUri = "x.y.z", "POST", "https://as.example/token"
		}), "invalid_dpop_proof", 0},
		{"dpop_jkt without a proof", gen(func(r *tokenv1.GenerateTokensRequest) { r.DpopJkt = "abc" }), "invalid_dpop_proof", 0},
		{"dpop method without a proof", func() error {
			_, err := s.client.RefreshTokens(ctx, connect.NewRequest(&tokenv1.RefreshTokensRequest{RefreshToken: rt, ClientId: "web", HttpMethod: "POST"}))
			return err
		}, "invalid_request", 0},
		{"garbage refresh token", ref("garbage", "web"), "invalid_grant", 0},
		{"empty refresh token", ref("", "web"), "invalid_grant", 0},
		{"truncated refresh token", ref(rt[:len(rt)-1], "web"), "invalid_grant", 0},
		{"refresh token with padding", ref(rt[:len(rt)-1]+"=", "web"), "invalid_grant", 0},
		{"unknown family", ref("AAAAAAAAAAAAAAAAAAAAAA."+rt[23:], "web"), "invalid_grant", 0},
		{"guessed secret", ref(fid+".AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "web"), "invalid_grant", 0},
		{"wrong client", ref(rt, "mobile"), "invalid_grant", 0},
		{"missing client on refresh", ref(rt, ""), "invalid_request", 0},
		{"narrowing beyond grant", func() error {
			_, err := s.client.RefreshTokens(ctx, connect.NewRequest(&tokenv1.RefreshTokensRequest{RefreshToken: rt, ClientId: "web", Scopes: []string{"admin"}}))
			return err
		}, "invalid_scope", 0},
		{"expired family", func() error {
			s.env.Clock.Advance(2 * time.Hour)
			defer s.env.Clock.Advance(-2 * time.Hour)
			return ref(expired.Msg.GetRefreshToken(), "web")()
		}, "invalid_grant", 0},
		{"revoke with no target", func() error {
			_, err := s.client.RevokeToken(ctx, connect.NewRequest(&tokenv1.RevokeTokenRequest{}))
			return err
		}, "invalid_request", 0},
		{"revoke with a reason holding a line break", func() error {
			_, err := s.client.RevokeToken(ctx, connect.NewRequest(&tokenv1.RevokeTokenRequest{Target: &tokenv1.RevokeTokenRequest_FamilyId{FamilyId: fid}, Reason: "logout\nforged log line"}))
			return err
		}, "invalid_request", 0},
		{"revoke with a reason too long", func() error {
			_, err := s.client.RevokeToken(ctx, connect.NewRequest(&tokenv1.RevokeTokenRequest{Target: &tokenv1.RevokeTokenRequest_FamilyId{FamilyId: fid}, Reason: strings.Repeat("r", 65)}))
			return err
		}, "invalid_request", 0},
		{"oversized request", gen(func(r *tokenv1.GenerateTokensRequest) { r.Subject = strings.Repeat("a", 9<<10) }), "", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := s.env.LastSeq(t)
			err := tc.call()
			if err == nil {
				t.Fatal("accepted")
			}
			if tc.wantCode == "" {
				if connect.CodeOf(err) != connect.CodeResourceExhausted {
					t.Fatalf("got %v, want resource_exhausted", err)
				}
			} else {
				code, oauth := oauthCode(t, err)
				if oauth != tc.wantCode || code != connect.CodeInvalidArgument {
					t.Fatalf("got %s (%v), want %s", oauth, code, tc.wantCode)
				}
			}
			if got := s.env.LastSeq(t) - before; got != tc.appends {
				t.Fatalf("appended %d events, want %d", got, tc.appends)
			}
		})
	}
	// None of the refusals hurt the family: its token still refreshes.
	if _, err := s.client.RefreshTokens(ctx, connect.NewRequest(&tokenv1.RefreshTokensRequest{RefreshToken: rt, ClientId: "web"})); err != nil {
		t.Fatalf("the family was harmed by bad input: %v", err)
	}
	// And reuse is refused with invalid_grant, appending the revocation.
	before := s.env.LastSeq(t)
	_, err = s.client.RefreshTokens(ctx, connect.NewRequest(&tokenv1.RefreshTokensRequest{RefreshToken: rt, ClientId: "web"}))
	if _, code := oauthCode(t, err); code != "invalid_grant" {
		t.Fatalf("reuse: %v", err)
	}
	if got := s.env.LastSeq(t) - before; got != 1 {
		t.Fatalf("reuse appended %d events, want 1 (the revocation)", got)
	}
}

func TestCorrelationID(t *testing.T) {
	s := newServer(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name, sent string
		kept       bool
	}{
		{"given", "req-42:abc", true},
		{"absent", "", false},
		{"malformed", "bad id;drop", false},
		{"too long", strings.Repeat("x", 129), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := connect.NewRequest(&tokenv1.GenerateTokensRequest{Subject: "carol", ClientId: "web", Audience: []string{"api"}})
			if tc.sent != "" {
				req.Header().Set(rpc.HeaderCorrelationID, tc.sent)
			}
			resp, err := s.client.GenerateTokens(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			got := resp.Header().Get(rpc.HeaderCorrelationID)
			if tc.kept && got != tc.sent || !tc.kept && (got == "" || got == tc.sent) {
				t.Fatalf("echoed %q for %q", got, tc.sent)
			}
			rec, err := s.env.Log.LastConsistent(ctx, s.env.Log.Subjects().FamilyFilter(resp.Msg.GetFamilyId()))
			if err != nil {
				t.Fatal(err)
			}
			if rec.CorrelationID != got {
				t.Fatalf("event carries %q, response %q", rec.CorrelationID, got)
			}
		})
	}
	// A refused call echoes it too.
	req := connect.NewRequest(&tokenv1.RefreshTokensRequest{RefreshToken: "x", ClientId: "web"})
	req.Header().Set(rpc.HeaderCorrelationID, "refused-1")
	_, err := s.client.RefreshTokens(ctx, req)
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Meta().Get(rpc.HeaderCorrelationID) != "refused-1" {
		t.Fatalf("refused call did not echo the correlation ID: %v", err)
	}
}

func TestHTTPEndpoints(t *testing.T) {
	s := newServer(t)
	get := func(path string) *http.Response {
		resp, err := s.http.Get(s.url + path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	jwks := get("/.well-known/jwks.json")
	body, _ := io.ReadAll(jwks.Body)
	if jwks.StatusCode != 200 || !strings.Contains(jwks.Header.Get("Cache-Control"), "max-age=") || !strings.Contains(string(body), `"kid"`) {
		t.Fatalf("jwks: %d %q %s", jwks.StatusCode, jwks.Header.Get("Cache-Control"), body)
	}
	// Revalidation with the ETag answers 304.
	etag := jwks.Header.Get("ETag")
	req, _ := http.NewRequest(http.MethodGet, s.url+"/.well-known/jwks.json", nil)
	req.Header.Set("If-None-Match", etag)
	if resp, err := s.http.Do(req); err != nil || resp.StatusCode != http.StatusNotModified || etag == "" {
		t.Fatalf("revalidation with ETag %q: %v %v", etag, resp, err)
	} else {
		resp.Body.Close()
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if r := get(p); r.StatusCode != 200 {
			t.Fatalf("%s: %d", p, r.StatusCode)
		}
	}
	// Every metric exists from start-up, at 0.
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(get("/metrics").Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"token_service_tokens_issued_total", "token_service_tokens_refreshed_total",
		"token_service_tokens_revoked_total", "token_service_security_events_total", "token_service_grpc_latency_seconds",
		"token_service_eventlog_appends_total"} {
		if fams[name] == nil || len(fams[name].GetMetric()) == 0 {
			t.Errorf("metric %s not exposed at start-up", name)
		}
	}
	// gRPC health and reflection answer.
	hc := grpchealth.NewClient(s.http, s.url, connect.WithGRPC())
	res, err := hc.Check(context.Background(), &grpchealth.CheckRequest{Service: tokenv1connect.TokenServiceName})
	if err != nil || res.Status != grpchealth.StatusServing {
		t.Fatalf("health: %v %v", res, err)
	}
	stream := grpcreflect.NewClient(s.http, s.url).NewStream(context.Background())
	names, err := stream.ListServices()
	if err != nil {
		t.Fatal(err)
	}
	stream.Close()
	found := false
	for _, n := range names {
		found = found || string(n) == tokenv1connect.TokenServiceName
	}
	if !found {
		t.Fatalf("reflection lists %v", names)
	}
	// GetJWKS over gRPC matches the HTTP document.
	g := tokenv1connect.NewTokenServiceClient(s.http, s.url, connect.WithGRPC())
	keys, err := g.GetJWKS(context.Background(), connect.NewRequest(&tokenv1.GetJWKSRequest{}))
	if err != nil || len(keys.Msg.GetKeys()) == 0 || !strings.Contains(string(body), keys.Msg.GetKeys()[0].GetKid()) {
		t.Fatalf("GetJWKS: %v %v", keys, err)
	}
}
