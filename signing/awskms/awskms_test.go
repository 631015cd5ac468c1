package awskms_test

import (
	"context"
	"errors"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/awskms"
	"github.com/auth-platform/tokenservice/signing/awskms/kmstest"
	"github.com/auth-platform/tokenservice/signing/keyring"
	"github.com/auth-platform/tokenservice/signing/keyring/keyringtest"
)

// TestBackendContract runs the keyring's backend contract (and with it
// the signing contract for every algorithm) against the local-kms
// emulator.
func TestBackendContract(t *testing.T) {
	e := kmstest.Start(t)
	keyringtest.Run(t, func(*testing.T) keyring.Backend { return awskms.Backend{API: e.Client} }, keyringtest.Options{
		Algorithms: awskms.Algorithms,
		Keys: func(t *testing.T) int {
			out, err := e.Client.ListKeys(context.Background(), &kms.ListKeysInput{})
			if err != nil {
				t.Fatal(err)
			}
			return len(out.Keys)
		},
	})
}

// TestProvisionedContract runs the contract of a provisioned key
// (KMS_KEY_ID) against the local-kms emulator, addressed by key ID.
func TestProvisionedContract(t *testing.T) {
	e := kmstest.Start(t)
	specs := map[signing.Algorithm]types.KeySpec{signing.RS256: types.KeySpecRsa2048, signing.PS256: types.KeySpecRsa2048, signing.ES256: types.KeySpecEccNistP256}
	keyringtest.RunProvisioned(t, func(t *testing.T, alg signing.Algorithm) func(*testing.T) keyring.Provisioner {
		id := e.CreateKey(t, specs[alg])
		return func(*testing.T) keyring.Provisioner { return awskms.Provisioned{API: e.Client, KeyID: id} }
	}, keyringtest.ProvisionedOptions{Algorithms: awskms.Algorithms, Keys: func(t *testing.T) int {
		out, err := e.Client.ListKeys(context.Background(), &kms.ListKeysInput{})
		if err != nil {
			t.Fatal(err)
		}
		return len(out.Keys)
	}})
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
