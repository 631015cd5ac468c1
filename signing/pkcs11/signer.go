package pkcs11

import (
	"context"
	"crypto"
	"crypto/rsa"
	"fmt"

	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/breaker"
)

// Algorithms lists what this backend signs with.
var Algorithms = []signing.Algorithm{signing.RS256, signing.PS256, signing.ES256, signing.ES384}

// params are how an algorithm signs through PKCS#11: the digest, the
// crypto.SignerOpts crypto11 maps to a mechanism (CKM_RSA_PKCS,
// CKM_RSA_PKCS_PSS, CKM_ECDSA), and the size of R and S for ECDSA.
type params struct {
	hash crypto.Hash
	opts crypto.SignerOpts
	ec   int
}

func paramsOf(alg signing.Algorithm) (params, error) {
	switch alg {
	case signing.RS256:
		return params{hash: crypto.SHA256, opts: crypto.SHA256}, nil
	case signing.PS256:
		// RFC 7518 §3.5: MGF1 with SHA-256, a salt as long as the hash.
		return params{hash: crypto.SHA256, opts: &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthEqualsHash}}, nil
	case signing.ES256:
		return params{hash: crypto.SHA256, opts: crypto.SHA256, ec: 32}, nil
	case signing.ES384:
		return params{hash: crypto.SHA384, opts: crypto.SHA384, ec: 48}, nil
	}
	return params{}, fmt.Errorf("%w: %s with PKCS#11", signing.ErrUnsupportedAlgorithm, alg)
}

// Signer signs with one key pair on the token; the private key never
// leaves it. It is safe for concurrent use: each signature takes a
// session from the backend's pool.
type Signer struct {
	key crypto.Signer // a crypto11 key pair
	alg signing.Algorithm
	p   params
	jwk signing.JWK
	ref string
}

var _ breaker.Uncancellable = (*Signer)(nil)

// Uncancellable marks that a signature in progress cannot be stopped: a
// breaker in front of it (the keyring's, for a remote backend) signs on a
// goroutine of its own so that its timeout still bounds the caller's wait
// on a hung token.
func (*Signer) Uncancellable() {}

func newSigner(key crypto.Signer, alg signing.Algorithm, ref string) (*Signer, error) {
	p, err := paramsOf(alg)
	if err != nil {
		return nil, err
	}
	jwk, err := signing.PublicJWK(alg, key.Public())
	if err != nil {
		return nil, err
	}
	return &Signer{key: key, alg: alg, p: p, jwk: jwk, ref: ref}, nil
}

// KeyID returns the RFC 7638 thumbprint of the public key.
func (s *Signer) KeyID() string { return s.jwk.Kid }

// Algorithm returns the signer's algorithm.
func (s *Signer) Algorithm() signing.Algorithm { return s.alg }

// PublicJWK returns the public key as a JWK.
func (s *Signer) PublicJWK() signing.JWK { return s.jwk }

// Ref returns the key's reference on the token (its CKA_ID, hex).
func (s *Signer) Ref() string { return s.ref }

// Sign hashes signingInput and signs the digest on the token. PKCS#11
// calls cannot be interrupted, so ctx is checked only before the call; a
// caller that needs a bound on the wait puts the signer behind
// signing/breaker.
func (s *Signer) Sign(ctx context.Context, signingInput []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h := s.p.hash.New()
	h.Write(signingInput)
	sig, err := s.key.Sign(nil, h.Sum(nil), s.p.opts) // the token draws its own randomness
	if err != nil {
		return nil, fmt.Errorf("pkcs11: sign with key %s: %w", s.ref, err)
	}
	if s.p.ec > 0 {
		return signing.DERToJOSE(sig, s.p.ec)
	}
	return sig, nil
}
