package rpc_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/oauth2"

	"github.com/auth-platform/tokenservice/dpop/dpoptest"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/rpc"
	"github.com/auth-platform/tokenservice/signing"
)

// metadata fetches the RFC 8414 document, as a client driven by it would.
func (s *server) metadata(t *testing.T) map[string]any {
	t.Helper()
	resp, err := s.http.Get(s.url + "/.well-known/oauth-authorization-server")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("metadata: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

// oauthPost posts a form to an endpoint and returns the status, the JSON
// body and the response.
func (s *server) oauthPost(t *testing.T, endpoint string, form url.Values, header http.Header) (int, map[string]any, *http.Response) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := s.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if len(body) > 0 {
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("%s: not JSON: %q", endpoint, body)
		}
	}
	return resp.StatusCode, m, resp
}

func (s *server) generate(t *testing.T, clientID string, scopes ...string) *tokenv1.TokenResponse {
	t.Helper()
	resp, err := s.client.GenerateTokens(context.Background(), connect.NewRequest(&tokenv1.GenerateTokensRequest{
		Subject: "erin", ClientId: clientID, Audience: []string{"api"}, Scopes: scopes}))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Msg
}

// TestOAuthMetadata: the document names the endpoints under the request's
// loopback origin (PUBLIC_BASE_URL unset), or under the configured base
// whatever the Host; unset, a foreign Host gets no URLs at all.
func TestOAuthMetadata(t *testing.T) {
	s := newServer(t)
	m := s.metadata(t)
	for k, want := range map[string]string{
		"issuer": s.url, "token_endpoint": s.url + "/oauth2/token", "revocation_endpoint": s.url + "/oauth2/revoke",
		"introspection_endpoint": s.url + "/oauth2/introspect", "jwks_uri": s.url + "/.well-known/jwks.json",
	} {
		if m[k] != want {
			t.Errorf("%s = %v, want %s", k, m[k], want)
		}
	}
	if g, _ := json.Marshal(m["grant_types_supported"]); string(g) != `["refresh_token"]` {
		t.Errorf("grant_types_supported %s", g)
	}
	for _, k := range []string{"dpop_signing_alg_values_supported", "token_endpoint_auth_methods_supported", "introspection_endpoint_auth_methods_supported", "revocation_endpoint_auth_methods_supported"} {
		if l, _ := m[k].([]any); len(l) == 0 {
			t.Errorf("%s missing: %v", k, m[k])
		}
	}
	req, _ := http.NewRequest(http.MethodGet, s.url+"/.well-known/oauth-authorization-server", nil)
	req.Host = "login.attacker.example"
	resp, err := s.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("foreign Host without PUBLIC_BASE_URL: %s, want 404", resp.Status)
	}

	pub, err := rpc.ParsePublicURL("https://login.example.com/")
	if err != nil {
		t.Fatal(err)
	}
	c := newServerWith(t, false, func(c *rpc.Config) { c.PublicURL = pub })
	if m := c.metadata(t); m["issuer"] != "https://login.example.com" || m["token_endpoint"] != "https://login.example.com/oauth2/token" {
		t.Errorf("configured base: %v", m)
	}
}

// TestOAuthRefreshWithGolangOAuth2: golang.org/x/oauth2 rotates a Bearer
// refresh token through the token endpoint of the metadata; the old one,
// presented again, is invalid_grant and revokes the family.
func TestOAuthRefreshWithGolangOAuth2(t *testing.T) {
	s := newServer(t)
	first := s.generate(t, "web", "read", "write")
	m := s.metadata(t)
	cfg := oauth2.Config{ClientID: "web", Endpoint: oauth2.Endpoint{TokenURL: m["token_endpoint"].(string), AuthStyle: oauth2.AuthStyleInParams}}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, s.http)
	tok, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: first.GetRefreshToken(), Expiry: time.Unix(1, 0)}).Token()
	if err != nil {
		t.Fatal(err)
	}
	if tok.TokenType != "Bearer" || tok.AccessToken == "" || tok.RefreshToken == "" || tok.RefreshToken == first.GetRefreshToken() || tok.ExpiresIn <= 0 {
		t.Fatalf("token %+v", tok)
	}
	if sc, _ := tok.Extra("scope").(string); sc != "read write" {
		t.Errorf("scope %q", sc)
	}
	// The spent token again: reuse detection, as RefreshTokens has it.
	_, err = cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: first.GetRefreshToken(), Expiry: time.Unix(1, 0)}).Token()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" || re.Response.StatusCode != http.StatusBadRequest {
		t.Fatalf("reused refresh token: %v", err)
	}
	if re.Response.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("error without Cache-Control: no-store")
	}
	// The family is revoked: the successor is refused too.
	if _, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken, Expiry: time.Unix(1, 0)}).Token(); !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Fatalf("successor after reuse: %v", err)
	}
	// Another client's refresh token is not this client's to use.
	other := s.generate(t, "ios")
	if _, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: other.GetRefreshToken(), Expiry: time.Unix(1, 0)}).Token(); !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Fatalf("another client's token: %v", err)
	}
}

// TestOAuthTokenEndpointErrors: every malformed request gets the RFC 6749
// §5.2 answer, and nothing is rotated.
func TestOAuthTokenEndpointErrors(t *testing.T) {
	s := newServer(t)
	first := s.generate(t, "web", "read")
	endpoint := s.url + "/oauth2/token"
	good := func() url.Values {
		return url.Values{"grant_type": {"refresh_token"}, "client_id": {"web"}, "refresh_token": {first.GetRefreshToken()}}
	}
	cases := []struct {
		name   string
		body   string
		ctype  string
		status int
		code   string
	}{
		{"no grant_type", "client_id=web&refresh_token=" + url.QueryEscape(first.GetRefreshToken()), "", 400, "invalid_request"},
		{"unsupported grant", "grant_type=password&client_id=web&username=a&password=b", "", 400, "unsupported_grant_type"},
		{"client_credentials", "grant_type=client_credentials&client_id=web", "", 400, "unsupported_grant_type"},
		{"no refresh_token", "grant_type=refresh_token&client_id=web", "", 400, "invalid_request"},
		{"no client_id", "grant_type=refresh_token&refresh_token=" + url.QueryEscape(first.GetRefreshToken()), "", 401, "invalid_client"},
		{"duplicate parameter", good().Encode() + "&grant_type=refresh_token", "", 400, "invalid_request"},
		{"oversized form", good().Encode() + "&pad=" + strings.Repeat("a", 9<<10), "", 400, "invalid_request"},
		{"JSON body", `{"grant_type":"refresh_token"}`, "application/json", 400, "invalid_request"},
		{"malformed refresh token", "grant_type=refresh_token&client_id=web&refresh_token=nope", "", 400, "invalid_grant"},
		{"scope widened", good().Encode() + "&scope=read+admin", "", 400, "invalid_scope"},
		{"two client methods", good().Encode() + "&client_assertion=x&client_assertion_type=y", "basic", 400, "invalid_request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(c.body))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if c.ctype == "basic" {
				req.SetBasicAuth("web", "secret")
			} else if c.ctype != "" {
				req.Header.Set("Content-Type", c.ctype)
			}
			resp, err := s.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var m map[string]string
			if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != c.status || m["error"] != c.code {
				t.Fatalf("%d %v, want %d %s", resp.StatusCode, m, c.status, c.code)
			}
			if resp.Header.Get("Cache-Control") != "no-store" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
				t.Errorf("headers %v", resp.Header)
			}
			if c.status == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("401 without WWW-Authenticate")
			}
		})
	}
	resp, err := s.http.Get(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %s", resp.Status)
	}
	// Nothing above rotated the token, and it narrows scopes.
	status, m, _ := s.oauthPost(t, endpoint, url.Values{"grant_type": {"refresh_token"}, "client_id": {"web"}, "refresh_token": {first.GetRefreshToken()}, "scope": {"read"}}, nil)
	if status != 200 || m["scope"] != "read" || m["token_type"] != "Bearer" {
		t.Fatalf("valid refresh after the refusals: %d %v", status, m)
	}
}

// TestOAuthDPoP: a DPoP-bound family rotates with a proof whose htu is
// the token endpoint; a wrong htu or htm, no proof, two proofs or another
// key's proof are refused; with nonces required, the use_dpop_nonce
// challenge carries the nonce the retry uses.
func TestOAuthDPoP(t *testing.T) {
	s := newServerNonce(t, true)
	k := dpoptest.NewKey(signing.ES256)
	endpoint := s.url + "/oauth2/token"
	nonce := s.nonces.Current()
	withNonce := func(p *dpoptest.Parts) { p.Claims["nonce"] = nonce }
	resp, err := s.client.GenerateTokens(context.Background(), connect.NewRequest(&tokenv1.GenerateTokensRequest{
		Subject: "dana", ClientId: "spa", Audience: []string{"api"},
		DpopProof: k.Proof("POST", endpoint, s.env.Clock.Now(), withNonce), HttpMethod: "POST", HttpUri: endpoint}))
	if err != nil {
		t.Fatal(err)
	}
	rt := resp.Msg.GetRefreshToken()
	form := url.Values{"grant_type": {"refresh_token"}, "client_id": {"spa"}, "refresh_token": {rt}}
	post := func(proofs ...string) (int, map[string]any, *http.Response) {
		return s.oauthPost(t, endpoint, form, http.Header{"Dpop": proofs})
	}
	now := s.env.Clock.Now()
	for name, proofs := range map[string][]string{
		"no proof":    nil,
		"wrong htu":   {k.Proof("POST", s.url+"/other", now, withNonce)},
		"wrong htm":   {k.Proof("GET", endpoint, now, withNonce)},
		"another key": {dpoptest.NewKey(signing.ES256).Proof("POST", endpoint, now, withNonce)},
		"two proofs":  {k.Proof("POST", endpoint, now, withNonce), k.Proof("POST", endpoint, now, withNonce)},
	} {
		status, m, _ := post(proofs...)
		if status != 400 || (m["error"] != "invalid_dpop_proof" && m["error"] != "invalid_grant") {
			t.Errorf("%s: %d %v", name, status, m)
		}
	}
	status, m, r := post(k.Proof("POST", endpoint, now))
	if status != 400 || m["error"] != "use_dpop_nonce" || r.Header.Get("DPoP-Nonce") == "" {
		t.Fatalf("proof without nonce: %d %v %v", status, m, r.Header)
	}
	nonce = r.Header.Get("DPoP-Nonce")
	status, m, r = post(k.Proof("POST", endpoint, now, withNonce))
	if status != 200 || m["token_type"] != "DPoP" || r.Header.Get("DPoP-Nonce") == "" {
		t.Fatalf("refresh with the nonce: %d %v", status, m)
	}
	// Introspection shows the binding (AUTH_MODE=none: anyone may).
	status, m, _ = s.oauthPost(t, s.url+"/oauth2/introspect", url.Values{"token": {m["access_token"].(string)}}, nil)
	cnf, _ := m["cnf"].(map[string]any)
	if status != 200 || m["active"] != true || cnf["jkt"] != k.JKT() || m["token_type"] != "DPoP" || m["client_id"] != "spa" {
		t.Fatalf("introspection: %d %v", status, m)
	}
}

// TestOAuthRevokeAndIntrospect: RFC 7009 revocation of a refresh token
// ends its family, access tokens included, as RFC 7662 introspection
// then shows; an unknown token is 200, another client's is left alone.
func TestOAuthRevokeAndIntrospect(t *testing.T) {
	s := newServer(t)
	web := s.generate(t, "web", "read")
	ios := s.generate(t, "ios")
	introspect := func(tok string) map[string]any {
		status, m, _ := s.oauthPost(t, s.url+"/oauth2/introspect", url.Values{"token": {tok}, "token_type_hint": {"access_token"}}, nil)
		if status != 200 {
			t.Fatalf("introspect: %d %v", status, m)
		}
		return m
	}
	if m := introspect(web.GetAccessToken()); m["active"] != true || m["scope"] != "read" || m["sub"] != "erin" || m["client_id"] != "web" {
		t.Fatalf("active access token: %v", m)
	}
	if m := introspect(web.GetRefreshToken()); m["active"] != true || m["token_type"] != "refresh_token" {
		t.Fatalf("active refresh token: %v", m)
	}
	revoke := func(client, tok string) {
		status, m, r := s.oauthPost(t, s.url+"/oauth2/revoke", url.Values{"token": {tok}, "client_id": {client}, "token_type_hint": {"refresh_token"}}, nil)
		if status != 200 || m != nil || r.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("revoke: %d %v", status, m)
		}
	}
	revoke("web", "unknown.token")
	revoke("web", ios.GetRefreshToken()) // not web's: nothing happens
	if m := introspect(ios.GetAccessToken()); m["active"] != true {
		t.Fatalf("another client's revocation reached ios: %v", m)
	}
	revoke("web", web.GetRefreshToken())
	for _, tok := range []string{web.GetAccessToken(), web.GetRefreshToken()} {
		if m := introspect(tok); m["active"] != false || len(m) != 1 {
			t.Fatalf("after revocation: %v", m)
		}
	}
	status, m, _ := s.oauthPost(t, s.url+"/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "client_id": {"web"}, "refresh_token": {web.GetRefreshToken()}}, nil)
	if status != 400 || m["error"] != "invalid_grant" {
		t.Fatalf("refresh after revocation: %d %v", status, m)
	}
	status, m, _ = s.oauthPost(t, s.url+"/oauth2/revoke", url.Values{"client_id": {"web"}}, nil)
	if status != 400 || m["error"] != "invalid_request" {
		t.Fatalf("revoke without token: %d %v", status, m)
	}
}

// TestOAuthMadeUpTokensSpendNoProof: a DPoP proof is checked, and its jti
// claimed in the log, only for a refresh token the log knows, so requests
// with made-up tokens and fresh proofs, from anyone who knows a public
// client_id, append nothing.
func TestOAuthMadeUpTokensSpendNoProof(t *testing.T) {
	s := newServer(t)
	ctx := context.Background()
	real := s.generate(t, "web").GetRefreshToken()
	endpoint := s.url + "/oauth2/token"
	flip := func(tok string, i int) string {
		b := []byte(tok)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	before, err := s.env.Log.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, tok := range []string{"garbage", flip(real, len(real)-1), flip(real, 0), flip(real, len(real)-2)} {
		k := dpoptest.NewKey(signing.ES256)
		status, m, _ := s.oauthPost(t, endpoint, url.Values{"grant_type": {"refresh_token"}, "client_id": {"web"}, "refresh_token": {tok}},
			http.Header{"Dpop": {k.Proof("POST", endpoint, s.env.Clock.Now())}})
		if status != 400 || m["error"] != "invalid_grant" {
			t.Fatalf("made-up token %d: %d %v", i, status, m)
		}
	}
	if after, err := s.env.Log.LastSeq(ctx); err != nil || after != before {
		t.Fatalf("made-up tokens appended %d records (%v)", after-before, err)
	}
	// The real token with a proof: the claim and the rotation.
	status, m, _ := s.oauthPost(t, endpoint, url.Values{"grant_type": {"refresh_token"}, "client_id": {"web"}, "refresh_token": {real}},
		http.Header{"Dpop": {dpoptest.NewKey(signing.ES256).Proof("POST", endpoint, s.env.Clock.Now())}})
	if after, _ := s.env.Log.LastSeq(ctx); status != 200 || after < before+2 {
		t.Fatalf("real token: %d %v, %d records appended", status, m, after-before)
	}
}
