package pkcs11

import (
	"context"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/ThalesGroup/crypto11"
	p11 "github.com/miekg/pkcs11"

	"github.com/auth-platform/tokenservice/signing"
)

// BackendName names this backend in key events.
const BackendName = "pkcs11"

// Backend makes signing keys on one token and opens their signers: the
// keyring's backend for keys in an HSM. Create is idempotent per intent
// (see the package documentation). It is safe for concurrent use; Close
// it when done.
type Backend struct {
	cfg Config
	c11 *crypto11.Context
	tok *token

	create    sync.Mutex // one key per intent within the process
	closeOnce sync.Once
}

// New opens the token cfg selects and logs in. It returns ErrConfig for
// an incomplete cfg, ErrPINIncorrect or ErrPINLocked when the token
// refuses the PIN, and otherwise an error naming the module and the
// token. The PIN appears in no error.
func New(ctx context.Context, cfg Config) (*Backend, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c11, err := crypto11.Configure(&crypto11.Config{
		Path: cfg.Module, TokenLabel: cfg.TokenLabel, Pin: cfg.PIN,
		MaxSessions: cfg.MaxSessions, PoolWaitTimeout: cfg.SessionWait,
		GCMIVLength: NonceSize, // AEAD: the 96-bit nonces of NIST SP 800-38D §8.2
	})
	switch {
	case isCKR(err, p11.CKR_PIN_INCORRECT):
		return nil, fmt.Errorf("%w: token %q (module %s)", ErrPINIncorrect, cfg.TokenLabel, cfg.Module)
	case isCKR(err, p11.CKR_PIN_LOCKED):
		return nil, fmt.Errorf("%w: token %q (module %s)", ErrPINLocked, cfg.TokenLabel, cfg.Module)
	case err != nil:
		return nil, fmt.Errorf("pkcs11: open token %q with module %s: %w", cfg.TokenLabel, cfg.Module, err)
	}
	tok, err := openToken(cfg.Module, cfg.TokenLabel, cfg.PIN)
	if err != nil {
		_ = c11.Close() // the error that matters is tok's
		return nil, err
	}
	return &Backend{cfg: cfg, c11: c11, tok: tok}, nil
}

// Close logs out and releases the module. It waits for signatures in
// progress; signers of b fail afterwards. Calling it again does nothing.
func (b *Backend) Close() error {
	var err error
	b.closeOnce.Do(func() {
		b.tok.close()
		err = b.c11.Close()
	})
	return err
}

// Name implements keyring.Backend.
func (*Backend) Name() string { return BackendName }

// Remote implements keyring.Backend: keys live on the token.
func (*Backend) Remote() bool { return true }

// label returns the CKA_LABEL of the key objects made for intent.
func (b *Backend) label(intent string) string { return b.cfg.LabelPrefix + intent }

// Create returns the key pair made for intent, generating it on the
// token if there is none. The pair is generated with CKA_LABEL the label
// prefix followed by the intent and a random 16-byte CKA_ID (its Ref, in
// hex), so a Create retried after a crash finds it. RS256 and PS256 keys are RSA of
// Config.RSABits, ES256 P-256, ES384 P-384; private halves are sensitive,
// not extractable, and sign only. An empty intent always generates.
func (b *Backend) Create(ctx context.Context, alg signing.Algorithm, intent string) (signing.StoredKey, error) {
	if _, err := paramsOf(alg); err != nil {
		return signing.StoredKey{}, err
	}
	b.create.Lock()
	defer b.create.Unlock()
	label := b.label(intent)
	if intent != "" {
		ref, found, err := b.findIntent(ctx, label)
		if err != nil {
			return signing.StoredKey{}, err
		}
		if found {
			s, err := b.signer(ctx, ref, alg)
			if err != nil {
				return signing.StoredKey{}, fmt.Errorf("pkcs11: key %s of intent %s: %w", ref, intent, err)
			}
			return stored(s), nil
		}
	}
	id := make([]byte, 16)
	if _, err := io.ReadFull(b.rand(), id); err != nil {
		return signing.StoredKey{}, fmt.Errorf("pkcs11: CKA_ID: %w", err)
	}
	key, err := b.generateBits(alg, id, label, b.cfg.RSABits)
	if err != nil {
		return signing.StoredKey{}, fmt.Errorf("pkcs11: generate %s key for intent %q: %w", alg, intent, err)
	}
	s, err := newSigner(key, alg, hex.EncodeToString(id))
	if err != nil {
		return signing.StoredKey{}, err
	}
	return stored(s), nil
}

func (b *Backend) rand() io.Reader {
	if b.cfg.Rand != nil {
		return b.cfg.Rand
	}
	return rand.Reader
}

func stored(s *Signer) signing.StoredKey {
	return signing.StoredKey{ID: s.KeyID(), Algorithm: s.alg, JWK: s.jwk, Ref: s.ref}
}

// findIntent returns the Ref of the complete key pair labelled label; of
// several (two replicas created one intent's key at once), the least, so
// that every replica picks the same one.
func (b *Backend) findIntent(ctx context.Context, label string) (string, bool, error) {
	objs, err := b.tok.find(ctx, []*p11.Attribute{p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_LABEL, label)})
	if err != nil {
		return "", false, err
	}
	var refs []string
	for _, k := range group(objs) {
		if k.Private && k.Public {
			refs = append(refs, k.Ref)
		}
	}
	if len(refs) == 0 {
		return "", false, nil
	}
	return slices.Min(refs), true, nil
}

// generateBits generates a pair for alg; RSA keys have bits bits.
func (b *Backend) generateBits(alg signing.Algorithm, id []byte, label string, bits int) (crypto11.Signer, error) {
	public, err := crypto11.NewAttributeSetWithIDAndLabel(id, []byte(label))
	if err != nil {
		return nil, err
	}
	private := public.Copy()
	for _, a := range []struct {
		set crypto11.AttributeSet
		typ crypto11.AttributeType
		v   bool
	}{
		{private, crypto11.CkaPrivate, true},
		{private, crypto11.CkaSensitive, true},
		{private, crypto11.CkaExtractable, false},
		{private, crypto11.CkaSign, true},
	} {
		if err := a.set.Set(a.typ, a.v); err != nil {
			return nil, err
		}
	}
	switch alg {
	case signing.RS256, signing.PS256:
		// Signing keys only: crypto11 would allow encryption by default.
		if err := public.Set(crypto11.CkaEncrypt, false); err != nil {
			return nil, err
		}
		if err := private.Set(crypto11.CkaDecrypt, false); err != nil {
			return nil, err
		}
		return b.c11.GenerateRSAKeyPairWithAttributes(public, private, bits)
	case signing.ES256:
		return b.c11.GenerateECDSAKeyPairWithAttributes(public, private, elliptic.P256())
	case signing.ES384:
		return b.c11.GenerateECDSAKeyPairWithAttributes(public, private, elliptic.P384())
	}
	return nil, fmt.Errorf("%w: %s with PKCS#11", signing.ErrUnsupportedAlgorithm, alg)
}

// Open returns the signer of key. It returns ErrKeyNotFound when the
// token has no pair with the key's CKA_ID, and signing.ErrInvalidKey when
// the pair it has is not the key the log recorded.
func (b *Backend) Open(ctx context.Context, key signing.StoredKey) (signing.Signer, error) {
	s, err := b.signer(ctx, key.Ref, key.Algorithm)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: key %s: %w", key.ID, err)
	}
	if s.KeyID() != key.ID {
		return nil, fmt.Errorf("%w: key %s: the token's object %s holds key %s", signing.ErrInvalidKey, key.ID, key.Ref, s.KeyID())
	}
	return s, nil
}

func (b *Backend) signer(ctx context.Context, ref string, alg signing.Algorithm) (*Signer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	id, err := parseRef(ref)
	if err != nil {
		return nil, err
	}
	keys, err := b.c11.FindKeyPairs(id, nil)
	if err != nil {
		return nil, fmt.Errorf("find key pair %s: %w", ref, err)
	}
	switch len(keys) {
	case 0:
		return nil, fmt.Errorf("%w: CKA_ID %s", ErrKeyNotFound, ref)
	case 1:
	default:
		return nil, fmt.Errorf("%w: %d key pairs have CKA_ID %s", signing.ErrInvalidKey, len(keys), ref)
	}
	return newSigner(keys[0], alg, ref)
}

func parseRef(ref string) ([]byte, error) {
	id, err := hex.DecodeString(ref)
	if err != nil || len(id) == 0 {
		return nil, fmt.Errorf("%w: PKCS#11 reference %q", signing.ErrInvalidKey, ref)
	}
	return id, nil
}

// Discard deletes the key's objects from the token: those with its
// CKA_ID and a label this backend makes. Objects already gone are
// deleted; calling it again is harmless.
func (b *Backend) Discard(ctx context.Context, key signing.StoredKey) error {
	id, err := parseRef(key.Ref)
	if err != nil {
		return err
	}
	objs, err := b.tok.find(ctx, []*p11.Attribute{p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_ID, id)})
	if err != nil {
		return fmt.Errorf("pkcs11: discard key %s: %w", key.Ref, err)
	}
	objs = slices.DeleteFunc(objs, func(o object) bool { return !hasPrefix(o, b.cfg.LabelPrefix) })
	if err := b.tok.destroy(ctx, objs); err != nil {
		return fmt.Errorf("pkcs11: discard key %s: %w", key.Ref, err)
	}
	return nil
}
