//go:build linux && cgo

package local

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"testing"

	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/signingtest"
)

// withOpenSSL loads OpenSSL for the test and turns it off again after
// (it is process-wide, and the other tests and benchmarks measure Go's
// crypto). Every machine tokend is built on for Linux with cgo has
// libcrypto.so.3 (Debian's libssl3), so its absence fails the test.
func withOpenSSL(tb testing.TB) Library {
	tb.Helper()
	lib, err := LoadOpenSSL()
	if err != nil {
		tb.Fatalf("LoadOpenSSL: %v", err)
	}
	tb.Cleanup(func() { rsaByOpenSSL.Store(false) })
	return lib
}

// TestOpenSSLSignsRSA: once OpenSSL is loaded, RSA keys sign with it and
// their signatures verify with Go's crypto and the contract's verifiers;
// an RS256 signature (PKCS #1 v1.5, deterministic) is byte for byte
// Go's; other keys keep Go's crypto.
func TestOpenSSLSignsRSA(t *testing.T) {
	lib := withOpenSSL(t)
	if lib.Version == "" {
		t.Fatalf("library %+v", lib)
	}
	in := []byte("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9")
	for _, alg := range signing.Algorithms {
		s, err := Generate(rand.Reader, alg)
		if err != nil {
			t.Fatal(err)
		}
		k, isRSA := s.priv.(*rsa.PrivateKey)
		if (s.rsa != nil) != isRSA {
			t.Fatalf("%s: signs with OpenSSL: %t", alg, s.rsa != nil)
		}
		if !isRSA {
			continue
		}
		sig, err := s.Sign(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		if err := signing.Verify(alg, k.Public(), in, sig); err != nil {
			t.Fatalf("%s: OpenSSL signature does not verify: %v", alg, err)
		}
		if alg == signing.RS256 {
			digest := sha256.Sum256(in)
			want, err := rsa.SignPKCS1v15(nil, k, crypto.SHA256, digest[:])
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(sig, want) {
				t.Fatal("RS256: OpenSSL's signature differs from Go's")
			}
		}
		// A signature of other input does not verify for this one.
		other, _ := s.Sign(context.Background(), append([]byte("x"), in...))
		if signing.Verify(alg, k.Public(), in, other) == nil {
			t.Fatalf("%s: a signature of other input verified", alg)
		}
		// Parsed back from the log, the key signs with OpenSSL too.
		der, err := s.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse(alg, der)
		if err != nil || back.rsa == nil {
			t.Fatalf("%s: parsed key: OpenSSL %t, %v", alg, back != nil && back.rsa != nil, err)
		}
	}
}

// TestOpenSSLContract runs the signer contract (JWS verified by third-party
// libraries, concurrent use) with OpenSSL signing RSA keys.
func TestOpenSSLContract(t *testing.T) {
	withOpenSSL(t)
	signingtest.Run(t, []signing.Algorithm{signing.RS256, signing.PS256}, func(t *testing.T, alg signing.Algorithm) (signing.Signer, signing.JWK) {
		s, err := Generate(rand.Reader, alg)
		if err != nil {
			t.Fatal(err)
		}
		if s.rsa == nil {
			t.Fatalf("%s: not signed by OpenSSL", alg)
		}
		return s, s.PublicJWK()
	})
}

// BenchmarkSignRSA compares the libraries side by side in one run: Go's
// crypto (BoringCrypto in the release build) and OpenSSL, one key each,
// one goroutine and GOMAXPROCS goroutines.
//
//	GOEXPERIMENT=boringcrypto go test -run '^$' -bench SignRSA -benchtime 2s ./signing/local/
func BenchmarkSignRSA(b *testing.B) {
	in := []byte("eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiYXQrand0In0.eyJzdWIiOiJ1c2VyLTEyMzQ1NiIsImF1ZCI6WyJhcGkiXX0")
	for _, alg := range []signing.Algorithm{signing.RS256, signing.PS256} {
		for _, lib := range []string{"go", "openssl"} {
			if lib == "openssl" {
				withOpenSSL(b)
			}
			s, err := Generate(rand.Reader, alg)
			if err != nil {
				b.Fatal(err)
			}
			if (s.rsa != nil) != (lib == "openssl") {
				b.Fatalf("%s/%s: wrong library", alg, lib)
			}
			rsaByOpenSSL.Store(false)
			for _, par := range []bool{false, true} {
				name := string(alg) + "/" + lib + "/serial"
				if par {
					name = string(alg) + "/" + lib + "/parallel"
				}
				b.Run(name, func(b *testing.B) {
					sign := func() {
						if _, err := s.Sign(context.Background(), in); err != nil {
							b.Error(err)
						}
					}
					if par {
						b.RunParallel(func(pb *testing.PB) {
							for pb.Next() {
								sign()
							}
						})
					} else {
						for b.Loop() {
							sign()
						}
					}
					b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
				})
			}
		}
	}
}
