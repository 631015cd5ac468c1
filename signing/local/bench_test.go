package local_test

// Raw JWT signing cost of the local backend, per algorithm.
//
// BenchmarkSign/<alg>/serial   one goroutine, b.Loop: the latency of one
//                              signature (ns/op) and the single-core rate.
// BenchmarkSign/<alg>/parallel b.RunParallel over GOMAXPROCS goroutines:
//                              the "raw N-core signing rate" (ops/s) that
//                              GenerateTokens is compared with in
//                              test/bench.
//
// Every op signs the same realistic access-token signing input
// (BASE64URL(header) "." BASE64URL(payload), ~400 bytes, see signingInput)
// through (*local.Signer).Sign, i.e. golang-jwt's SigningMethod.Sign with
// crypto/rand, exactly as the issuer calls it. ops/s is b.N divided by the
// measured time; for parallel it is the aggregate over all goroutines, and
// ns/op is wall time per op (not CPU time per op).
//
//	go test -run '^$' -bench . -benchmem -benchtime 1s ./signing/local/
//	go test -run '^$' -bench 'Sign/ES256/parallel' -cpuprofile /tmp/sign.pprof ./signing/local/
//	go tool pprof -top -nodecount 30 /tmp/sign.pprof

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/local"
)

// signingInput returns header.payload of an access token signed by s, in
// the shape issuer.signAccessToken produces (RFC 9068 claims).
func signingInput(tb testing.TB, s *local.Signer) []byte {
	tb.Helper()
	header, err := json.Marshal(map[string]string{"alg": string(s.Algorithm()), "kid": s.KeyID(), "typ": "at+jwt"})
	if err != nil {
		tb.Fatal(err)
	}
	payload, err := json.Marshal(map[string]any{
		"iss": "auth-platform", "sub": "user-123456", "aud": []string{"https://api.example.com"},
		"client_id": "web-app", "iat": 1767225600, "exp": 1767226500,
		"jti": "q8yAnB2kR1SiLOx6bIh4Kw", "scope": "openid profile", "sid": "VLWj5M8tQ5iCuR3Y0n2mFg",
	})
	if err != nil {
		tb.Fatal(err)
	}
	enc := base64.RawURLEncoding
	in := enc.AppendEncode(nil, header)
	in = append(in, '.')
	return enc.AppendEncode(in, payload)
}

// newSigner generates a key for alg and checks one signature against its
// public key, so a benchmark never measures a broken signer.
func newSigner(b *testing.B, alg signing.Algorithm) (*local.Signer, []byte) {
	b.Helper()
	s, err := local.Generate(rand.Reader, alg)
	if err != nil {
		b.Fatal(err)
	}
	in := signingInput(b, s)
	sig, err := s.Sign(context.Background(), in)
	if err != nil {
		b.Fatal(err)
	}
	der, err := s.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	priv, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		b.Fatal(err)
	}
	if err := signing.Verify(alg, priv.(crypto.Signer).Public(), in, sig); err != nil {
		b.Fatalf("%s: signature does not verify: %v", alg, err)
	}
	return s, in
}

func reportRate(b *testing.B) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(b.N)/s, "ops/s")
	}
}

func BenchmarkSign(b *testing.B) {
	for _, alg := range signing.Algorithms {
		b.Run(string(alg), func(b *testing.B) {
			s, in := newSigner(b, alg)
			ctx := context.Background()
			b.Run("serial", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := s.Sign(ctx, in); err != nil {
						b.Fatal(err)
					}
				}
				reportRate(b)
			})
			b.Run("parallel", func(b *testing.B) {
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := s.Sign(ctx, in); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.StopTimer()
				reportRate(b)
			})
		})
	}
}
