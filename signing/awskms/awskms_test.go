package awskms_test

import (
	"context"
	"errors"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/awskms"
	"github.com/auth-platform/tokenservice/signing/awskms/kmstest"
	"github.com/auth-platform/tokenservice/signing/signingtest"
)

// TestContract runs the signing contract against the local-kms emulator.
func TestContract(t *testing.T) {
	e := kmstest.Start(t)
	signingtest.Run(t, awskms.Algorithms, func(t *testing.T, alg signing.Algorithm) (signing.Signer, signing.JWK) {
		spec, err := awskms.KeySpec(alg)
		if err != nil {
			t.Fatal(err)
		}
		s, err := awskms.New(context.Background(), e.Client, e.CreateKey(t, spec), alg)
		if err != nil {
			t.Fatal(err)
		}
		return s, s.PublicJWK()
	})
}

func TestRefusesMismatchedKey(t *testing.T) {
	e := kmstest.Start(t)
	ec := e.CreateKey(t, types.KeySpecEccNistP256)
	if _, err := awskms.New(context.Background(), e.Client, ec, signing.RS256); !errors.Is(err, signing.ErrInvalidKey) {
		t.Fatalf("EC key for RS256: %v", err)
	}
	if _, err := awskms.New(context.Background(), e.Client, ec, signing.EdDSA); !errors.Is(err, signing.ErrUnsupportedAlgorithm) {
		t.Fatalf("EdDSA: %v", err)
	}
	if _, err := awskms.New(context.Background(), e.Client, "no-such-key", signing.ES256); err == nil {
		t.Fatal("unknown key accepted")
	}
}
