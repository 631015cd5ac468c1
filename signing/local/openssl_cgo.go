//go:build linux && cgo

package local

import (
	"crypto"
	"crypto/rsa"
	"math/big"

	"github.com/golang-fips/openssl/v2"
	"github.com/golang-fips/openssl/v2/bbig"
)

// libcryptoName is the OpenSSL 3 library of Debian, Ubuntu, RHEL and the
// distroless base image.
const libcryptoName = "libcrypto.so.3"

func loadOpenSSL() (Library, error) {
	if ok, _ := openssl.CheckVersion(libcryptoName); !ok {
		return Library{}, ErrNoOpenSSL
	}
	if err := openssl.Init(libcryptoName); err != nil {
		return Library{}, err
	}
	return Library{Version: openssl.VersionText(), FIPS: openssl.FIPS()}, nil
}

func opensslRSA(k *rsa.PrivateKey) (rsaSign, error) {
	priv, err := openssl.NewPrivateKeyRSA(bbig.Enc(k.N), bbig.Enc(big.NewInt(int64(k.E))), bbig.Enc(k.D),
		bbig.Enc(k.Primes[0]), bbig.Enc(k.Primes[1]),
		bbig.Enc(k.Precomputed.Dp), bbig.Enc(k.Precomputed.Dq), bbig.Enc(k.Precomputed.Qinv))
	if err != nil {
		return nil, err
	}
	return func(digest []byte, pss bool) ([]byte, error) {
		if pss {
			return openssl.SignRSAPSS(priv, crypto.SHA256, digest, crypto.SHA256.Size())
		}
		return openssl.SignRSAPKCS1v15(priv, crypto.SHA256, digest)
	}, nil
}
