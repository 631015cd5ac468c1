package cryptosvc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"connectrpc.com/connect"

	cryptov1 "github.com/auth-platform/tokenservice/proto/crypto/v1"
	"github.com/auth-platform/tokenservice/signing"
)

// BackendName names this backend in key events.
const BackendName = "cryptosvc"

// Backend makes signing keys in the crypto service for the keyring.
// Creation is idempotent per intent: the key is named after the intent
// (KeyName), and CreateKey returns the existing key of a name, so a
// creation retried after a crash finds the key the crashed attempt made.
type Backend struct {
	Client *Client
	// RSABits is the modulus size of RS256 and PS256 keys: 2048 or 3072.
	// Default 2048.
	RSABits int
}

// Name implements keyring.Backend.
func (Backend) Name() string { return BackendName }

// Remote implements keyring.Backend.
func (Backend) Remote() bool { return true }

// KeyName returns the name of the key made for intent.
func KeyName(intent string) string { return "signing-" + intent }

func (b Backend) spec(alg signing.Algorithm) (cryptov1.KeySpec, error) {
	switch alg {
	case signing.RS256, signing.PS256:
		switch b.RSABits {
		case 0, 2048:
			return cryptov1.KeySpec_KEY_SPEC_RSA_2048, nil
		case 3072:
			return cryptov1.KeySpec_KEY_SPEC_RSA_3072, nil
		}
		return 0, fmt.Errorf("%w: RSA keys of %d bits (want 2048 or 3072)", ErrConfig, b.RSABits)
	case signing.ES256:
		return cryptov1.KeySpec_KEY_SPEC_EC_P256, nil
	case signing.ES384:
		return cryptov1.KeySpec_KEY_SPEC_EC_P384, nil
	}
	return 0, fmt.Errorf("%w: %s with a crypto service", signing.ErrUnsupportedAlgorithm, alg)
}

// Create returns the key made for intent, making it if there is none.
// An empty intent makes a key of a random name.
func (b Backend) Create(ctx context.Context, alg signing.Algorithm, intent string) (signing.StoredKey, error) {
	spec, err := b.spec(alg)
	if err != nil {
		return signing.StoredKey{}, err
	}
	if intent == "" {
		var r [16]byte
		if _, err := rand.Read(r[:]); err != nil {
			return signing.StoredKey{}, err
		}
		intent = hex.EncodeToString(r[:])
	}
	ref := Ref{Namespace: b.Client.ns, Name: KeyName(intent)}
	// CreateKey is idempotent per name: a retry returns the key an
	// attempt whose answer was lost made.
	resp, err := signing.Retry(ctx, b.Client.backoff, transient, func(ctx context.Context) (*connect.Response[cryptov1.CreateKeyResponse], error) {
		return b.Client.api.CreateKey(ctx, connect.NewRequest(&cryptov1.CreateKeyRequest{Namespace: ref.Namespace, Name: ref.Name, Spec: spec}))
	})
	if err != nil {
		return signing.StoredKey{}, callErr("create key", ref, err)
	}
	ref.Version = resp.Msg.GetKey().GetVersion()
	s, err := b.Client.Signer(ctx, ref, alg)
	if err != nil {
		return signing.StoredKey{}, err
	}
	return signing.StoredKey{ID: s.KeyID(), Algorithm: alg, JWK: s.PublicJWK(), Ref: ref.String()}, nil
}

// Open returns the signer of key. It returns signing.ErrInvalidKey when
// the service's key is not the one the log recorded.
func (b Backend) Open(ctx context.Context, key signing.StoredKey) (signing.Signer, error) {
	ref, err := ParseRef(key.Ref)
	if err != nil {
		return nil, err
	}
	s, err := b.Client.Signer(ctx, ref, key.Algorithm)
	if err != nil {
		return nil, err
	}
	if s.KeyID() != key.ID {
		return nil, fmt.Errorf("%w: key %s: the service's key %s has ID %s", signing.ErrInvalidKey, key.ID, ref, s.KeyID())
	}
	return s, nil
}

// Discard destroys the key in the service: one the log did not record,
// or one the lifecycle destroyed. Calling it again is harmless.
func (b Backend) Discard(ctx context.Context, key signing.StoredKey) error {
	ref, err := ParseRef(key.Ref)
	if err != nil {
		return err
	}
	_, err = b.Client.api.DestroyKey(ctx, connect.NewRequest(&cryptov1.DestroyKeyRequest{Namespace: ref.Namespace, Name: ref.Name}))
	if err != nil {
		return callErr("destroy key", ref, err)
	}
	return nil
}
