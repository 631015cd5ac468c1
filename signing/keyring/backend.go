package keyring

import (
	"context"
	"fmt"
	"io"

	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/local"
	"github.com/auth-platform/tokenservice/signing/seal"
)

// Backend creates signing keys and opens their signers. Every backend
// passes the contract suite in signing/keyring/keyringtest, which checks
// what this documentation promises.
type Backend interface {
	// Name is stored with each key ("local", "awskms").
	Name() string
	// Remote reports whether keys live outside the log. A remote key's
	// creation is recorded as an intent first, and Create must be
	// idempotent per intent: called again after a crash, it returns the
	// key it already made.
	Remote() bool
	// Create makes a key for alg.
	Create(ctx context.Context, alg signing.Algorithm, intent string) (signing.StoredKey, error)
	// Open returns the signer of a key this backend created.
	Open(ctx context.Context, key signing.StoredKey) (signing.Signer, error)
	// Discard deletes a key: one Create made that the log did not record
	// (a replica that lost the race to record its key), or a destroyed
	// one. It must be idempotent.
	Discard(ctx context.Context, key signing.StoredKey) error
}

// Provisioner is a Backend that signs with keys the operator provisions
// (KMS_KEY_ID, CRYPTO_SIGNING_KEY) rather than keys it creates. The
// keyring never calls its Create or Discard: at every lifecycle step it
// asks Provisioned for the key to sign with, adopts it (key.generated
// with provisioned set, no intent) when the log does not hold it yet, and
// never deletes a provisioned key's material. Create returns
// signing.ErrProvisioned.
type Provisioner interface {
	Backend
	// Provisioned returns the key the operator provisioned for alg: the
	// same key until the operator supplies the next one. Its Ref must
	// name that key for good (a version, a key ARN; never an alias that
	// can move), so that Open signs with it and no other.
	Provisioned(ctx context.Context, alg signing.Algorithm) (signing.StoredKey, error)
}

// Local is the backend of in-process keys sealed in the log.
type Local struct {
	Sealer *seal.Sealer
	Rand   io.Reader
}

var _ Backend = Local{}

// Name implements Backend.
func (Local) Name() string { return BackendLocal }

// Remote implements Backend: local keys live in the log.
func (Local) Remote() bool { return false }

// Create generates a key and seals it.
func (l Local) Create(_ context.Context, alg signing.Algorithm, _ string) (signing.StoredKey, error) {
	s, err := local.Generate(l.Rand, alg)
	if err != nil {
		return signing.StoredKey{}, err
	}
	der, err := s.Marshal()
	if err != nil {
		return signing.StoredKey{}, err
	}
	sealed, err := l.Sealer.Seal(der, []byte(s.KeyID()))
	if err != nil {
		return signing.StoredKey{}, err
	}
	return signing.StoredKey{ID: s.KeyID(), Algorithm: alg, JWK: s.PublicJWK(), Sealed: sealed}, nil
}

// Open unseals the key.
func (l Local) Open(_ context.Context, key signing.StoredKey) (signing.Signer, error) {
	der, err := l.Sealer.Open(key.Sealed, []byte(key.ID))
	if err != nil {
		return nil, fmt.Errorf("keyring: unseal key %s (is ENCRYPTION_KEY the one it was sealed with?): %w", key.ID, err)
	}
	s, err := local.Parse(key.Algorithm, der)
	if err != nil {
		return nil, fmt.Errorf("keyring: key %s: %w", key.ID, err)
	}
	if s.KeyID() != key.ID {
		return nil, fmt.Errorf("keyring: key %s: sealed key has ID %s", key.ID, s.KeyID())
	}
	return s, nil
}

// Discard does nothing: an unrecorded local key exists nowhere.
func (Local) Discard(context.Context, signing.StoredKey) error { return nil }
