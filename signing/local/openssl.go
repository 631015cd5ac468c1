package local

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync/atomic"
)

// Library describes the OpenSSL that LoadOpenSSL loaded.
type Library struct {
	Version string // the library's own version text
	FIPS    bool   // OpenSSL runs its FIPS provider
}

// ErrNoOpenSSL is returned by LoadOpenSSL where no usable OpenSSL
// libcrypto can be loaded (a build without cgo, or no libcrypto.so.3).
var ErrNoOpenSSL = errors.New("local: OpenSSL libcrypto not available")

// rsaByOpenSSL is set once LoadOpenSSL succeeded: RSA keys opened from
// then on sign with OpenSSL.
var rsaByOpenSSL atomic.Bool

// LoadOpenSSL loads the system's OpenSSL libcrypto (3.x, by dlopen) and
// makes it sign with every RSA key opened after it returns nil (RS256 and
// PS256): OpenSSL signs RSA-2048 about 2.4 × as fast as BoringCrypto on
// x86-64 (README "Builds"). ECDSA and EdDSA keys keep Go's crypto, which
// is as fast or faster. It is meant to be called once, at start, before
// any key is opened.
func LoadOpenSSL() (Library, error) {
	lib, err := loadOpenSSL()
	if err != nil {
		return Library{}, err
	}
	rsaByOpenSSL.Store(true)
	return lib, nil
}

// rsaSign signs a SHA-256 digest with an RSA key: PKCS #1 v1.5 (RS256) or
// PSS with a salt as long as the hash (PS256, as golang-jwt signs it).
type rsaSign func(digest []byte, pss bool) ([]byte, error)

// openRSA returns the OpenSSL signer of k once LoadOpenSSL succeeded, nil
// before (and for a multi-prime key, which tokend never makes). The key's
// first signatures are verified with Go's crypto before it is used, so a
// key OpenSSL did not take as given never signs a token.
func openRSA(k *rsa.PrivateKey) (rsaSign, error) {
	if !rsaByOpenSSL.Load() || len(k.Primes) != 2 {
		return nil, nil // Go's crypto signs (a multi-prime key too)
	}
	sign, err := opensslRSA(k)
	if err != nil {
		return nil, fmt.Errorf("%w: OpenSSL: %v", ErrNoOpenSSL, err)
	}
	digest := sha256.Sum256([]byte("tokenservice OpenSSL key check"))
	for _, pss := range []bool{false, true} {
		sig, err := sign(digest[:], pss)
		if err == nil {
			if pss {
				err = rsa.VerifyPSS(&k.PublicKey, crypto.SHA256, digest[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
			} else {
				err = rsa.VerifyPKCS1v15(&k.PublicKey, crypto.SHA256, digest[:], sig)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%w: OpenSSL key check (pss=%t): %v", ErrNoOpenSSL, pss, err)
		}
	}
	return sign, nil
}
