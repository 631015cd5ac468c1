package rpc_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/golang-jwt/jwt/v5"

	"github.com/auth-platform/tokenservice/dpop/dpoptest"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/rpc"
	"github.com/auth-platform/tokenservice/signing"
)

const tokenURL = "https://as.example.com/token"

func (s *server) generateBound(t *testing.T, k dpoptest.Key) *tokenv1.TokenResponse {
	t.Helper()
	resp, err := s.client.GenerateTokens(context.Background(), connect.NewRequest(&tokenv1.GenerateTokensRequest{
		Subject: "dana", ClientId: "spa", Audience: []string{"api"}, Scopes: []string{"read"},
		DpopProof: k.Proof("POST", tokenURL, s.env.Clock.Now()), HttpMethod: "POST", HttpUri: tokenURL,
	}))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header().Get(rpc.HeaderDPoPNonce) == "" {
		t.Fatal("no DPoP-Nonce on a success")
	}
	return resp.Msg
}

func (s *server) refresh(k dpoptest.Key, token string) (*tokenv1.TokenResponse, error) {
	req := &tokenv1.RefreshTokensRequest{RefreshToken: token, ClientId: "spa"}
	if k.Signer != nil {
		req.DpopProof, req.HttpMethod, req.HttpUri = k.Proof("POST", tokenURL, s.env.Clock.Now()), "POST", tokenURL
	}
	resp, err := s.client.RefreshTokens(context.Background(), connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// TestDPoPBinding: a proof binds the family (token_type DPoP, cnf.jkt);
// refreshing needs a proof of the same key; another key or no proof is
// refused with invalid_dpop_proof and revokes nothing, even with a spent
// token outside the grace window.
func TestDPoPBinding(t *testing.T) {
	s := newServer(t)
	k := dpoptest.NewKey(signing.ES256)
	thief := dpoptest.NewKey(signing.ES256)
	first := s.generateBound(t, k)
	if first.GetTokenType() != "DPoP" {
		t.Fatalf("token_type %q", first.GetTokenType())
	}
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(first.GetAccessToken(), claims); err != nil {
		t.Fatal(err)
	}
	if cnf, _ := claims["cnf"].(map[string]any); cnf["jkt"] != k.JKT() {
		t.Fatalf("cnf %v, want jkt %s", claims["cnf"], k.JKT())
	}
	second, err := s.refresh(k, first.GetRefreshToken())
	if err != nil || second.GetTokenType() != "DPoP" {
		t.Fatalf("refresh with the same key: %v %v", second, err)
	}
	for name, key := range map[string]dpoptest.Key{"another key": thief, "no proof": {}} {
		for _, tok := range []string{second.GetRefreshToken(), first.GetRefreshToken()} {
			before := s.env.LastSeq(t)
			_, err := s.refresh(key, tok)
			if _, code := oauthCode(t, err); code != "invalid_dpop_proof" {
				t.Fatalf("%s: got %v", name, err)
			}
			// Only the thief's proof jti is claimed; no family event.
			if got := s.env.LastSeq(t) - before; got > 1 {
				t.Fatalf("%s appended %d events", name, got)
			}
		}
	}
	if _, err := s.refresh(k, second.GetRefreshToken()); err != nil {
		t.Fatalf("the family was harmed by a foreign key: %v", err)
	}
}

func TestDPoPJKTParameter(t *testing.T) {
	s := newServer(t)
	k := dpoptest.NewKey(signing.EdDSA)
	gen := func(jkt string) error {
		_, err := s.client.GenerateTokens(context.Background(), connect.NewRequest(&tokenv1.GenerateTokensRequest{
			Subject: "erin", ClientId: "spa", Audience: []string{"api"}, DpopJkt: jkt,
			DpopProof: k.Proof("POST", tokenURL, s.env.Clock.Now()), HttpMethod: "POST", HttpUri: tokenURL,
		}))
		return err
	}
	if err := gen(k.JKT()); err != nil {
		t.Fatalf("matching dpop_jkt: %v", err)
	}
	if _, code := oauthCode(t, gen(dpoptest.NewKey(signing.EdDSA).JKT())); code != "invalid_dpop_proof" {
		t.Fatal("a mismatching dpop_jkt was accepted")
	}
}

func TestNonceRequired(t *testing.T) {
	s := newServerNonce(t, true)
	k := dpoptest.NewKey(signing.ES256)
	_, err := s.client.GenerateTokens(context.Background(), connect.NewRequest(&tokenv1.GenerateTokensRequest{
		Subject: "fay", ClientId: "spa", Audience: []string{"api"},
		DpopProof: k.Proof("POST", tokenURL, s.env.Clock.Now()), HttpMethod: "POST", HttpUri: tokenURL,
	}))
	if _, code := oauthCode(t, err); code != "use_dpop_nonce" {
		t.Fatalf("no nonce: %v", err)
	}
	var ce *connect.Error
	errors.As(err, &ce)
	nonce := ce.Meta().Get(rpc.HeaderDPoPNonce)
	if nonce == "" {
		t.Fatal("use_dpop_nonce without a DPoP-Nonce")
	}
	resp, err := s.client.GenerateTokens(context.Background(), connect.NewRequest(&tokenv1.GenerateTokensRequest{
		Subject: "fay", ClientId: "spa", Audience: []string{"api"},
		DpopProof:  k.Proof("POST", tokenURL, s.env.Clock.Now(), func(p *dpoptest.Parts) { p.Claims["nonce"] = nonce }),
		HttpMethod: "POST", HttpUri: tokenURL,
	}))
	if err != nil || resp.Msg.GetTokenType() != "DPoP" {
		t.Fatalf("with the nonce: %v", err)
	}
}

// TestValidateDPoP: the resource-server check, with every refusal an
// answer carrying its OAuth code and a fresh nonce.
func TestValidateDPoP(t *testing.T) {
	s := newServer(t)
	k := dpoptest.NewKey(signing.PS256)
	bound := s.generateBound(t, k)
	bearer, err := s.client.GenerateTokens(context.Background(), connect.NewRequest(&tokenv1.GenerateTokensRequest{Subject: "gus", ClientId: "spa", Audience: []string{"api"}}))
	if err != nil {
		t.Fatal(err)
	}
	const rs = "https://api.example.com/orders"
	at := bound.GetAccessToken()
	withATH := func(tok string) func(*dpoptest.Parts) {
		return func(p *dpoptest.Parts) { p.Claims["ath"] = dpoptest.ATH(tok) }
	}
	tests := []struct {
		name      string
		req       *tokenv1.ValidateDPoPRequest
		wantValid bool
		wantErr   string
	}{
		{"bound token with its proof", &tokenv1.ValidateDPoPRequest{Proof: k.Proof("GET", rs, s.env.Clock.Now(), withATH(at)), HttpMethod: "GET", HttpUri: rs, AccessToken: at}, true, ""},
		{"proof alone", &tokenv1.ValidateDPoPRequest{Proof: k.Proof("GET", rs, s.env.Clock.Now()), HttpMethod: "GET", HttpUri: rs}, true, ""},
		{"bound token without proof", &tokenv1.ValidateDPoPRequest{HttpMethod: "GET", HttpUri: rs, AccessToken: at}, false, "invalid_token"},
		{"bound token, other key", &tokenv1.ValidateDPoPRequest{Proof: dpoptest.NewKey(signing.ES256).Proof("GET", rs, s.env.Clock.Now(), withATH(at)), HttpMethod: "GET", HttpUri: rs, AccessToken: at}, false, "invalid_dpop_proof"},
		{"ath missing", &tokenv1.ValidateDPoPRequest{Proof: k.Proof("GET", rs, s.env.Clock.Now()), HttpMethod: "GET", HttpUri: rs, AccessToken: at}, false, "invalid_dpop_proof"},
		{"wrong method", &tokenv1.ValidateDPoPRequest{Proof: k.Proof("GET", rs, s.env.Clock.Now(), withATH(at)), HttpMethod: "DELETE", HttpUri: rs, AccessToken: at}, false, "invalid_dpop_proof"},
		{"forged token", &tokenv1.ValidateDPoPRequest{Proof: k.Proof("GET", rs, s.env.Clock.Now()), HttpMethod: "GET", HttpUri: rs, AccessToken: at[:len(at)-2] + "xx"}, false, "invalid_token"},
		{"bearer token with a proof", &tokenv1.ValidateDPoPRequest{Proof: k.Proof("GET", rs, s.env.Clock.Now(), withATH(bearer.Msg.GetAccessToken())), HttpMethod: "GET", HttpUri: rs, AccessToken: bearer.Msg.GetAccessToken()}, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := s.client.ValidateDPoP(context.Background(), connect.NewRequest(tc.req))
			if err != nil {
				t.Fatal(err)
			}
			r := resp.Msg
			if r.GetValid() != tc.wantValid || r.GetError() != tc.wantErr || r.GetNonce() == "" {
				t.Fatalf("got valid %v error %q (%s) nonce %q", r.GetValid(), r.GetError(), r.GetErrorDescription(), r.GetNonce())
			}
			if r.GetValid() && r.GetJkt() != k.JKT() {
				t.Fatalf("jkt %s, want %s", r.GetJkt(), k.JKT())
			}
			if !r.GetValid() && strings.TrimSpace(r.GetErrorDescription()) == "" {
				t.Fatal("refusal without a description")
			}
		})
	}
}

// TestTokenRequestProofs: a token request takes only a proof made for a
// token request: POST, no ath (a resource request's proof, which carries
// ath, cannot be replayed to refresh a stolen token).
func TestTokenRequestProofs(t *testing.T) {
	s := newServer(t)
	k := dpoptest.NewKey(signing.ES256)
	bound := s.generateBound(t, k)
	for name, req := range map[string]*tokenv1.RefreshTokensRequest{
		"GET": {DpopProof: k.Proof("GET", tokenURL, s.env.Clock.Now()), HttpMethod: "GET", HttpUri: tokenURL},
		"resource proof with ath": {DpopProof: k.Proof("POST", tokenURL, s.env.Clock.Now(), func(p *dpoptest.Parts) {
			p.Claims["ath"] = dpoptest.ATH(bound.GetAccessToken())
		}), HttpMethod: "POST", HttpUri: tokenURL},
	} {
		req.RefreshToken, req.ClientId = bound.GetRefreshToken(), "spa"
		_, err := s.client.RefreshTokens(context.Background(), connect.NewRequest(req))
		if _, code := oauthCode(t, err); code != "invalid_dpop_proof" {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if _, err := s.refresh(k, bound.GetRefreshToken()); err != nil {
		t.Fatalf("the family was harmed: %v", err)
	}
}

// TestValidateDPoPRevoked: a resource server is told a revoked family's
// token is invalid.
func TestValidateDPoPRevoked(t *testing.T) {
	s := newServer(t)
	k := dpoptest.NewKey(signing.ES256)
	bound := s.generateBound(t, k)
	if _, err := s.client.RevokeToken(context.Background(), connect.NewRequest(&tokenv1.RevokeTokenRequest{
		Target: &tokenv1.RevokeTokenRequest_FamilyId{FamilyId: bound.GetFamilyId()}})); err != nil {
		t.Fatal(err)
	}
	s.env.CaughtUp(t)
	at := bound.GetAccessToken()
	const rs = "https://api.example.com/orders"
	resp, err := s.client.ValidateDPoP(context.Background(), connect.NewRequest(&tokenv1.ValidateDPoPRequest{
		Proof: k.Proof("GET", rs, s.env.Clock.Now(), func(p *dpoptest.Parts) { p.Claims["ath"] = dpoptest.ATH(at) }), HttpMethod: "GET", HttpUri: rs, AccessToken: at,
	}))
	if err != nil || resp.Msg.GetValid() || resp.Msg.GetError() != "invalid_token" {
		t.Fatalf("revoked family: %v %v", resp, err)
	}
}

// TestValidateDPoPRevokedWhileCached: a token a resource server presented
// before (kept in the issuer's cache of verified tokens) is refused by the
// first call after its family's revocation.
func TestValidateDPoPRevokedWhileCached(t *testing.T) {
	s := newServer(t)
	k := dpoptest.NewKey(signing.ES256)
	bound := s.generateBound(t, k)
	at := bound.GetAccessToken()
	const rs = "https://api.example.com/orders"
	validate := func() *tokenv1.ValidateDPoPResponse {
		t.Helper()
		resp, err := s.client.ValidateDPoP(context.Background(), connect.NewRequest(&tokenv1.ValidateDPoPRequest{
			Proof: k.Proof("GET", rs, s.env.Clock.Now(), func(p *dpoptest.Parts) { p.Claims["ath"] = dpoptest.ATH(at) }), HttpMethod: "GET", HttpUri: rs, AccessToken: at,
		}))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Msg
	}
	for i := range 3 {
		if r := validate(); !r.GetValid() {
			t.Fatalf("call %d before the revocation: %s %s", i, r.GetError(), r.GetErrorDescription())
		}
	}
	if _, err := s.client.RevokeToken(context.Background(), connect.NewRequest(&tokenv1.RevokeTokenRequest{
		Target: &tokenv1.RevokeTokenRequest_FamilyId{FamilyId: bound.GetFamilyId()}})); err != nil {
		t.Fatal(err)
	}
	s.env.CaughtUp(t)
	if r := validate(); r.GetValid() || r.GetError() != "invalid_token" {
		t.Fatalf("after the revocation: %v", r)
	}
}

// TestRefusedRequestSpendsNoProof: a token request refused for its own
// fields does not claim its DPoP proof (claiming appends an event), so
// the same proof still works for the corrected request; a proof used
// once is refused the second time.
func TestRefusedRequestSpendsNoProof(t *testing.T) {
	s := newServer(t)
	k := dpoptest.NewKey(signing.ES256)
	proof := k.Proof("POST", tokenURL, s.env.Clock.Now())
	req := func(subject string) error {
		_, err := s.client.GenerateTokens(context.Background(), connect.NewRequest(&tokenv1.GenerateTokensRequest{
			Subject: subject, ClientId: "spa", Audience: []string{"api"},
			DpopProof: proof, HttpMethod: "POST", HttpUri: tokenURL,
		}))
		return err
	}
	if _, code := oauthCode(t, req("")); code != "invalid_request" {
		t.Fatalf("no subject: %q, want invalid_request", code)
	}
	if err := req("dana"); err != nil {
		t.Fatalf("the proof of a refused request was spent: %v", err)
	}
	if _, code := oauthCode(t, req("dana")); code != "invalid_dpop_proof" {
		t.Fatalf("a proof used twice: %q, want invalid_dpop_proof", code)
	}
}
