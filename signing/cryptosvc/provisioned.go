package cryptosvc

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/auth-platform/tokenservice/signing"
)

// nameRE is crypto.v1's rule for a key name (see ParseKey).
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Provisioned is the keyring's backend for a signing key the operator
// provisioned in the crypto service (CRYPTO_SIGNING_KEY): it signs with
// versions of that key and never creates, rotates or destroys one. It
// calls GetPublicKey and Sign only.
//
// With Version 0 it follows the key's primary version: the keyring asks
// for it at every lifecycle step (every 10 s in tokend), so a version the
// operator adds (RotateKey) is staged at the next step, published for the
// pre-publication and then signs. With a Version it signs with that
// version; the operator moves it on by changing the setting.
type Provisioned struct {
	Client *Client
	// Key is the key's name in the client's namespace. Required.
	Key string
	// Version pins a version; 0 follows the primary version.
	Version uint32
}

// ParseKey parses CRYPTO_SIGNING_KEY, "name" or "name/version": a name
// of 1 to 128 of A-Z, a-z, 0-9, '.', '_' and '-', starting with a letter
// or digit, and a version from 1. It returns ErrConfig otherwise.
func ParseKey(s string) (name string, version uint32, err error) {
	name, v, pinned := strings.Cut(s, "/")
	if !nameRE.MatchString(name) {
		return "", 0, fmt.Errorf("%w: key name %q (want 1 to 128 of A-Z, a-z, 0-9, '.', '_' and '-', starting with a letter or digit)", ErrConfig, name)
	}
	if pinned {
		n, perr := strconv.ParseUint(v, 10, 32)
		if perr != nil || n == 0 {
			return "", 0, fmt.Errorf("%w: key version %q (want a number from 1)", ErrConfig, v)
		}
		version = uint32(n)
	}
	return name, version, nil
}

// Name implements keyring.Backend: the backend of every key that lives
// in the crypto service, managed or provisioned.
func (Provisioned) Name() string { return BackendName }

// Remote implements keyring.Backend.
func (Provisioned) Remote() bool { return true }

// Create returns signing.ErrProvisioned: the operator makes the keys.
func (p Provisioned) Create(context.Context, signing.Algorithm, string) (signing.StoredKey, error) {
	return signing.StoredKey{}, fmt.Errorf("%w: CRYPTO_SIGNING_KEY %s", signing.ErrProvisioned, p.Key)
}

// Provisioned implements keyring.Provisioner: the pinned version of the
// key, or the version the service holds primary now, for alg. The Ref
// names the version. It returns ErrKeyNotFound when the service has no
// such key or version, signing.ErrInvalidKey when the key does not fit
// alg.
func (p Provisioned) Provisioned(ctx context.Context, alg signing.Algorithm) (signing.StoredKey, error) {
	var s *Signer
	var err error
	if p.Version == 0 {
		s, err = p.Client.PrimarySigner(ctx, p.Key, alg)
	} else {
		s, err = p.Client.Signer(ctx, Ref{Namespace: p.Client.ns, Name: p.Key, Version: p.Version}, alg)
	}
	if err != nil {
		return signing.StoredKey{}, err
	}
	return signing.StoredKey{ID: s.KeyID(), Algorithm: alg, JWK: s.PublicJWK(), Ref: s.Ref().String()}, nil
}

// Open returns the signer of a key version the log recorded (provisioned
// or made by Backend: both are named by their Ref).
func (p Provisioned) Open(ctx context.Context, key signing.StoredKey) (signing.Signer, error) {
	return Backend{Client: p.Client}.Open(ctx, key)
}

// Discard returns signing.ErrProvisioned: tokend deletes no key in this
// mode (the keyring never asks it to).
func (p Provisioned) Discard(_ context.Context, key signing.StoredKey) error {
	return fmt.Errorf("%w: not deleting %s", signing.ErrProvisioned, key.Ref)
}
