//go:build !(linux && cgo)

package local

import "crypto/rsa"

func loadOpenSSL() (Library, error) { return Library{}, ErrNoOpenSSL }

func opensslRSA(*rsa.PrivateKey) (rsaSign, error) { return nil, ErrNoOpenSSL }
