package pkcs11_test

import (
	"context"
	"crypto/rand"
	"testing"

	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/local"
	"github.com/auth-platform/tokenservice/signing/pkcs11/hsmtest"
)

// BenchmarkSign compares signing an access-token input through the pkcs11
// backend (crypto11 and SoftHSM2 in this process, RSA-2048) with the local
// backend, per algorithm, one goroutine. SoftHSM2 computes with OpenSSL in
// software, so its figure is the PKCS#11 overhead (sessions, cgo, object
// look-up) over a software signature; a network HSM adds its round trip,
// a hardware one its own speed.
//
//	go test -run '^$' -bench . -benchmem ./signing/pkcs11/
func BenchmarkSign(b *testing.B) {
	tok := hsmtest.New(b)
	hsm := open(b, tok.Config)
	ctx := context.Background()
	input := []byte("eyJhbGciOiJFUzI1NiIsImtpZCI6ImsiLCJ0eXAiOiJhdCtqd3QifQ.eyJpc3MiOiJhdXRoLXBsYXRmb3JtIiwic3ViIjoidXNlci0xMjM0NTYifQ")
	for _, alg := range []signing.Algorithm{signing.RS256, signing.PS256, signing.ES256, signing.ES384} {
		key, err := hsm.Create(ctx, alg, "bench-"+string(alg))
		if err != nil {
			b.Fatal(err)
		}
		hs, err := hsm.Open(ctx, key)
		if err != nil {
			b.Fatal(err)
		}
		ls, err := local.Generate(rand.Reader, alg)
		if err != nil {
			b.Fatal(err)
		}
		for _, s := range []struct {
			name string
			signing.Signer
		}{{"pkcs11", hs}, {"local", ls}} {
			b.Run(string(alg)+"/"+s.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := s.Sign(ctx, input); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
