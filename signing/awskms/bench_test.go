package awskms_test

import (
	"context"
	"crypto/rand"
	"testing"

	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/awskms"
	"github.com/auth-platform/tokenservice/signing/awskms/kmstest"
	"github.com/auth-platform/tokenservice/signing/local"
)

// BenchmarkSign compares signing an access-token input through the awskms
// backend (the real SDK over HTTP to the local-kms emulator on loopback,
// in this process) with the local backend, per algorithm, one goroutine.
// The KMS figure is a floor: a real KMS adds a network round trip of
// milliseconds.
func BenchmarkSign(b *testing.B) {
	e := kmstest.Start(b)
	input := []byte("eyJhbGciOiJFUzI1NiIsImtpZCI6ImsiLCJ0eXAiOiJhdCtqd3QifQ.eyJpc3MiOiJhdXRoLXBsYXRmb3JtIiwic3ViIjoidXNlci0xMjM0NTYifQ")
	for _, alg := range awskms.Algorithms {
		spec, _ := awskms.KeySpec(alg)
		ks, err := awskms.New(context.Background(), e.Client, e.CreateKey(b, spec), alg)
		if err != nil {
			b.Fatal(err)
		}
		ls, err := local.Generate(rand.Reader, alg)
		if err != nil {
			b.Fatal(err)
		}
		for name, s := range map[string]signing.Signer{"local": ls, "awskms": ks} {
			b.Run(string(alg)+"/"+name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := s.Sign(context.Background(), input); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
