package awskms

import (
	"context"
	"fmt"

	"github.com/auth-platform/tokenservice/signing"
)

// Provisioned is the keyring's backend for a KMS key the operator
// provisioned (KMS_KEY_ID): tokend signs with it and never creates, tags
// or deletes a key, so it needs kms:Sign and kms:GetPublicKey only. Its
// API is the narrow API interface: the calls it can make are those two.
//
// The keyring asks for the key at every lifecycle step (every 10 s in
// tokend): KeyID is resolved with GetPublicKey to the key's ARN, the key
// recorded in the log. A KeyID that now names another key (a new
// KMS_KEY_ID after a restart, or an alias the operator pointed at
// another key) is staged, published for the pre-publication and then
// signs; the old key is retired and stays in the JWKS for its retention.
type Provisioned struct {
	API API
	// KeyID is the key ID, ARN, alias name or alias ARN. Required.
	KeyID string
	// Backoff retries GetPublicKey (signing.Retry). Default
	// signing.Backoff's.
	Backoff signing.Backoff
}

// Name implements keyring.Backend: the backend of every key in KMS,
// created by tokend or provisioned.
func (Provisioned) Name() string { return BackendName }

// Remote implements keyring.Backend.
func (Provisioned) Remote() bool { return true }

// Create returns signing.ErrProvisioned: the operator makes the keys.
func (p Provisioned) Create(context.Context, signing.Algorithm, string) (signing.StoredKey, error) {
	return signing.StoredKey{}, fmt.Errorf("%w: KMS_KEY_ID %s", signing.ErrProvisioned, p.KeyID)
}

// Provisioned implements keyring.Provisioner: the key KeyID names now,
// for alg, with its ARN as the Ref. It returns signing.ErrInvalidKey for
// a key that is not a signing key of alg's type.
func (p Provisioned) Provisioned(ctx context.Context, alg signing.Algorithm) (signing.StoredKey, error) {
	s, err := NewWithBackoff(ctx, p.API, p.KeyID, alg, p.Backoff)
	if err != nil {
		return signing.StoredKey{}, err
	}
	return signing.StoredKey{ID: s.KeyID(), Algorithm: alg, JWK: s.PublicJWK(), Ref: s.KeyARN()}, nil
}

// Open returns the signer of a key the log recorded (provisioned or
// created by Backend).
func (p Provisioned) Open(ctx context.Context, key signing.StoredKey) (signing.Signer, error) {
	return NewWithBackoff(ctx, p.API, key.Ref, key.Algorithm, p.Backoff)
}

// Discard returns signing.ErrProvisioned: tokend deletes no key in this
// mode (the keyring never asks it to).
func (p Provisioned) Discard(_ context.Context, key signing.StoredKey) error {
	return fmt.Errorf("%w: not deleting %s", signing.ErrProvisioned, key.Ref)
}
