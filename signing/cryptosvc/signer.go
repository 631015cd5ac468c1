package cryptosvc

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"

	"connectrpc.com/connect"

	cryptov1 "github.com/auth-platform/tokenservice/proto/crypto/v1"
	"github.com/auth-platform/tokenservice/signing"
)

// Algorithms lists what this backend signs with.
var Algorithms = []signing.Algorithm{signing.RS256, signing.PS256, signing.ES256, signing.ES384}

// params are how an algorithm signs through the service.
type params struct {
	alg  cryptov1.SigningAlgorithm
	hash crypto.Hash
	ec   int // size of R and S; 0 for RSA
}

func paramsOf(alg signing.Algorithm) (params, error) {
	switch alg {
	case signing.RS256:
		return params{cryptov1.SigningAlgorithm_SIGNING_ALGORITHM_RSA_PKCS1_SHA256, crypto.SHA256, 0}, nil
	case signing.PS256:
		return params{cryptov1.SigningAlgorithm_SIGNING_ALGORITHM_RSA_PSS_SHA256, crypto.SHA256, 0}, nil
	case signing.ES256:
		return params{cryptov1.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_P256_SHA256, crypto.SHA256, 32}, nil
	case signing.ES384:
		return params{cryptov1.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_P384_SHA384, crypto.SHA384, 48}, nil
	}
	return params{}, fmt.Errorf("%w: %s with a crypto service", signing.ErrUnsupportedAlgorithm, alg)
}

// Signer signs with one key version of the service. It is safe for
// concurrent use.
type Signer struct {
	c   *Client
	ref Ref
	alg signing.Algorithm
	p   params
	jwk signing.JWK
}

var _ signing.Signer = (*Signer)(nil)

// Signer returns the signer of the key version ref for alg. It fetches
// the public key (GetPublicKey, retried as Config.Backoff says), checks
// it fits alg, and derives the
// key ID (RFC 7638 thumbprint) from it. It returns ErrKeyNotFound when
// the service has no such key, signing.ErrInvalidKey when the key does
// not fit alg.
func (c *Client) Signer(ctx context.Context, ref Ref, alg signing.Algorithm) (*Signer, error) {
	if ref.Version == 0 {
		return nil, fmt.Errorf("%w: %s names no version", signing.ErrInvalidKey, ref)
	}
	return c.signer(ctx, ref, alg)
}

// PrimarySigner returns the signer of the version of key name (in the
// client's namespace) that the service holds primary now. The signer
// names that version (Ref) and keeps signing with it after the service's
// primary moved on: a signer never changes key. Errors are Signer's.
func (c *Client) PrimarySigner(ctx context.Context, name string, alg signing.Algorithm) (*Signer, error) {
	return c.signer(ctx, Ref{Namespace: c.ns, Name: name}, alg)
}

// signer fetches the public key of ref (version 0: the primary one, whose
// version the answer names).
func (c *Client) signer(ctx context.Context, ref Ref, alg signing.Algorithm) (*Signer, error) {
	p, err := paramsOf(alg)
	if err != nil {
		return nil, err
	}
	resp, err := signing.Retry(ctx, c.backoff, transient, func(ctx context.Context) (*connect.Response[cryptov1.GetPublicKeyResponse], error) {
		return c.api.GetPublicKey(ctx, connect.NewRequest(&cryptov1.GetPublicKeyRequest{Key: ref.proto()}))
	})
	if err != nil {
		return nil, callErr("public key of", ref, err)
	}
	if v := resp.Msg.GetKey().GetVersion(); ref.Version == 0 {
		if v == 0 {
			return nil, fmt.Errorf("%w: the service named no primary version of %s", signing.ErrInvalidKey, ref)
		}
		ref.Version = v
	} else if v != 0 && v != ref.Version {
		return nil, fmt.Errorf("%w: asked for %s, the service answered version %d", signing.ErrInvalidKey, ref, v)
	}
	pub, err := x509.ParsePKIXPublicKey(resp.Msg.GetPublicKey())
	if err != nil {
		return nil, fmt.Errorf("%w: key %s: %v", signing.ErrInvalidKey, ref, err)
	}
	jwk, err := signing.PublicJWK(alg, pub)
	if err != nil {
		return nil, err
	}
	return &Signer{c: c, ref: ref, alg: alg, p: p, jwk: jwk}, nil
}

// KeyID returns the RFC 7638 thumbprint of the public key.
func (s *Signer) KeyID() string { return s.jwk.Kid }

// Algorithm returns the signer's algorithm.
func (s *Signer) Algorithm() signing.Algorithm { return s.alg }

// PublicJWK returns the public key as a JWK.
func (s *Signer) PublicJWK() signing.JWK { return s.jwk }

// Ref returns the key version the signer signs with.
func (s *Signer) Ref() Ref { return s.ref }

// Sign hashes signingInput and has the service sign the digest.
func (s *Signer) Sign(ctx context.Context, signingInput []byte) ([]byte, error) {
	h := s.p.hash.New()
	h.Write(signingInput)
	resp, err := s.c.api.Sign(ctx, connect.NewRequest(&cryptov1.SignRequest{Key: s.ref.proto(), Algorithm: s.p.alg, Digest: h.Sum(nil)}))
	if err != nil {
		return nil, callErr("sign with", s.ref, err)
	}
	if s.p.ec > 0 {
		return signing.DERToJOSE(resp.Msg.GetSignature(), s.p.ec)
	}
	return resp.Msg.GetSignature(), nil
}
