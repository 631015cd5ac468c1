// Package awskms is the signing backend whose keys live in AWS KMS: the
// private key never leaves KMS; Sign sends the SHA-256 digest of the JWS
// signing input (MessageType DIGEST) and converts the answer to the JOSE
// form. RS256 uses RSASSA_PKCS1_V1_5_SHA_256, PS256 RSASSA_PSS_SHA_256 and
// ES256 ECDSA_SHA_256, whose DER signature (RFC 3279 Ecdsa-Sig-Value) is
// converted to R||S as RFC 7518 §3.4 requires.
//
// Backend creates and deletes its keys (managed mode); Provisioned signs
// with the key of KMS_KEY_ID and calls only Sign and GetPublicKey (its API
// has no other method).
//
// GetPublicKey and the creation of a key by intent are retried on
// transient errors (throttling, a 5xx, no answer) with signing.Retry,
// within the caller's deadline (or Backoff.Timeout); Sign is not: the
// breaker and the fallback key own signing failures. A client built for
// this package should have the SDK's own retries off (aws.NopRetryer, or
// RetryMaxAttempts 1), as tokend's has, so that this is the one retry
// rule and every attempt is one request.
//
// The SDK is used through API, the narrow interface of the calls this
// package makes, so tests run it against the local-kms emulator and the
// resilience wrapper (breaker, limiter) can sit in front of it. The client
// option WithObserver reports every call the client makes, whichever
// interface it went through (token_service_kms_operations_total).
package awskms

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/auth-platform/tokenservice/signing"
)

// API is the part of the KMS client this package calls.
type API interface {
	Sign(ctx context.Context, in *kms.SignInput, opts ...func(*kms.Options)) (*kms.SignOutput, error)
	GetPublicKey(ctx context.Context, in *kms.GetPublicKeyInput, opts ...func(*kms.Options)) (*kms.GetPublicKeyOutput, error)
}

var _ API = (*kms.Client)(nil)

// Algorithms lists what this backend signs with.
var Algorithms = []signing.Algorithm{signing.RS256, signing.PS256, signing.ES256}

// KeySpec returns the KMS key spec for alg (RSA keys are 2048-bit).
func KeySpec(alg signing.Algorithm) (types.KeySpec, error) {
	switch alg {
	case signing.RS256, signing.PS256:
		return types.KeySpecRsa2048, nil
	case signing.ES256:
		return types.KeySpecEccNistP256, nil
	}
	return "", fmt.Errorf("%w: %s with AWS KMS", signing.ErrUnsupportedAlgorithm, alg)
}

func kmsAlgorithm(alg signing.Algorithm) (types.SigningAlgorithmSpec, error) {
	switch alg {
	case signing.RS256:
		return types.SigningAlgorithmSpecRsassaPkcs1V15Sha256, nil
	case signing.PS256:
		return types.SigningAlgorithmSpecRsassaPssSha256, nil
	case signing.ES256:
		return types.SigningAlgorithmSpecEcdsaSha256, nil
	}
	return "", fmt.Errorf("%w: %s with AWS KMS", signing.ErrUnsupportedAlgorithm, alg)
}

// Signer signs with one KMS key. It is safe for concurrent use.
type Signer struct {
	api   API
	keyID string
	arn   string // the key ARN GetPublicKey named
	alg   signing.Algorithm
	spec  types.SigningAlgorithmSpec
	jwk   signing.JWK
}

var _ signing.Signer = (*Signer)(nil)

// New returns a signer for the KMS key keyID (ID, ARN or alias) with alg.
// It fetches the public key, checks it fits alg, and derives the key ID
// (RFC 7638 thumbprint) from it. GetPublicKey is retried with the
// default signing.Backoff; NewWithBackoff takes another.
func New(ctx context.Context, api API, keyID string, alg signing.Algorithm) (*Signer, error) {
	return NewWithBackoff(ctx, api, keyID, alg, signing.Backoff{})
}

// NewWithBackoff is New with GetPublicKey retried by signing.Retry with
// b when it fails with a transient error (throttling, a 5xx, no answer).
func NewWithBackoff(ctx context.Context, api API, keyID string, alg signing.Algorithm, b signing.Backoff) (*Signer, error) {
	spec, err := kmsAlgorithm(alg)
	if err != nil {
		return nil, err
	}
	out, err := signing.Retry(ctx, b, transient, func(ctx context.Context) (*kms.GetPublicKeyOutput, error) {
		return api.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: aws.String(keyID)})
	})
	if err != nil {
		return nil, fmt.Errorf("awskms: public key of %s: %w", keyID, err)
	}
	if out.KeyUsage != types.KeyUsageTypeSignVerify {
		return nil, fmt.Errorf("%w: KMS key %s is not for signing", signing.ErrInvalidKey, keyID)
	}
	pub, err := x509.ParsePKIXPublicKey(out.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("%w: KMS key %s: %v", signing.ErrInvalidKey, keyID, err)
	}
	jwk, err := signing.PublicJWK(alg, pub)
	if err != nil {
		return nil, err
	}
	arn := aws.ToString(out.KeyId)
	if arn == "" {
		arn = keyID
	}
	return &Signer{api: api, keyID: keyID, arn: arn, alg: alg, spec: spec, jwk: jwk}, nil
}

// KeyARN returns the ARN of the KMS key, as GetPublicKey named it: the key
// an alias pointed to when the signer was made.
func (s *Signer) KeyARN() string { return s.arn }

// KeyID returns the RFC 7638 thumbprint of the public key.
func (s *Signer) KeyID() string { return s.jwk.Kid }

// Algorithm returns the signer's algorithm.
func (s *Signer) Algorithm() signing.Algorithm { return s.alg }

// PublicJWK returns the public key as a JWK.
func (s *Signer) PublicJWK() signing.JWK { return s.jwk }

// Sign signs the SHA-256 digest of signingInput in KMS.
func (s *Signer) Sign(ctx context.Context, signingInput []byte) ([]byte, error) {
	digest := sha256.Sum256(signingInput)
	out, err := s.api.Sign(ctx, &kms.SignInput{
		KeyId: aws.String(s.keyID), Message: digest[:], MessageType: types.MessageTypeDigest, SigningAlgorithm: s.spec,
	})
	if err != nil {
		return nil, fmt.Errorf("awskms: sign with %s: %w", s.keyID, err)
	}
	if s.alg == signing.ES256 {
		return signing.DERToJOSE(out.Signature, 32)
	}
	return out.Signature, nil
}
