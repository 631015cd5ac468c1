package keyring_test

import (
	"crypto/rand"
	"testing"

	"github.com/auth-platform/tokenservice/issuer/issuertest"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/keyring"
	"github.com/auth-platform/tokenservice/signing/keyring/keyringtest"
	"github.com/auth-platform/tokenservice/signing/seal"
)

// TestLocalBackendContract runs the backend contract against the local
// backend: every instance seals with the same ENCRYPTION_KEY.
func TestLocalBackendContract(t *testing.T) {
	t.Parallel()
	keyringtest.Run(t, func(t *testing.T) keyring.Backend {
		sealer, err := seal.New(rand.Reader, issuertest.TestKey)
		if err != nil {
			t.Fatal(err)
		}
		return keyring.Local{Sealer: sealer, Rand: rand.Reader}
	}, keyringtest.Options{Algorithms: signing.Algorithms})
}
