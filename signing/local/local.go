// Package local is the signing backend whose private keys live in the
// process. A key is generated here, stored in the event log only sealed
// (package seal, AES-256-GCM under ENCRYPTION_KEY), and unsealed by every
// replica that signs with it.
package local

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"io"

	"github.com/golang-jwt/jwt/v5"

	"github.com/auth-platform/tokenservice/signing"
)

// RSABits is the modulus size of generated RSA keys.
const RSABits = 2048

// Signer signs with a private key held in memory. It is safe for
// concurrent use.
type Signer struct {
	alg    signing.Algorithm
	method jwt.SigningMethod
	priv   crypto.Signer
	jwk    signing.JWK
	rsa    rsaSign // OpenSSL signs this RSA key (LoadOpenSSL); nil: golang-jwt with Go's crypto
}

var _ signing.Signer = (*Signer)(nil)

// Generate creates a new key for alg with randomness from rand.
func Generate(rand io.Reader, alg signing.Algorithm) (*Signer, error) {
	var priv crypto.Signer
	var err error
	switch alg {
	case signing.RS256, signing.PS256:
		priv, err = rsa.GenerateKey(rand, RSABits)
	case signing.ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand)
	case signing.ES384:
		priv, err = ecdsa.GenerateKey(elliptic.P384(), rand)
	case signing.EdDSA:
		_, priv, err = ed25519.GenerateKey(rand)
	default:
		return nil, fmt.Errorf("%w: %q", signing.ErrUnsupportedAlgorithm, alg)
	}
	if err != nil {
		return nil, fmt.Errorf("local: generate %s key: %w", alg, err)
	}
	return New(alg, priv)
}

// New returns a Signer for an existing private key.
func New(alg signing.Algorithm, priv crypto.Signer) (*Signer, error) {
	m, err := signing.Method(alg)
	if err != nil {
		return nil, err
	}
	jwk, err := signing.PublicJWK(alg, priv.Public())
	if err != nil {
		return nil, err
	}
	// golang-jwt wants the concrete key types (ed25519 by value).
	if k, ok := priv.(*ed25519.PrivateKey); ok {
		priv = *k
	}
	s := &Signer{alg: alg, method: m, priv: priv, jwk: jwk}
	if k, ok := priv.(*rsa.PrivateKey); ok {
		if s.rsa, err = openRSA(k); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Parse returns a Signer for a PKCS#8 DER private key.
func Parse(alg signing.Algorithm, pkcs8 []byte) (*Signer, error) {
	k, err := x509.ParsePKCS8PrivateKey(pkcs8)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", signing.ErrInvalidKey, err)
	}
	priv, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: %T", signing.ErrInvalidKey, k)
	}
	return New(alg, priv)
}

// Marshal returns the private key as PKCS#8 DER. Seal it before it leaves
// the process.
func (s *Signer) Marshal() ([]byte, error) { return x509.MarshalPKCS8PrivateKey(s.priv) }

// KeyID returns the RFC 7638 thumbprint of the public key.
func (s *Signer) KeyID() string { return s.jwk.Kid }

// Algorithm returns the signer's algorithm.
func (s *Signer) Algorithm() signing.Algorithm { return s.alg }

// PublicJWK returns the public key as a JWK.
func (s *Signer) PublicJWK() signing.JWK { return s.jwk }

// Sign signs signingInput. It does no I/O and ignores ctx.
func (s *Signer) Sign(_ context.Context, signingInput []byte) ([]byte, error) {
	if s.rsa != nil {
		digest := sha256.Sum256(signingInput)
		return s.rsa(digest[:], s.alg == signing.PS256)
	}
	return s.method.Sign(string(signingInput), s.priv)
}
