package issuer_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
)

// TestExpiryInstantAgrees: at exactly a family's refresh expiry, refresh
// and introspection give the one answer of family.ActiveAt: expired. A nanosecond before, the token is active for
// all of them. (Refresh used to accept the token at that instant while
// introspection called it inactive.)
func TestExpiryInstantAgrees(t *testing.T) {
	env := issuertest.New(t, issuertest.Options{RefreshTTL: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tok, err := env.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "alice", ClientID: "web", Audience: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	env.Clock.Advance(time.Hour - time.Nanosecond)
	if _, ok, err := env.Issuer.IntrospectRefreshToken(ctx, tok.RefreshToken); err != nil || !ok {
		t.Fatalf("a nanosecond before expiry: introspection %v, %v", ok, err)
	}
	env.Clock.Advance(time.Nanosecond)
	if _, ok, err := env.Issuer.IntrospectRefreshToken(ctx, tok.RefreshToken); err != nil || ok {
		t.Fatalf("at expiry: introspection active %v, %v", ok, err)
	}
	if _, err := env.Issuer.Refresh(ctx, issuer.RefreshRequest{RefreshToken: tok.RefreshToken, ClientID: "web"}); !errors.Is(err, issuer.ErrTokenExpired) {
		t.Fatalf("at expiry: refresh %v, want ErrTokenExpired", err)
	}
}
