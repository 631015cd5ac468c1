package issuer_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// TestVerifiedTokenCache: a token verified once and presented again (a
// cache hit) is refused as soon as anything that refuses a token seen the
// first time says so: its family revoked, its lifetime over, its key
// destroyed by a compromise; a token that differs from a cached one in a
// byte is verified, and refused.
func TestVerifiedTokenCache(t *testing.T) {
	t.Parallel()
	env := issuertest.New(t, issuertest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	gen := func() issuer.Tokens {
		tok, err := env.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "alice", ClientID: "web", Audience: []string{"api"}})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	verify := func(tok string, checkExpiry bool) (issuer.VerifiedAccessToken, error) {
		t.Helper()
		// Twice: the first may be the one that fills the cache, the second
		// is a hit and must answer alike.
		a, errA := env.Issuer.VerifyAccessToken(tok, checkExpiry)
		b, errB := env.Issuer.VerifyAccessToken(tok, checkExpiry)
		if (errA == nil) != (errB == nil) || a.FamilyID != b.FamilyID || a.JKT != b.JKT || !a.Expiry.Equal(b.Expiry) {
			t.Fatalf("a cached answer differs: %+v %v, then %+v %v", a, errA, b, errB)
		}
		return b, errB
	}

	revoked, expiring, compromised := gen(), gen(), gen()
	for _, tok := range []issuer.Tokens{revoked, expiring, compromised} {
		if at, err := verify(tok.AccessToken, true); err != nil || at.FamilyID != tok.FamilyID || issuer.AccessTokenRevoked(at, env.Set) {
			t.Fatalf("fresh token: %+v %v", at, err)
		}
	}

	t.Run("tampered", func(t *testing.T) {
		if _, err := verify(revoked.AccessToken[:len(revoked.AccessToken)-4]+"AAAA", true); !errors.Is(err, issuer.ErrInvalidAccessToken) {
			t.Fatalf("tampered token of a cached one: %v", err)
		}
	})

	t.Run("revoked", func(t *testing.T) {
		if _, err := env.Issuer.RevokeFamily(ctx, revoked.FamilyID, eventsv1.RevocationReason_REVOCATION_REASON_CLIENT); err != nil {
			t.Fatal(err)
		}
		env.CaughtUp(t)
		at, err := verify(revoked.AccessToken, true)
		if err != nil || !issuer.AccessTokenRevoked(at, env.Set) {
			t.Fatalf("a cached token of a revoked family: %+v %v, revoked %v", at, err, err == nil && issuer.AccessTokenRevoked(at, env.Set))
		}
		if _, ok := env.Issuer.IntrospectAccessToken(revoked.AccessToken, env.Set, "", nil); ok {
			t.Fatal("introspection calls a cached token of a revoked family active")
		}
	})

	t.Run("compromised key", func(t *testing.T) {
		c, err := env.Responder.Compromise(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		env.CaughtUp(t)
		if c.Previous != compromised.KeyID {
			t.Fatalf("compromised %s, want %s", c.Previous, compromised.KeyID)
		}
		if _, err := verify(compromised.AccessToken, true); !errors.Is(err, issuer.ErrInvalidAccessToken) {
			t.Fatalf("a cached token of a destroyed key: %v", err)
		}
		if _, err := verify(compromised.AccessToken, false); !errors.Is(err, issuer.ErrInvalidAccessToken) {
			t.Fatalf("a cached token of a destroyed key, expiry not checked: %v", err)
		}
	})

	t.Run("expired", func(t *testing.T) {
		fresh := gen() // signed by the new key
		if _, err := verify(fresh.AccessToken, true); err != nil {
			t.Fatal(err)
		}
		env.Clock.Advance(15*time.Minute + 6*time.Second) // the lifetime and the leeway
		if _, err := verify(fresh.AccessToken, true); !errors.Is(err, issuer.ErrInvalidAccessToken) {
			t.Fatalf("a cached expired token: %v", err)
		}
		// Revocation accepts expired tokens (RFC 7009 §2.2).
		if at, err := verify(fresh.AccessToken, false); err != nil || at.FamilyID != fresh.FamilyID {
			t.Fatalf("expiry not checked: %+v %v", at, err)
		}
	})
}

// TestVerifiedTokenCacheOff: with the cache off every token is verified,
// with the same answers.
func TestVerifiedTokenCacheOff(t *testing.T) {
	t.Parallel()
	env := issuertest.New(t, issuertest.Options{VerifiedTokens: -1})
	ctx := context.Background()
	tok, err := env.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "bob", ClientID: "web", Audience: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if at, err := env.Issuer.VerifyAccessToken(tok.AccessToken, true); err != nil || at.FamilyID != tok.FamilyID {
			t.Fatalf("%+v %v", at, err)
		}
	}
	env.Clock.Advance(time.Hour)
	if _, err := env.Issuer.VerifyAccessToken(tok.AccessToken, true); !errors.Is(err, issuer.ErrInvalidAccessToken) {
		t.Fatalf("expired: %v", err)
	}
}
