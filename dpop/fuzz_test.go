package dpop_test

import (
	"context"
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/dpop"
	"github.com/auth-platform/tokenservice/dpop/dpoptest"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/local"
)

// FuzzVerify feeds arbitrary proofs to the verifier, seeded with valid and
// invalid proofs. It must never panic, every refusal must carry an OAuth
// code, and the only proofs it may accept are the valid seeds: the fuzzer
// cannot forge a signature. The valid seeds are Ed25519 proofs from a fixed
// key and jti, byte-identical in every fuzzing process (Ed25519 signatures
// are deterministic); proofs of the randomized algorithms are seeded only
// in invalid forms.
func FuzzVerify(f *testing.F) {
	fx := newFixture(f, false)
	s, err := local.New(signing.EdDSA, ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)))
	if err != nil {
		f.Fatal(err)
	}
	fixed := dpoptest.Key{Signer: s}
	valid := map[string]bool{}
	for i, jti := range []string{"fuzz-seed-1", "fuzz-seed-2"} {
		p := fixed.Proof(htm, htu, t0, func(p *dpoptest.Parts) { p.Claims["jti"] = jti })
		valid[p] = true
		f.Add(p)
		if i == 0 {
			f.Add(fixed.Proof(htm, htu, t0, func(p *dpoptest.Parts) { p.Claims["htm"] = "GET" }))
		}
	}
	for _, alg := range signing.Algorithms {
		k := dpoptest.NewKey(alg)
		f.Add(k.Proof(htm, htu, t0, func(p *dpoptest.Parts) { p.Header["typ"] = "JWT" }))
		f.Add(k.Proof(htm, htu, t0, func(p *dpoptest.Parts) { p.Claims["iat"] = "x" }))
		f.Add(k.Proof(htm, htu, t0, func(p *dpoptest.Parts) { p.Claims["htu"] = "https://other.example/token" }))
		f.Add(k.Proof(htm, htu, t0, func(p *dpoptest.Parts) {
			p.Header["jwk"] = map[string]any{"kty": "EC", "crv": "P-256", "x": "A", "y": "B"}
		}))
	}
	f.Add("")
	f.Add("..")
	f.Add("eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6Im5vbmUifQ.e30.")
	f.Fuzz(func(t *testing.T, proof string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := fx.v.Verify(ctx, proof, dpop.Request{Method: htm, URI: htu})
		if err == nil && !valid[proof] {
			t.Fatalf("accepted a proof no key signed: %q", proof)
		}
		if err != nil && dpop.Code(err) == "" && ctx.Err() == nil {
			t.Fatalf("refusal without an OAuth code: %v", err)
		}
	})
}
