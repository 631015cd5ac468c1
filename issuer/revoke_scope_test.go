package issuer_test

import (
	"context"
	"errors"
	"testing"

	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
)

// TestRevokeClientScope: a caller restricted to some clients revokes only
// their families, by family ID, refresh token or access token; the scope is
// part of the request, not of its context.
func TestRevokeClientScope(t *testing.T) {
	env := issuertest.New(t, issuertest.Options{})
	ctx := context.Background()
	gen := func(client string) issuer.Tokens {
		tok, err := env.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "alice", ClientID: client, Audience: []string{"api"}})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	other := gen("mobile")
	scope := []string{"web"}
	for name, req := range map[string]issuer.RevokeRequest{
		"family":        {Target: issuer.TargetFamily, Value: other.FamilyID, ClientScope: scope},
		"refresh token": {Target: issuer.TargetRefreshToken, Value: other.RefreshToken, ClientScope: scope},
		"access token":  {Target: issuer.TargetAccessToken, Value: other.AccessToken, ClientScope: scope},
	} {
		if n, err := env.Issuer.Revoke(ctx, req); n != 0 || err != nil {
			t.Fatalf("%s of another client's family: %d revoked, %v", name, n, err)
		}
	}
	if n, err := env.Issuer.Revoke(ctx, issuer.RevokeRequest{Target: issuer.TargetFamily, Value: gen("web").FamilyID, ClientScope: scope}); n != 1 || err != nil {
		t.Fatalf("own family: %d revoked, %v", n, err)
	}
	if n, err := env.Issuer.Revoke(ctx, issuer.RevokeRequest{Target: issuer.TargetFamily, Value: other.FamilyID}); n != 1 || err != nil {
		t.Fatalf("unrestricted: %d revoked, %v", n, err)
	}
	if _, err := env.Issuer.Revoke(ctx, issuer.RevokeRequest{}); !errors.Is(err, issuer.ErrInvalidRequest) {
		t.Fatalf("no target: %v, want ErrInvalidRequest", err)
	}
}
