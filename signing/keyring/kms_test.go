package keyring_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/awskms"
	"github.com/auth-platform/tokenservice/signing/awskms/kmstest"
	"github.com/auth-platform/tokenservice/signing/breaker"
)

func kmsKeys(t *testing.T, e *kmstest.Emulator) int {
	t.Helper()
	out, err := e.Client.ListKeys(context.Background(), &kms.ListKeysInput{})
	if err != nil {
		t.Fatal(err)
	}
	return len(out.Keys)
}

// TestKMSKeys: with the awskms backend the keys live in KMS; a rotation
// records its intent, then the key.
func TestKMSKeys(t *testing.T) {
	e := kmstest.Start(t)
	env := issuertest.New(t, issuertest.Options{Algorithm: signing.ES256, Backend: awskms.Backend{API: e.Client}})
	ctx := context.Background()
	active, ok := env.Set.ActiveKey()
	if !ok || active.Backend != awskms.BackendName || active.Ref == "" || active.Sealed != nil || active.IntentID == "" {
		t.Fatalf("active key %+v", active)
	}
	tok, err := env.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "k", ClientID: "c", Audience: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.Issuer.VerifyAccessToken(tok.AccessToken, true); err != nil || tok.KeyID != active.ID {
		t.Fatalf("KMS-signed token: %v (kid %s, active %s)", err, tok.KeyID, active.ID)
	}
	if _, err := env.Keyring.Rotate(ctx, false); err != nil {
		t.Fatal(err)
	}
	if n := kmsKeys(t, e); n != 2 {
		t.Fatalf("%d KMS keys after one rotation, want 2", n)
	}
}

// TestFallbackKeyPublished: with a remote backend and fallback on, a local
// key is in the JWKS before it is ever needed, and never activated.
func TestFallbackKeyPublished(t *testing.T) {
	e := kmstest.Start(t)
	env := issuertest.New(t, issuertest.Options{Algorithm: signing.ES256, Backend: awskms.Backend{API: e.Client}, Fallback: true})
	if err := env.Keyring.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	fb, ok := env.Keyring.Fallback()
	if !ok {
		t.Fatal("no fallback key")
	}
	if !jwksKids(env)[fb.KeyID()] {
		t.Fatal("the fallback key is not in the JWKS")
	}
	if a, _ := env.Set.ActiveKey(); a.ID == fb.KeyID() || a.Backend != awskms.BackendName {
		t.Fatalf("active key %s (%s)", a.ID, a.Backend)
	}
}

// TestKMSOutage stops KMS in the middle of a load of token issues. No
// request fails: the first failures are re-signed by the fallback key, the
// breaker opens and the fallback key signs directly, with a shorter
// lifetime; a fallback_engaged event records it. When KMS is back, signing
// returns to it. Every token verifies against the keys of the JWKS.
func TestKMSOutage(t *testing.T) {
	e := kmstest.Start(t)
	env := issuertest.New(t, issuertest.Options{Algorithm: signing.ES256, Backend: awskms.Backend{API: e.Client}, Fallback: true,
		Breaker: breaker.Config{Failures: 2, OpenFor: 300 * time.Millisecond, Timeout: time.Second}})
	ctx := context.Background()
	if err := env.Keyring.Tick(ctx); err != nil { // publishes the fallback key
		t.Fatal(err)
	}
	primary, _ := env.Set.ActiveKey()
	fb, ok := env.Keyring.Fallback()
	if !ok {
		t.Fatal("no fallback key")
	}
	issue := func() issuer.Tokens {
		t.Helper()
		tok, err := env.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "o", ClientID: "c", Audience: []string{"api"}})
		if err != nil {
			t.Fatalf("a token request failed during the outage: %v", err)
		}
		if _, err := env.Issuer.VerifyAccessToken(tok.AccessToken, true); err != nil {
			t.Fatalf("token of %s does not verify against the JWKS: %v", tok.KeyID, err)
		}
		return tok
	}
	before := issue()
	if before.KeyID != primary.ID {
		t.Fatalf("signed by %s before the outage, want the KMS key %s", before.KeyID, primary.ID)
	}
	e.Stop()
	byKey := map[string]int{}
	for range 20 {
		tok := issue()
		byKey[tok.KeyID]++
		if tok.KeyID == fb.KeyID() && tok.AccessExpiresAt.Sub(env.Clock.Now()) > 5*time.Minute {
			t.Fatalf("a fallback token lives %s", tok.AccessExpiresAt.Sub(env.Clock.Now()))
		}
	}
	if byKey[fb.KeyID()] != 20 {
		t.Fatalf("during the outage: %v, want every token from the fallback key", byKey)
	}
	// The outage is in the log.
	deadline := time.Now().Add(10 * time.Second)
	for {
		env.CaughtUp(t)
		if k, _ := env.Set.Key(fb.KeyID()); k.FallbackEngaged > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no fallback_engaged event")
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.Restart(t)
	deadline = time.Now().Add(10 * time.Second)
	for {
		if tok := issue(); tok.KeyID == primary.ID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("signing did not return to KMS after it recovered")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestKMSDestroyedKeyDeleted: a destroyed KMS key (here a compromised one)
// is scheduled for deletion in KMS by the next lifecycle step, once.
func TestKMSDestroyedKeyDeleted(t *testing.T) {
	e := kmstest.Start(t)
	env := issuertest.New(t, issuertest.Options{Algorithm: signing.ES256, Backend: awskms.Backend{API: e.Client}})
	ctx := context.Background()
	old, _ := env.Set.ActiveKey()
	if _, err := env.Keyring.Rotate(ctx, true); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second tick has nothing left to do
		if err := env.Keyring.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	k, _ := env.Set.Key(old.ID)
	if !k.MaterialDeleted {
		t.Fatal("the destroyed key's material was not deleted")
	}
	d, err := e.Client.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: &old.Ref})
	if err != nil || d.KeyMetadata.KeyState != "PendingDeletion" {
		t.Fatalf("KMS key state %v (%v), want PendingDeletion", d, err)
	}
}
