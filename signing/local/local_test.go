package local_test

import (
	"crypto/rand"
	"testing"

	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/local"
	"github.com/auth-platform/tokenservice/signing/signingtest"
)

func TestContract(t *testing.T) {
	signingtest.Run(t, signing.Algorithms, func(t *testing.T, alg signing.Algorithm) (signing.Signer, signing.JWK) {
		s, err := local.Generate(rand.Reader, alg)
		if err != nil {
			t.Fatal(err)
		}
		return s, s.PublicJWK()
	})
}

// TestMarshalParse: a key sealed in the log comes back as the same key.
func TestMarshalParse(t *testing.T) {
	for _, alg := range signing.Algorithms {
		s, err := local.Generate(rand.Reader, alg)
		if err != nil {
			t.Fatal(err)
		}
		der, err := s.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		back, err := local.Parse(alg, der)
		if err != nil {
			t.Fatal(err)
		}
		if back.KeyID() != s.KeyID() {
			t.Fatalf("%s: key ID %s after parse, %s before", alg, back.KeyID(), s.KeyID())
		}
	}
	// A key of the wrong type for the algorithm is refused.
	ec, _ := local.Generate(rand.Reader, signing.ES256)
	der, _ := ec.Marshal()
	if _, err := local.Parse(signing.RS256, der); err == nil {
		t.Fatal("EC key accepted for RS256")
	}
}
