package pkcs11

import (
	"context"
	"crypto"
	"crypto/cipher"
	"encoding/hex"
	"fmt"
	"io"
	"slices"

	"github.com/ThalesGroup/crypto11"
	p11 "github.com/miekg/pkcs11"

	"github.com/auth-platform/tokenservice/signing"
)

// KeyType is a type of key Generate makes on the token: the key store a
// crypto service (cmd/cryptod) keeps there, beside the keyring's signing
// keys.
type KeyType int

// The key types.
const (
	RSA2048 KeyType = iota + 1
	RSA3072
	ECP256
	ECP384
	AES256 // AES-256 for AES-GCM (CKM_AES_GCM) inside the token
)

// String names t.
func (t KeyType) String() string {
	switch t {
	case RSA2048:
		return "RSA-2048"
	case RSA3072:
		return "RSA-3072"
	case ECP256:
		return "EC-P256"
	case ECP384:
		return "EC-P384"
	case AES256:
		return "AES-256"
	}
	return fmt.Sprintf("KeyType(%d)", int(t))
}

// Generate returns the key labelled with the label prefix followed by
// label, generating it as a key of type t if there is none; created
// reports which. Like Create it is idempotent per label, and the key's
// Ref (its random CKA_ID, in hex) is what Signer and AEAD open. Private
// and secret keys are sensitive and not extractable; signing keys only
// sign, AES keys only encrypt and decrypt. It does not check that an
// existing key is of type t: the caller names keys so that it knows.
func (b *Backend) Generate(ctx context.Context, t KeyType, label string) (ref string, created bool, err error) {
	if label == "" {
		return "", false, fmt.Errorf("%w: empty key label", ErrConfig)
	}
	b.create.Lock()
	defer b.create.Unlock()
	if ref, found, err := b.Find(ctx, label); err != nil || found {
		return ref, false, err
	}
	id := make([]byte, 16)
	if _, err := io.ReadFull(b.rand(), id); err != nil {
		return "", false, fmt.Errorf("pkcs11: CKA_ID: %w", err)
	}
	full := b.label(label)
	switch t {
	case AES256:
		err = b.generateSecret(id, full)
	case RSA2048, RSA3072, ECP256, ECP384:
		err = b.generatePair(t, id, full)
	default:
		return "", false, fmt.Errorf("%w: key type %d", ErrConfig, int(t))
	}
	if err != nil {
		return "", false, fmt.Errorf("pkcs11: generate %s key %q: %w", t, label, err)
	}
	return hex.EncodeToString(id), true, nil
}

func (b *Backend) generatePair(t KeyType, id []byte, label string) error {
	var alg signing.Algorithm
	bits := 0
	switch t {
	case RSA2048, RSA3072:
		alg, bits = signing.RS256, 2048
		if t == RSA3072 {
			bits = 3072
		}
	case ECP256:
		alg = signing.ES256
	case ECP384:
		alg = signing.ES384
	}
	_, err := b.generateBits(alg, id, label, bits)
	return err
}

func (b *Backend) generateSecret(id []byte, label string) error {
	tmpl, err := crypto11.NewAttributeSetWithIDAndLabel(id, []byte(label))
	if err != nil {
		return err
	}
	if err := tmpl.Set(crypto11.CkaPrivate, true); err != nil {
		return err
	}
	_, err = b.c11.GenerateSecretKeyWithAttributes(tmpl, 256, crypto11.CipherAES)
	return err
}

// Find returns the Ref of the key labelled with the label prefix followed
// by label: a complete pair or a secret key. Of several (two processes
// generated one label's key at once), it returns the least, as Create
// does.
func (b *Backend) Find(ctx context.Context, label string) (string, bool, error) {
	objs, err := b.tok.find(ctx, []*p11.Attribute{p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_LABEL, b.label(label))})
	if err != nil {
		return "", false, err
	}
	var refs []string
	for _, k := range group(objs) {
		if (k.Private && k.Public) || k.Secret {
			refs = append(refs, k.Ref)
		}
	}
	if len(refs) == 0 {
		return "", false, nil
	}
	return slices.Min(refs), true, nil
}

// Signer returns the signer of the pair ref for alg. It returns
// ErrKeyNotFound when the token has no such pair, and
// signing.ErrInvalidKey when the pair does not fit alg.
func (b *Backend) Signer(ctx context.Context, ref string, alg signing.Algorithm) (*Signer, error) {
	return b.signer(ctx, ref, alg)
}

// Destroy deletes the objects of key ref (those with its CKA_ID and a
// label with the prefix), private halves first. Objects already gone are
// deleted; calling it again is harmless.
func (b *Backend) Destroy(ctx context.Context, ref string) error {
	return b.Discard(ctx, signing.StoredKey{Ref: ref})
}

// AEAD encrypts and decrypts with an AES key on the token (CKM_AES_GCM,
// 12-byte nonces, 16-byte tags); the key never leaves it. It is safe for
// concurrent use.
type AEAD struct {
	gcm cipher.AEAD
	ref string
}

// NonceSize is the size of the nonces Seal and Open take.
const NonceSize = 12

// AEAD returns the AES-GCM of the secret key ref. It returns
// ErrKeyNotFound when the token has no such key.
func (b *Backend) AEAD(ctx context.Context, ref string) (*AEAD, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	id, err := parseRef(ref)
	if err != nil {
		return nil, err
	}
	keys, err := b.c11.FindKeys(id, nil)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: find secret key %s: %w", ref, err)
	}
	switch len(keys) {
	case 0:
		return nil, fmt.Errorf("%w: secret key CKA_ID %s", ErrKeyNotFound, ref)
	case 1:
	default:
		return nil, fmt.Errorf("%w: %d secret keys have CKA_ID %s", signing.ErrInvalidKey, len(keys), ref)
	}
	gcm, err := keys[0].NewGCM()
	if err != nil {
		return nil, fmt.Errorf("%w: secret key %s: %v", signing.ErrInvalidKey, ref, err)
	}
	return &AEAD{gcm: gcm, ref: ref}, nil
}

// Seal encrypts plaintext with nonce (NonceSize bytes, never reused with
// this key) and authenticates aad; it returns the ciphertext and tag.
func (a *AEAD) Seal(ctx context.Context, nonce, plaintext, aad []byte) (out []byte, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(nonce) != NonceSize {
		return nil, fmt.Errorf("pkcs11: nonce of %d bytes, want %d", len(nonce), NonceSize)
	}
	// crypto11's cipher.AEAD panics when the token fails (Seal has no
	// error to return it in).
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("pkcs11: encrypt with key %s: %v", a.ref, r)
		}
	}()
	return a.gcm.Seal(nil, nonce, plaintext, aad), nil
}

// Open decrypts and authenticates what Seal returned. It returns
// ErrDecrypt, and nothing more, when that fails.
func (a *AEAD) Open(ctx context.Context, nonce, ciphertext, aad []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(nonce) != NonceSize {
		return nil, ErrDecrypt
	}
	pt, err := a.gcm.Open(nil, nonce, ciphertext, aad)
	if err != nil {
		// Tokens report a failed tag check in different ways (SoftHSM2:
		// CKR_GENERAL_ERROR); none says more that a caller could use.
		return nil, ErrDecrypt
	}
	return pt, nil
}

// SignDigest signs digest, the hash of a message with the algorithm's
// hash, on the token, and returns the signature as crypto.Signer does:
// the DER Ecdsa-Sig-Value for ECDSA (Sign returns the JOSE form). ctx is
// checked only before the call.
func (s *Signer) SignDigest(ctx context.Context, digest []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(digest) != s.p.hash.Size() {
		return nil, fmt.Errorf("pkcs11: digest of %d bytes for %s", len(digest), s.alg)
	}
	sig, err := s.key.Sign(nil, digest, s.p.opts)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: sign with key %s: %w", s.ref, err)
	}
	return sig, nil
}

// Public returns the public key.
func (s *Signer) Public() crypto.PublicKey { return s.key.Public() }
