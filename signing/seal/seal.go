// Package seal encrypts secrets that are stored in the event log (local
// private keys, grace-window successors) with AES-256-GCM (NIST SP 800-38D).
//
// A sealed value is: version 3 (1 byte) || key ID (8 bytes, a hash of the
// key) || salt (32 random bytes) || nonce (12 random bytes) || ciphertext
// and tag, under an AES-256 key of its own, derived from the sealing key
// and the salt with HKDF-SHA256 (RFC 5869). With one key and random
// 96-bit nonces, NIST SP 800-38D §8.3 allows 2^32 seals in all; a grace
// record is sealed at every rotation, so a long-lived ENCRYPTION_KEY
// would reach that bound. A key per record sees one seal, so the bound
// holds for the service's lifetime, whatever the number of records
// (two records share a derived key only if their 256-bit salts collide).
// Values of version 1 (one AES key per sealing key, random nonce), which
// earlier releases wrote, still open and are no longer written. The additional data
// binds a sealed value to where it is stored (a key ID, a family ID), so it
// cannot be moved to another record. A Sealer holds one key that seals and
// any number of older keys that still open, which lets ENCRYPTION_KEY be
// rotated while old values are re-sealed.
//
// With an Envelope (WithEnvelope), new values are sealed under a random
// data key that a crypto service wraps instead: version 2 || length of
// the wrapped key (2 bytes) || wrapped key || nonce || ciphertext and
// tag. Values of both formats open with the same Sealer, so turning
// envelope encryption on or off leaves what was sealed before readable;
// NeedsReseal then reports the values to move to the current format.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
)

// KeySize is the size of a sealing key in bytes (AES-256).
const KeySize = 32

const (
	versionShared  = 1 // one AES key per sealing key
	versionDerived = 3 // one AES key per value, derived with HKDF
	idSize         = 8
	saltSize       = 32
	nonceSize      = 12
	overhead       = 1 + idSize + nonceSize + 16
	overheadV3     = overhead + saltSize
)

var (
	// ErrKeySize is returned for a key that is not KeySize bytes long.
	ErrKeySize = errors.New("seal: key must be 32 bytes")
	// ErrOpen is returned when a value cannot be opened: unknown key,
	// wrong additional data, or tampered bytes. It says no more on purpose.
	ErrOpen = errors.New("seal: cannot open sealed value")
)

type key struct {
	id   [idSize]byte
	aead cipher.AEAD // of version 1 values
	ikm  []byte      // HKDF input of version 3 values
}

// Sealer seals with its current key and opens with the current or an older
// key. It is safe for concurrent use.
type Sealer struct {
	current key
	all     []key
	rand    io.Reader
	env     *envelope // nil: local keys only
}

// New returns a Sealer that seals with current and opens with current and
// older. rand supplies nonces (crypto/rand.Reader in production).
func New(rand io.Reader, current []byte, older ...[]byte) (*Sealer, error) {
	s := &Sealer{rand: rand}
	for i, k := range append([][]byte{current}, older...) {
		kk, err := newKey(k)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			s.current = kk
		}
		s.all = append(s.all, kk)
	}
	return s, nil
}

func newKey(k []byte) (key, error) {
	if len(k) != KeySize {
		return key{}, ErrKeySize
	}
	// Derive the AES key so the configured key is never used directly
	// for more than one purpose.
	mac := hmac.New(sha256.New, k)
	mac.Write([]byte("tokenservice seal aes-256-gcm v1"))
	block, err := aes.NewCipher(mac.Sum(nil))
	if err != nil {
		return key{}, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return key{}, err
	}
	idm := hmac.New(sha256.New, k)
	idm.Write([]byte("tokenservice seal key id v1"))
	var kk key
	copy(kk.id[:], idm.Sum(nil))
	kk.aead = aead
	ikm := hmac.New(sha256.New, k)
	ikm.Write([]byte("tokenservice seal per-value hkdf v3"))
	kk.ikm = ikm.Sum(nil)
	return kk, nil
}

// recordAEAD returns the AES-256-GCM of the one value sealed with salt.
func (k key) recordAEAD(salt []byte) (cipher.AEAD, error) {
	aesKey, err := hkdf.Key(sha256.New, k.ikm, salt, "tokenservice seal value aes-256-gcm v3", KeySize)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(aesKey)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Seal encrypts plaintext bound to aad: with the envelope when it seals,
// else (or when the envelope's service fails and its Fallback is on)
// with the current local key.
func (s *Sealer) Seal(plaintext, aad []byte) ([]byte, error) {
	if s.env != nil && s.env.cfg.Seal {
		out, ok, err := s.env.seal(plaintext, aad)
		if ok || err != nil {
			return out, err
		}
	}
	out := make([]byte, 1+idSize+saltSize+nonceSize, overheadV3+len(plaintext))
	out[0] = versionDerived
	copy(out[1:], s.current.id[:])
	if _, err := io.ReadFull(s.rand, out[1+idSize:]); err != nil {
		return nil, fmt.Errorf("seal: salt and nonce: %w", err)
	}
	salt, nonce := out[1+idSize:1+idSize+saltSize], out[1+idSize+saltSize:]
	aead, err := s.current.recordAEAD(salt)
	if err != nil {
		return nil, fmt.Errorf("seal: derive the value's key: %w", err)
	}
	return aead.Seal(out, nonce, plaintext, aad), nil
}

// Open decrypts a value sealed with aad by any key of s, or with the
// envelope. It returns ErrOpen if that fails for any reason but one: an
// envelope value whose data key cannot be unwrapped now (the service is
// unavailable, or none is configured: ErrNoWrapper) is an error that
// says so.
func (s *Sealer) Open(sealed, aad []byte) ([]byte, error) {
	if len(sealed) > 0 && sealed[0] == envelopeVersion {
		if s.env == nil {
			return nil, ErrNoWrapper
		}
		return s.env.open(sealed, aad)
	}
	if len(sealed) < overhead || (sealed[0] != versionShared && sealed[0] != versionDerived) ||
		(sealed[0] == versionDerived && len(sealed) < overheadV3) {
		return nil, ErrOpen
	}
	for _, k := range s.all {
		if !hmac.Equal(k.id[:], sealed[1:1+idSize]) {
			continue
		}
		aead, rest := k.aead, sealed[1+idSize:]
		if sealed[0] == versionDerived {
			var err error
			if aead, err = k.recordAEAD(rest[:saltSize]); err != nil {
				return nil, ErrOpen
			}
			rest = rest[saltSize:]
		}
		pt, err := aead.Open(nil, rest[:nonceSize], rest[nonceSize:], aad)
		if err != nil {
			return nil, ErrOpen
		}
		return pt, nil
	}
	return nil, ErrOpen
}

// NeedsReseal reports whether sealed should be sealed again: it was made
// with a local key other than the current one, or in the format the
// Sealer no longer seals with. While the envelope seals, a value under
// the current local key needs it only when a data key is current (see
// Prepare), so that resealing during an outage of the service does not
// fall back to the local key again and again.
func (s *Sealer) NeedsReseal(sealed []byte) bool {
	envelopeSeals := s.env != nil && s.env.cfg.Seal
	if len(sealed) > 0 && sealed[0] == envelopeVersion {
		return !envelopeSeals
	}
	if len(sealed) < overhead || !hmac.Equal(s.current.id[:], sealed[1:1+idSize]) {
		return true
	}
	return envelopeSeals && s.env.ready()
}
