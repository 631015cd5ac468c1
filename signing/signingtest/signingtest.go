// Package signingtest is the contract suite every signing backend passes:
// for each algorithm the backend supports, a signature verifies with the
// published JWK (parsed back from its JSON members), the key ID is stable
// and equals the JWK's RFC 7638 thumbprint, a signature over other bytes
// does not verify, and the signer is safe for concurrent use.
package signingtest

import (
	"context"
	"encoding/json"
	"sync"
	"testing"

	"github.com/auth-platform/tokenservice/signing"
)

// Backend makes a signer for an algorithm and returns the JWK a verifier
// would fetch for it.
type Backend func(t *testing.T, alg signing.Algorithm) (signing.Signer, signing.JWK)

// Run runs the contract for every algorithm in algs.
func Run(t *testing.T, algs []signing.Algorithm, newSigner Backend) {
	for _, alg := range algs {
		t.Run(string(alg), func(t *testing.T) {
			t.Parallel()
			s, published := newSigner(t, alg)
			ctx := context.Background()
			if s.Algorithm() != alg {
				t.Fatalf("Algorithm() = %s, want %s", s.Algorithm(), alg)
			}
			// The JWK round-trips through JSON, as a verifier gets it.
			raw, err := json.Marshal(published)
			if err != nil {
				t.Fatal(err)
			}
			var jwk signing.JWK
			if err := json.Unmarshal(raw, &jwk); err != nil {
				t.Fatal(err)
			}
			if jwk.Kid != s.KeyID() || jwk.Thumbprint() != s.KeyID() || jwk.Alg != string(alg) || jwk.Use != "sig" {
				t.Fatalf("JWK kid %q alg %q use %q thumbprint %q, signer kid %q", jwk.Kid, jwk.Alg, jwk.Use, jwk.Thumbprint(), s.KeyID())
			}
			pub, err := jwk.PublicKey()
			if err != nil {
				t.Fatal(err)
			}
			input := []byte("eyJhbGciOiJ0ZXN0In0.eyJzdWIiOiJhbGljZSJ9")
			sig, err := s.Sign(ctx, input)
			if err != nil {
				t.Fatal(err)
			}
			if err := signing.Verify(alg, pub, input, sig); err != nil {
				t.Fatalf("signature does not verify with the published key: %v", err)
			}
			if err := signing.Verify(alg, pub, append(input, 'x'), sig); err == nil {
				t.Fatal("signature verifies over other bytes")
			}
			// Concurrent use: every signature verifies, the key ID holds.
			var wg sync.WaitGroup
			errs := make(chan error, 16)
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range 4 {
						sig, err := s.Sign(ctx, input)
						if err == nil {
							err = signing.Verify(alg, pub, input, sig)
						}
						if err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatalf("concurrent sign: %v", err)
			}
			if s.KeyID() != jwk.Kid {
				t.Fatal("key ID changed")
			}
		})
	}
}
