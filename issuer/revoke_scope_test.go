package issuer_test

import (
	"context"
	"testing"

	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// TestRevokeClientScope: a caller restricted to some clients revokes only
// their families, by family ID, refresh token or access token.
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
	scoped := issuer.WithClientScope(ctx, []string{"web"})
	reason := eventsv1.RevocationReason_REVOCATION_REASON_CLIENT
	for name, revoke := range map[string]func(context.Context) (int, error){
		"family": func(c context.Context) (int, error) { return env.Issuer.RevokeFamily(c, other.FamilyID, reason) },
		"refresh token": func(c context.Context) (int, error) {
			return env.Issuer.RevokeRefreshToken(c, other.RefreshToken, reason)
		},
		"access token": func(c context.Context) (int, error) {
			return env.Issuer.RevokeAccessToken(c, other.AccessToken, reason)
		},
	} {
		if n, err := revoke(scoped); n != 0 || err != nil {
			t.Fatalf("%s of another client's family: %d revoked, %v", name, n, err)
		}
	}
	if n, err := env.Issuer.RevokeFamily(scoped, gen("web").FamilyID, reason); n != 1 || err != nil {
		t.Fatalf("own family: %d revoked, %v", n, err)
	}
	if n, err := env.Issuer.RevokeFamily(ctx, other.FamilyID, reason); n != 1 || err != nil {
		t.Fatalf("unrestricted: %d revoked, %v", n, err)
	}
}
