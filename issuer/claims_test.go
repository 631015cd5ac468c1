package issuer_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
)

// TestExtraClaimsReserved: extra_claims never set a registered claim, set
// an authorization claim only when the caller is allowed it, and set any
// other claim freely; what is accepted is in the access token.
func TestExtraClaimsReserved(t *testing.T) {
	env := issuertest.New(t, issuertest.Options{})
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		claims  map[string]any
		allowed []string
		wantErr error
	}{
		{name: "free claim", claims: map[string]any{"tenant": "acme"}},
		{name: "roles allowed", claims: map[string]any{"roles": []any{"admin"}}, allowed: []string{"roles", "groups"}},
		{name: "roles not allowed", claims: map[string]any{"roles": []any{"admin"}}, wantErr: issuer.ErrClaimNotAllowed},
		{name: "groups, only roles allowed", claims: map[string]any{"groups": []any{"ops"}}, allowed: []string{"roles"}, wantErr: issuer.ErrClaimNotAllowed},
		{name: "act", claims: map[string]any{"act": map[string]any{"sub": "admin"}}, wantErr: issuer.ErrClaimNotAllowed},
		{name: "may_act", claims: map[string]any{"may_act": map[string]any{"sub": "admin"}}, wantErr: issuer.ErrClaimNotAllowed},
		{name: "azp", claims: map[string]any{"azp": "other-client"}, wantErr: issuer.ErrClaimNotAllowed},
		{name: "scp", claims: map[string]any{"scp": []any{"admin"}}, wantErr: issuer.ErrClaimNotAllowed},
		{name: "entitlements", claims: map[string]any{"entitlements": []any{"all"}}, wantErr: issuer.ErrClaimNotAllowed},
		{name: "cnf, even if listed", claims: map[string]any{"cnf": map[string]any{"jkt": "x"}}, allowed: []string{"cnf"}, wantErr: issuer.ErrInvalidRequest},
		{name: "sub, even if listed", claims: map[string]any{"sub": "mallory"}, allowed: []string{"sub"}, wantErr: issuer.ErrInvalidRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			extra, err := structpb.NewStruct(tc.claims)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := env.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "alice", ClientID: "web", Audience: []string{"api"},
				Extra: extra, AllowedClaims: tc.allowed})
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				if !errors.Is(err, issuer.ErrInvalidRequest) {
					t.Fatalf("err = %v, want one of invalid_request (issuer.ErrInvalidRequest)", err)
				}
				return
			}
			payload, err := base64.RawURLEncoding.DecodeString(strings.Split(tok.AccessToken, ".")[1])
			if err != nil {
				t.Fatal(err)
			}
			var claims map[string]any
			if err := json.Unmarshal(payload, &claims); err != nil {
				t.Fatal(err)
			}
			for k := range tc.claims {
				if _, ok := claims[k]; !ok {
					t.Fatalf("claim %q missing from the token: %v", k, claims)
				}
			}
		})
	}
}

func TestClassifyClaim(t *testing.T) {
	for name, want := range map[string]issuer.ClaimClass{
		"sub": issuer.ClaimRegistered, "cnf": issuer.ClaimRegistered, "client_id": issuer.ClaimRegistered,
		"roles": issuer.ClaimAuthorization, "groups": issuer.ClaimAuthorization, "act": issuer.ClaimAuthorization,
		"may_act": issuer.ClaimAuthorization, "azp": issuer.ClaimAuthorization, "scp": issuer.ClaimAuthorization,
		"entitlements": issuer.ClaimAuthorization,
		"tenant":       issuer.ClaimFree, "Roles": issuer.ClaimFree,
	} {
		if got := issuer.ClassifyClaim(name); got != want {
			t.Errorf("ClassifyClaim(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestAudienceAcceptable(t *testing.T) {
	for _, tc := range []struct {
		name    string
		aud     []string
		want    string
		allowed []string
		ok      bool
	}{
		{"no expectation, no restriction", []string{"a"}, "", nil, true},
		{"expected, held", []string{"a", "b"}, "b", nil, true},
		{"expected, not held", []string{"a"}, "b", nil, false},
		{"restricted, shared", []string{"a", "b"}, "", []string{"b", "c"}, true},
		{"restricted, not shared", []string{"a"}, "", []string{"b"}, false},
		{"restricted, expected within", []string{"a", "b"}, "b", []string{"b"}, true},
		{"restricted, expected outside the restriction", []string{"a", "b"}, "a", []string{"b"}, false},
		{"token without audience, restricted", nil, "", []string{"b"}, false},
	} {
		if got := issuer.AudienceAcceptable(tc.aud, tc.want, tc.allowed); got != tc.ok {
			t.Errorf("%s: AudienceAcceptable(%v, %q, %v) = %v, want %v", tc.name, tc.aud, tc.want, tc.allowed, got, tc.ok)
		}
	}
}
