package e2e

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/auth-platform/tokenservice/cmd/tokend/app"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
)

// startInProcess runs the app in this process with the environment env
// and closes it when the test ends.
func startInProcess(t *testing.T, env map[string]string) *app.Main {
	t.Helper()
	cfg, err := app.ConfigFromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("ConfigFromEnv: %v", err)
	}
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	m, err := app.Start(ctx, cfg, logger)
	if err != nil {
		t.Fatalf("app.Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return m
}

// TestIndependentVerifier checks, for every algorithm, that access tokens
// of GenerateTokens and RefreshTokens verify with go-jose (a JOSE library
// the service does not use) against the published JWKS, and carry the
// RFC 9068 header and claims.
func TestIndependentVerifier(t *testing.T) {
	const (
		issuer    = "https://issuer.e2e.test"
		accessTTL = 600 // seconds
		jwksAge   = 123 // seconds
		subject   = "user-42"
		clientID  = "client-e2e"
	)
	audience := []string{"api://orders", "api://billing"}
	scopes := []string{"orders:read", "billing:write"}

	for _, alg := range []jose.SignatureAlgorithm{jose.RS256, jose.PS256, jose.ES256, jose.ES384, jose.EdDSA} {
		t.Run(string(alg), func(t *testing.T) {
			m := startInProcess(t, map[string]string{
				"HOST":             "127.0.0.1",
				"PORT":             "0",
				"DATA_DIR":         t.TempDir(),
				"NATS_LISTEN":      "127.0.0.1:0",
				"JWT_ALGORITHM":    string(alg),
				"JWT_ISSUER":       issuer,
				"ACCESS_TOKEN_TTL": strconv.Itoa(accessTTL),
				"JWKS_MAX_AGE":     strconv.Itoa(jwksAge),
				"ENCRYPTION_KEY":   testEncryptionKey,
			})
			// PORT=0 must reach net.Listen as port 0: the kernel picks a
			// port and Addr reports it.
			host, port, err := net.SplitHostPort(m.Addr())
			if err != nil || host != "127.0.0.1" || port == "0" {
				t.Fatalf("Addr() = %q (%v), want 127.0.0.1 and a picked port", m.Addr(), err)
			}
			baseURL := "http://" + m.Addr()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			// The RPCs go over h2c: that client cannot fall back to HTTP/1.1.
			rpc := tokenClient(h2cClient(), baseURL)
			gen, err := generate(ctx, rpc, &tokenv1.GenerateTokensRequest{
				Subject: subject, ClientId: clientID, Audience: audience, Scopes: scopes,
			})
			if err != nil {
				t.Fatalf("GenerateTokens: %v", err)
			}
			ref, err := refresh(ctx, rpc, clientID, gen.GetRefreshToken())
			if err != nil {
				t.Fatalf("RefreshTokens: %v", err)
			}
			if ref.GetFamilyId() != gen.GetFamilyId() {
				t.Fatalf("refresh changed the family: %q → %q", gen.GetFamilyId(), ref.GetFamilyId())
			}
			if ref.GetRefreshToken() == gen.GetRefreshToken() {
				t.Fatal("refresh returned the same refresh token")
			}

			// The JWKS over plain HTTP/1.1, as a resource server fetches it.
			keys, body, hdr := fetchJWKS(t, http1Client(), baseURL)
			if cc := hdr.Get("Cache-Control"); !strings.Contains(cc, "max-age="+strconv.Itoa(jwksAge)) {
				t.Errorf("JWKS Cache-Control = %q, want max-age=%d", cc, jwksAge)
			}
			if len(keys.Keys) == 0 {
				t.Fatalf("empty JWKS: %s", body)
			}
			for _, k := range keys.Keys {
				if !k.Valid() || !k.IsPublic() || k.Use != "sig" || k.KeyID == "" {
					t.Errorf("JWKS key %q: valid %v public %v use %q: want a valid public signing key with a kid", k.KeyID, k.Valid(), k.IsPublic(), k.Use)
				}
			}
			checkGetJWKS(t, ctx, rpc, body)

			var prev verifiedToken
			for i, resp := range []*tokenv1.TokenResponse{gen, ref} {
				name := []string{"generated", "refreshed"}[i]
				if resp.GetTokenType() != "Bearer" {
					t.Errorf("%s: token_type %q, want Bearer", name, resp.GetTokenType())
				}
				if d := resp.GetExpiresIn() - accessTTL; d < -2 || d > 0 {
					t.Errorf("%s: expires_in %d, want about %d", name, resp.GetExpiresIn(), accessTTL)
				}
				if !strings.HasPrefix(resp.GetRefreshToken(), resp.GetFamilyId()+".") {
					t.Errorf("%s: refresh token is not <family_id>.<secret>", name)
				}
				v, err := verifyAccessToken(keys, resp.GetAccessToken(), alg)
				if err != nil {
					t.Fatalf("%s: go-jose refuses the access token: %v", name, err)
				}
				checkHeader(t, name, v.Header, alg, keys)
				c := v.Claims
				if c.Iss != issuer || c.Sub != subject || c.ClientID != clientID || !slices.Equal(c.Aud, audience) {
					t.Errorf("%s: iss %q sub %q client_id %q aud %q, want %q %q %q %q", name, c.Iss, c.Sub, c.ClientID, c.Aud, issuer, subject, clientID, audience)
				}
				if c.Scope != strings.Join(scopes, " ") {
					t.Errorf("%s: scope %q, want %q", name, c.Scope, strings.Join(scopes, " "))
				}
				if c.Sid != resp.GetFamilyId() || c.Sid == "" {
					t.Errorf("%s: sid %q, want the family_id %q", name, c.Sid, resp.GetFamilyId())
				}
				if c.Jti == "" || c.Iat == 0 {
					t.Errorf("%s: jti %q iat %d, want both set", name, c.Jti, c.Iat)
				}
				if c.Exp-c.Iat != accessTTL {
					t.Errorf("%s: exp-iat = %d, want ACCESS_TOKEN_TTL %d", name, c.Exp-c.Iat, accessTTL)
				}
				// go-jose's own claim validation: iss, aud and times now.
				var std josejwt.Claims
				if err := json.Unmarshal(v.Payload, &std); err != nil {
					t.Fatalf("%s: registered claims: %v", name, err)
				}
				if err := std.ValidateWithLeeway(josejwt.Expected{Issuer: issuer, AnyAudience: josejwt.Audience{audience[1]}, Time: time.Now()}, 5*time.Second); err != nil {
					t.Errorf("%s: go-jose claim validation: %v", name, err)
				}
				if i == 1 && (c.Jti == prev.Claims.Jti || c.Iat < prev.Claims.Iat) {
					t.Errorf("refreshed token: jti %q iat %d after jti %q iat %d: want a new jti, not older", c.Jti, c.Iat, prev.Claims.Jti, prev.Claims.Iat)
				}
				prev = v
			}

			// The verifier must be able to say no. Each case is a token
			// derived from a good one that go-jose must refuse.
			good := ref.GetAccessToken()
			parts := strings.Split(good, ".")
			if len(parts) != 3 {
				t.Fatalf("access token has %d parts", len(parts))
			}
			others := slices.DeleteFunc([]jose.SignatureAlgorithm{jose.RS256, jose.PS256, jose.ES256, jose.ES384, jose.EdDSA},
				func(a jose.SignatureAlgorithm) bool { return a == alg })
			key := keys.Key(prev.Header.KeyID)[0]
			for _, tc := range []struct {
				name         string
				token        string
				algs         []jose.SignatureAlgorithm
				wantParseErr bool // refused before any signature check
			}{
				{"payload char flipped", parts[0] + "." + flipMiddle(parts[1]) + "." + parts[2], []jose.SignatureAlgorithm{alg}, false},
				{"signature char flipped", parts[0] + "." + parts[1] + "." + flipMiddle(parts[2]), []jose.SignatureAlgorithm{alg}, false},
				{"payload of the generated token", parts[0] + "." + strings.Split(gen.GetAccessToken(), ".")[1] + "." + parts[2], []jose.SignatureAlgorithm{alg}, false},
				{"alg not allowed", good, others, true},
			} {
				t.Run(tc.name, func(t *testing.T) {
					if !tc.wantParseErr && tc.token == good {
						t.Fatal("tampering left the token unchanged")
					}
					jws, err := jose.ParseSignedCompact(tc.token, tc.algs)
					if tc.wantParseErr {
						if err == nil {
							t.Fatalf("go-jose parsed a %s token with only %v allowed", alg, tc.algs)
						}
						return
					}
					// It still parses: the refusal below is the signature's.
					if err != nil {
						t.Fatalf("parse: %v", err)
					}
					if payload, err := jws.Verify(key); err == nil {
						t.Fatalf("go-jose verified a tampered token; payload %s", payload)
					}
				})
			}
		})
	}
}

// checkHeader checks the JOSE header: alg, typ at+jwt (RFC 9068 §2.1) and
// a kid of a JWKS key of the same algorithm.
func checkHeader(t *testing.T, name string, h jose.Header, alg jose.SignatureAlgorithm, keys jose.JSONWebKeySet) {
	t.Helper()
	if h.Algorithm != string(alg) {
		t.Errorf("%s: alg %q, want %q", name, h.Algorithm, alg)
	}
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != "at+jwt" {
		t.Errorf("%s: typ %v, want at+jwt", name, h.ExtraHeaders[jose.HeaderType])
	}
	k := keys.Key(h.KeyID)
	if h.KeyID == "" || len(k) != 1 || k[0].Algorithm != string(alg) {
		t.Errorf("%s: kid %q does not name one %s key of the JWKS", name, h.KeyID, alg)
	}
}

// checkGetJWKS asserts that the GetJWKS RPC returns the keys of the HTTP
// JWKS, member by member.
func checkGetJWKS(t *testing.T, ctx context.Context, rpc interface {
	GetJWKS(context.Context, *connect.Request[tokenv1.GetJWKSRequest]) (*connect.Response[tokenv1.GetJWKSResponse], error)
}, httpBody []byte) {
	t.Helper()
	resp, err := rpc.GetJWKS(ctx, connect.NewRequest(&tokenv1.GetJWKSRequest{}))
	if err != nil {
		t.Fatalf("GetJWKS: %v", err)
	}
	type member struct{ Kty, Kid, Use, Alg, N, E, Crv, X, Y string }
	var fromHTTP struct {
		Keys []struct {
			Kty string `json:"kty"`
			Kid string `json:"kid"`
			Use string `json:"use"`
			Alg string `json:"alg"`
			N   string `json:"n"`
			E   string `json:"e"`
			Crv string `json:"crv"`
			X   string `json:"x"`
			Y   string `json:"y"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(httpBody, &fromHTTP); err != nil {
		t.Fatal(err)
	}
	var a, b []member
	for _, k := range fromHTTP.Keys {
		a = append(a, member{k.Kty, k.Kid, k.Use, k.Alg, k.N, k.E, k.Crv, k.X, k.Y})
	}
	for _, k := range resp.Msg.GetKeys() {
		b = append(b, member{k.GetKty(), k.GetKid(), k.GetUse(), k.GetAlg(), k.GetN(), k.GetE(), k.GetCrv(), k.GetX(), k.GetY()})
	}
	byKid := func(x, y member) int { return strings.Compare(x.Kid, y.Kid) }
	slices.SortFunc(a, byKid)
	slices.SortFunc(b, byKid)
	if !slices.Equal(a, b) {
		t.Errorf("GetJWKS = %+v\nHTTP JWKS = %+v", b, a)
	}
}

// flipMiddle replaces the middle character of a base64url segment by
// another base64url character. The middle one, not the last: the last
// character may carry padding bits a decoder ignores.
func flipMiddle(seg string) string {
	i := len(seg) / 2
	c := byte('A')
	if seg[i] == 'A' {
		c = 'B'
	}
	return seg[:i] + string(c) + seg[i+1:]
}
