//go:build !cgo

package app

import (
	"context"
	"errors"

	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/keyring"
)

// pkcs11Algorithms returns nil: without cgo there is no PKCS#11 backend
// whose algorithms to check, and startPKCS11 refuses KMS_PROVIDER=pkcs11.
func pkcs11Algorithms() []signing.Algorithm { return nil }

// startPKCS11 refuses: PKCS#11 modules are C libraries, loaded through
// cgo, and this tokend was built without it.
func (m *Main) startPKCS11(context.Context) (keyring.Backend, error) {
	return nil, errors.New("KMS_PROVIDER=pkcs11: this tokend was built with CGO_ENABLED=0; PKCS#11 needs a cgo build (see README, HSM and crypto service)")
}
