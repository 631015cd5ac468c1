//go:build !cgo

package app

import (
	"context"
	"errors"

	"github.com/auth-platform/tokenservice/signing/keyring"
)

// startPKCS11 refuses: PKCS#11 modules are C libraries, loaded through
// cgo, and this tokend was built without it.
func (m *Main) startPKCS11(context.Context) (keyring.Backend, error) {
	return nil, errors.New("KMS_PROVIDER=pkcs11: this tokend was built with CGO_ENABLED=0; PKCS#11 needs a cgo build (see README, HSM and crypto service)")
}
