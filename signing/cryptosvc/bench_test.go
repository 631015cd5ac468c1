package cryptosvc_test

import (
	"context"
	"crypto/rand"
	"testing"

	"github.com/auth-platform/tokenservice/cmd/cryptod/cryptodtest"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/breaker"
	"github.com/auth-platform/tokenservice/signing/cryptosvc"
	"github.com/auth-platform/tokenservice/signing/local"
	"github.com/auth-platform/tokenservice/signing/pkcs11"
)

// BenchmarkSign signs an access-token input, per algorithm, one
// goroutine, side by side:
//
//   - local: signing/local, the key in process;
//   - pkcs11: signing/pkcs11 straight to SoftHSM2 (crypto11, cgo);
//   - cryptosvc: signing/cryptosvc over gRPC, TLS 1.3 and mTLS on loopback
//     to cmd/cryptod in this process, which signs with the same SoftHSM2
//     token through signing/pkcs11;
//   - cryptosvc+breaker: the same behind signing/breaker, closed, with its
//     per-call timeout, as the keyring uses it.
//
// The client's overhead with the breaker closed is cryptosvc+breaker
// minus pkcs11: hashing here, the RPC both ways, cryptod's handler and
// authorization, and the breaker. Client and service share the machine's
// cores; a real deployment adds the network round trip.
//
//	go test -run '^$' -bench BenchmarkSign -benchmem ./signing/cryptosvc/
func BenchmarkSign(b *testing.B) {
	f := cryptodtest.New(b)
	srv := f.Start(b)
	svc := cryptosvc.Backend{Client: client(b, f, srv)}
	hsm, err := pkcs11.New(context.Background(), f.Token.Config)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = hsm.Close() })
	ctx := context.Background()
	input := []byte("eyJhbGciOiJFUzI1NiIsImtpZCI6ImsiLCJ0eXAiOiJhdCtqd3QifQ.eyJpc3MiOiJhdXRoLXBsYXRmb3JtIiwic3ViIjoidXNlci0xMjM0NTYifQ")
	for _, alg := range cryptosvc.Algorithms {
		ls, err := local.Generate(rand.Reader, alg)
		if err != nil {
			b.Fatal(err)
		}
		hk, err := hsm.Create(ctx, alg, "bench-pkcs11-"+string(alg))
		if err != nil {
			b.Fatal(err)
		}
		hs, err := hsm.Open(ctx, hk)
		if err != nil {
			b.Fatal(err)
		}
		sk, err := svc.Create(ctx, alg, "bench-"+string(alg))
		if err != nil {
			b.Fatal(err)
		}
		cs, err := svc.Open(ctx, sk)
		if err != nil {
			b.Fatal(err)
		}
		for _, s := range []struct {
			name string
			signing.Signer
		}{{"local", ls}, {"pkcs11", hs}, {"cryptosvc", cs}, {"cryptosvc+breaker", breaker.New(cs, breaker.Config{})}} {
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
