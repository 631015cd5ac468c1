package keyring_test

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/cmd/cryptod/cryptodtest"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/breaker"
	"github.com/auth-platform/tokenservice/signing/cryptosvc"
	"github.com/auth-platform/tokenservice/signing/seal"
)

// TestCryptoServiceEnvelope: with keys in a crypto service (cmd/cryptod
// on SoftHSM2), a fallback key sealed under the local key before
// envelope sealing was turned on is resealed with a data key of the
// service by the lifecycle. A second replica, whose sealer has unwrapped
// nothing yet, opens the fallback key when it starts, so that when the
// service then stops, its token requests are signed by the fallback key
// and verify.
func TestCryptoServiceEnvelope(t *testing.T) {
	f := cryptodtest.New(t)
	srv := f.Start(t)
	node := eventlogtest.SingleNode(t)
	ctx := context.Background()
	newReplica := func(conn, envelope bool) *issuertest.Env {
		c, err := cryptosvc.New(cryptosvc.Config{Address: srv.URL, TLS: f.ClientTLS(t, f.ClientCert, f.ClientKey)})
		if err != nil {
			t.Fatal(err)
		}
		local, err := seal.New(rand.Reader, issuertest.TestKey)
		if err != nil {
			t.Fatal(err)
		}
		wrapper := c.KeyWrapper(cryptosvc.DefaultWrapKeyName, breaker.NewBreaker(breaker.Config{Failures: 2, Timeout: time.Second}))
		sealer, err := local.WithEnvelope(seal.Envelope{Wrapper: wrapper, Seal: envelope, Fallback: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := sealer.Prepare(ctx); err != nil {
			t.Fatal(err)
		}
		o := issuertest.Options{Conn: node.Conn, Algorithm: signing.ES256, Backend: cryptosvc.Backend{Client: c}, Fallback: true, Sealer: sealer,
			Breaker: breaker.Config{Failures: 2, OpenFor: time.Minute, Timeout: time.Second}}
		if conn {
			nc, err := node.Embedded.Connect()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
			o.Conn = nc
		}
		return issuertest.New(t, o)
	}
	before := newReplica(false, false)
	fb, ok := before.Keyring.Fallback()
	if !ok {
		t.Fatal("no fallback key")
	}
	if k, _ := before.Set.Key(fb.KeyID()); len(k.Sealed) == 0 || k.Sealed[0] != 3 {
		t.Fatal("the fallback key is not sealed under the local key")
	}
	first := newReplica(true, true)
	if err := first.Keyring.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	first.CaughtUp(t)
	if k, _ := first.Set.Key(fb.KeyID()); len(k.Sealed) == 0 || k.Sealed[0] != 2 {
		t.Fatalf("the fallback key was not resealed with the envelope: format %v", k.Sealed[:1])
	}

	second := newReplica(true, true)
	srv.Stop()
	for range 5 {
		tok, err := second.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "s", ClientID: "c", Audience: []string{"api"}})
		if err != nil {
			t.Fatalf("a token request failed with the crypto service down: %v", err)
		}
		if tok.KeyID != fb.KeyID() {
			t.Fatalf("signed by %s, want the fallback key %s", tok.KeyID, fb.KeyID())
		}
		if _, err := second.Issuer.VerifyAccessToken(tok.AccessToken, true); err != nil {
			t.Fatal(err)
		}
	}
}
