package rpc_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/auth-platform/tokenservice/dpop"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/rpc"
	"github.com/auth-platform/tokenservice/rpc/auth"
	"github.com/auth-platform/tokenservice/signing"
)

// TestOAuthClientAuthentication: with a caller policy, the endpoints
// authenticate registered clients (none, client_secret_basic,
// private_key_jwt) and the platform's API keys, and each may do only what
// it is for: a public client refreshes its tokens but may not introspect;
// a confidential client introspects only its own tokens; a resource
// server's API key introspects any; a wrong secret, an unknown client, a
// replayed or misaddressed assertion are invalid_client, counted.
func TestOAuthClientAuthentication(t *testing.T) {
	ctx := context.Background()
	secret := "s3cr3t-of-the-backend-client-0123456789"
	sum := sha256.Sum256([]byte(secret))
	jwtKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwk, err := signing.PublicJWK(signing.ES256, &jwtKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	jwkJSON, _ := json.Marshal(jwk)
	rsKey, rsEntry, err := auth.GenerateAPIKey(rand.Reader, "orders-api", auth.RoleResourceServer)
	if err != nil {
		t.Fatal(err)
	}
	policy := "api_keys:\n  - " + rsEntry.Line()[2:] + "\nclients:\n" +
		"  - {client_id: web, auth: none}\n" +
		"  - {client_id: backend, auth: client_secret_basic, secret_sha256: " + hex.EncodeToString(sum[:]) + "}\n" +
		"  - {client_id: gateway, auth: private_key_jwt, jwks: {keys: [" + string(jwkJSON) + "]}}\n" + auth.EndMarker + "\n"
	file := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(file, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	pol, err := auth.LoadPolicy(file, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("%v\n%s", err, policy)
	}
	var s *server
	s = newServerWith(t, false, func(c *rpc.Config) {
		g, err := auth.New(auth.Config{Policy: pol, Observer: c.Metrics, Logger: slog.New(slog.DiscardHandler),
			AssertionReplay: lateReplay{&s}})
		if err != nil {
			t.Fatal(err)
		}
		c.Guard = g
	})
	gen := func(client string) issuer.Tokens {
		tk, err := s.env.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "erin", ClientID: client, Audience: []string{"api"}})
		if err != nil {
			t.Fatal(err)
		}
		return tk
	}
	tokenURL, introspectURL := s.url+"/oauth2/token", s.url+"/oauth2/introspect"
	basic := func(id, secret string) http.Header {
		r, _ := http.NewRequest("GET", "/", nil)
		r.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
		return r.Header
	}
	assertion := func(mod func(jwt.MapClaims)) string {
		c := jwt.MapClaims{"iss": "gateway", "sub": "gateway", "aud": tokenURL, "exp": time.Now().Add(time.Minute).Unix(), "jti": rand.Text()}
		if mod != nil {
			mod(c)
		}
		tok := jwt.NewWithClaims(jwt.SigningMethodES256, c)
		tok.Header["kid"] = jwk.Kid
		signed, err := tok.SignedString(jwtKey)
		if err != nil {
			t.Fatal(err)
		}
		return signed
	}
	refresh := func(client string, rt string, extra url.Values, h http.Header) (int, map[string]any) {
		f := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}
		if client != "" {
			f.Set("client_id", client)
		}
		for k, v := range extra {
			f[k] = v
		}
		status, m, _ := s.oauthPost(t, tokenURL, f, h)
		return status, m
	}
	// A public client refreshes with its client_id alone.
	if status, m := refresh("web", gen("web").RefreshToken, nil, nil); status != 200 {
		t.Fatalf("public client: %d %v", status, m)
	}
	// A confidential client must authenticate.
	backend := gen("backend")
	if status, m := refresh("backend", backend.RefreshToken, nil, nil); status != 401 || m["error"] != "invalid_client" {
		t.Fatalf("confidential client without its secret: %d %v", status, m)
	}
	_, m, r := s.oauthPost(t, tokenURL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {backend.RefreshToken}}, basic("backend", "wrong"))
	if m["error"] != "invalid_client" || r.StatusCode != 401 || r.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("wrong secret: %d %v %v", r.StatusCode, m, r.Header)
	}
	status, m := refresh("", backend.RefreshToken, nil, basic("backend", secret))
	if status != 200 {
		t.Fatalf("client_secret_basic: %d %v", status, m)
	}
	backendAT := m["access_token"].(string)
	if status, m := refresh("", gen("web").RefreshToken, nil, basic("backend", secret)); status != 400 || m["error"] != "invalid_grant" {
		t.Fatalf("backend with web's token: %d %v", status, m)
	}
	if status, m := refresh("intruder", gen("web").RefreshToken, nil, nil); status != 401 || m["error"] != "invalid_client" {
		t.Fatalf("unknown client: %d %v", status, m)
	}
	// private_key_jwt: a good assertion once; replayed, misaddressed,
	// long-lived or signed by another key, refused.
	gw := url.Values{"client_assertion_type": {auth.AssertionType}}
	withAssertion := func(a string) url.Values {
		v := url.Values{}
		for k, vs := range gw {
			v[k] = vs
		}
		v.Set("client_assertion", a)
		return v
	}
	good := assertion(nil)
	if status, m := refresh("", gen("gateway").RefreshToken, withAssertion(good), nil); status != 200 {
		t.Fatalf("private_key_jwt: %d %v", status, m)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	forged := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"iss": "gateway", "sub": "gateway", "aud": tokenURL, "exp": time.Now().Add(time.Minute).Unix(), "jti": rand.Text()})
	forgedS, _ := forged.SignedString(other)
	for name, a := range map[string]string{
		"replayed":      good,
		"wrong aud":     assertion(func(c jwt.MapClaims) { c["aud"] = "https://elsewhere.example/token" }),
		"no exp":        assertion(func(c jwt.MapClaims) { delete(c, "exp") }),
		"long-lived":    assertion(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(time.Hour).Unix() }),
		"no jti":        assertion(func(c jwt.MapClaims) { delete(c, "jti") }),
		"iss not sub":   assertion(func(c jwt.MapClaims) { c["iss"] = "web" }),
		"another key":   forgedS,
		"expired":       assertion(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-5 * time.Minute).Unix() }),
		"two audiences": assertion(func(c jwt.MapClaims) { c["aud"] = []string{"https://attacker.example", tokenURL} }),
		"endpoint aud":  assertion(func(c jwt.MapClaims) { c["aud"] = s.url + "/oauth2/introspect" }),
		"relative aud":  assertion(func(c jwt.MapClaims) { c["aud"] = "/oauth2/token" }),
		"issuer as aud": "", // below: the issuer identifier is an accepted aud
	} {
		if a == "" {
			continue
		}
		if status, m := refresh("", gen("gateway").RefreshToken, withAssertion(a), nil); status != 401 || m["error"] != "invalid_client" {
			t.Errorf("assertion %s: %d %v", name, status, m)
		}
	}
	if status, m := refresh("", gen("gateway").RefreshToken, withAssertion(assertion(func(c jwt.MapClaims) { c["aud"] = []string{s.url} })), nil); status != 200 {
		t.Errorf("assertion with the issuer as aud: %d %v", status, m)
	}

	// Two methods in one request (RFC 6749 §2.3), a bearer API key among
	// them, are refused.
	two := withAssertion(assertion(nil))
	two.Set("grant_type", "refresh_token")
	two.Set("refresh_token", gen("gateway").RefreshToken)
	if status, m, _ := s.oauthPost(t, tokenURL, two, http.Header{"Authorization": {"Bearer " + rsKey}}); status != 400 || m["error"] != "invalid_request" ||
		!strings.Contains(m["error_description"].(string), "one method") {
		t.Fatalf("API key and assertion together: %d %v", status, m)
	}

	// Introspection: a public client may not; the resource server's key
	// may; a confidential client sees only its own tokens.
	web := gen("web")
	if status, m, _ := s.oauthPost(t, introspectURL, url.Values{"token": {web.AccessToken}, "client_id": {"web"}}, nil); status != 403 || m["error"] != "unauthorized_client" {
		t.Fatalf("public client introspecting: %d %v", status, m)
	}
	if status, m, _ := s.oauthPost(t, introspectURL, url.Values{"token": {web.AccessToken}}, nil); status != 401 {
		t.Fatalf("anonymous introspection: %d %v", status, m)
	}
	if _, m, _ := s.oauthPost(t, introspectURL, url.Values{"token": {web.AccessToken}}, http.Header{"Authorization": {"Bearer " + rsKey}}); m["active"] != true {
		t.Fatalf("resource server introspecting: %v", m)
	}
	if _, m, _ := s.oauthPost(t, introspectURL, url.Values{"token": {web.AccessToken}}, basic("backend", secret)); m["active"] != false {
		t.Fatalf("backend introspecting web's token: %v", m)
	}
	if _, m, _ := s.oauthPost(t, introspectURL, url.Values{"token": {backendAT}}, basic("backend", secret)); m["active"] != true {
		t.Fatalf("backend introspecting its own token: %v", m)
	}
	// Revocation: the resource server may not; a client revokes its own.
	if status, m, _ := s.oauthPost(t, s.url+"/oauth2/revoke", url.Values{"token": {web.RefreshToken}}, http.Header{"Authorization": {"Bearer " + rsKey}}); status != 400 || m["error"] != "unauthorized_client" {
		t.Fatalf("resource server revoking: %d %v", status, m)
	}
	if status, _, _ := s.oauthPost(t, s.url+"/oauth2/revoke", url.Values{"token": {web.RefreshToken}, "client_id": {"web"}}, nil); status != 200 {
		t.Fatalf("web revoking its token: %d", status)
	}
	if _, m, _ := s.oauthPost(t, introspectURL, url.Values{"token": {web.AccessToken}}, http.Header{"Authorization": {"Bearer " + rsKey}}); m["active"] != false {
		t.Fatalf("revoked family's access token: %v", m)
	}
	snap := scrapeText(t, s)
	for _, want := range []string{
		seriesKey("token_service_auth_refused_total", "procedure", "/oauth2/token", "reason", "unauthenticated"),
		seriesKey("token_service_oauth_requests_total", "endpoint", "/oauth2/token", "error", "invalid_client"),
		seriesKey("token_service_oauth_requests_total", "endpoint", "/oauth2/introspect", "error", ""),
	} {
		if !hasPositive(snap, want) {
			t.Errorf("metric %s not counted", want)
		}
	}
}

// lateReplay claims assertion jtis in the log of the server, which exists
// once the guard is configured.
type lateReplay struct{ s **server }

func (l lateReplay) Claim(ctx context.Context, jkt, jti string, ttl time.Duration) error {
	return dpop.LogReplayStore{Log: (*l.s).env.Log}.Claim(ctx, jkt, jti, ttl)
}

// scrapeText reads the server's metrics without the guard in front.
func scrapeText(t *testing.T, s *server) metricSnapshot {
	rec := httptest.NewRecorder()
	s.metrics.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return parseSnapshot(t, rec.Body)
}

func hasPositive(snap metricSnapshot, key string) bool { return snap[key] > 0 }
