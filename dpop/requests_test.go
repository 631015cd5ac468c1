package dpop_test

import (
	"context"
	"errors"
	"testing"

	"github.com/auth-platform/tokenservice/dpop"
	"github.com/auth-platform/tokenservice/dpop/dpoptest"
	"github.com/auth-platform/tokenservice/signing"
)

// TestVerifyTokenRequest: the DPoP rules of a token request (RFC 9449 §5),
// one per row.
func TestVerifyTokenRequest(t *testing.T) {
	f := newFixture(t, false)
	k, other := dpoptest.NewKey(signing.ES256), dpoptest.NewKey(signing.ES256)
	const endpoint = "https://auth.example/token"
	endpoints := []string{endpoint}
	for _, tc := range []struct {
		name    string
		r       dpop.TokenRequest
		wantJKT bool
		wantErr error
	}{
		{"bearer", dpop.TokenRequest{}, false, nil},
		{"method without proof", dpop.TokenRequest{Method: "POST", URI: endpoint}, false, dpop.ErrRequestShape},
		{"proof without method", dpop.TokenRequest{Proof: k.Proof("POST", endpoint, t0)}, false, dpop.ErrRequestShape},
		{"pre-bound key without proof", dpop.TokenRequest{BoundJKT: k.JKT()}, false, dpop.ErrMissing},
		{"not a POST", dpop.TokenRequest{Proof: k.Proof("GET", endpoint, t0), Method: "GET", URI: endpoint}, false, dpop.ErrNotTokenRequest},
		{"another endpoint", dpop.TokenRequest{Proof: k.Proof("POST", "https://api.example/x", t0), Method: "POST", URI: "https://api.example/x"}, false, dpop.ErrNotTokenRequest},
		{"with ath", dpop.TokenRequest{Proof: k.Proof("POST", endpoint, t0, func(p *dpoptest.Parts) { p.Claims["ath"] = dpoptest.ATH("tok") }), Method: "POST", URI: endpoint}, false, dpop.ErrNotTokenRequest},
		{"another key than the pre-bound one", dpop.TokenRequest{Proof: other.Proof("POST", endpoint, t0), Method: "POST", URI: endpoint, BoundJKT: k.JKT()}, false, dpop.ErrKeyMismatch},
		{"bound", dpop.TokenRequest{Proof: k.Proof("POST", endpoint, t0), Method: "POST", URI: endpoint, BoundJKT: k.JKT()}, true, nil},
	} {
		jkt, err := f.v.VerifyTokenRequest(context.Background(), tc.r, endpoints)
		if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) || (jkt != "") != tc.wantJKT {
			t.Errorf("%s: %q, %v; want key %v, %v", tc.name, jkt, err, tc.wantJKT, tc.wantErr)
		}
	}
}

// TestVerifyResourceRequest: the rules of a resource request (§7): a bound
// token needs a proof of its key, the proof's ath covers the token.
func TestVerifyResourceRequest(t *testing.T) {
	f := newFixture(t, false)
	k, other := dpoptest.NewKey(signing.ES256), dpoptest.NewKey(signing.ES256)
	const uri = "https://api.example/things"
	ath := func(p *dpoptest.Parts) { p.Claims["ath"] = dpoptest.ATH("tok") }
	for _, tc := range []struct {
		name    string
		r       dpop.ResourceRequest
		wantErr error
	}{
		{"bound without proof", dpop.ResourceRequest{Method: "GET", URI: uri, AccessToken: "tok", BoundJKT: k.JKT()}, dpop.ErrBoundWithoutProof},
		{"no method", dpop.ResourceRequest{Proof: k.Proof("GET", uri, t0, ath), AccessToken: "tok"}, dpop.ErrMissingClaim},
		{"another key", dpop.ResourceRequest{Proof: other.Proof("GET", uri, t0, ath), Method: "GET", URI: uri, AccessToken: "tok", BoundJKT: k.JKT()}, dpop.ErrKeyMismatch},
		{"no ath", dpop.ResourceRequest{Proof: k.Proof("GET", uri, t0), Method: "GET", URI: uri, AccessToken: "tok", BoundJKT: k.JKT()}, dpop.ErrInvalidProof},
		{"valid", dpop.ResourceRequest{Proof: k.Proof("GET", uri, t0, ath), Method: "GET", URI: uri, AccessToken: "tok", BoundJKT: k.JKT()}, nil},
	} {
		_, err := f.v.VerifyResourceRequest(context.Background(), tc.r)
		if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.wantErr)
		}
	}
}
