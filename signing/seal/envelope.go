package seal

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// KeyWrapper wraps data keys with a key that never leaves a remote
// service (signing/cryptosvc's KeyWrapper over a crypto service's Encrypt
// and Decrypt). The wrapped form names whatever the service needs to
// unwrap it. Implementations must be safe for concurrent use.
type KeyWrapper interface {
	WrapKey(ctx context.Context, dataKey []byte) ([]byte, error)
	UnwrapKey(ctx context.Context, wrapped []byte) ([]byte, error)
}

// Envelope configures envelope encryption: a value is sealed with
// AES-256-GCM under a random data key, and the data key, wrapped by the
// service, is stored with it. Reading a value then needs the service,
// not only ENCRYPTION_KEY. Zero values select the defaults.
type Envelope struct {
	// Wrapper wraps the data keys. Required.
	Wrapper KeyWrapper
	// Seal seals new values with the envelope. Off, the Sealer still opens
	// envelope values (encryption was turned off) and NeedsReseal reports
	// them, so that they move back under the local key.
	Seal bool
	// Fallback seals a value under the local key when the wrapper fails
	// (the service is unavailable) instead of failing. Default off.
	Fallback bool
	// OnFallback, if set, is called for each value Fallback sealed
	// locally. It must not block.
	OnFallback func()
	// DataKeyLifetime is how long one data key seals new values. Default
	// 1 hour.
	DataKeyLifetime time.Duration
	// MaxDataKeyUses bounds the values one data key seals: with random
	// 96-bit nonces NIST SP 800-38D §8.3 allows 2^32. Default 2^20.
	MaxDataKeyUses int
	// CacheSize bounds the unwrapped data keys kept for opening. Default
	// 256.
	CacheSize int
	// Timeout bounds one wrapper call: Seal and Open take no context.
	// Default 10 s.
	Timeout time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

const (
	envelopeVersion = 2
	dataKeySize     = 32
	// 1 version + 2 length + wrapped key + 12 nonce + 16 tag.
	envelopeOverhead = 1 + 2 + 12 + 16
)

// ErrNoWrapper is returned by Open for an envelope value when the Sealer
// has no KeyWrapper (CRYPTO_SERVICE_ADDRESS unset).
var ErrNoWrapper = errors.New("seal: the value is sealed with a data key of the crypto service, and no crypto service is configured")

type dataKey struct {
	wrapped []byte
	aead    cipher.AEAD
	made    time.Time
	uses    int
}

type envelope struct {
	cfg  Envelope
	rand io.Reader

	mu  sync.Mutex // guards cur; held while a data key is wrapped
	cur *dataKey

	cacheMu sync.Mutex
	cache   map[[32]byte]cipher.AEAD
	order   [][32]byte // FIFO eviction
}

// WithEnvelope returns a Sealer with the keys of s that seals new values
// with envelope encryption when e.Seal, and opens them in any case. What
// s sealed before stays readable: a value names its format in its first
// byte. It returns an error for an e without Wrapper.
func (s *Sealer) WithEnvelope(e Envelope) (*Sealer, error) {
	if e.Wrapper == nil {
		return nil, errors.New("seal: Envelope.Wrapper is required")
	}
	if e.DataKeyLifetime <= 0 {
		e.DataKeyLifetime = time.Hour
	}
	if e.MaxDataKeyUses <= 0 {
		e.MaxDataKeyUses = 1 << 20
	}
	if e.CacheSize <= 0 {
		e.CacheSize = 256
	}
	if e.Timeout <= 0 {
		e.Timeout = 10 * time.Second
	}
	if e.Now == nil {
		e.Now = time.Now
	}
	out := *s
	out.env = &envelope{cfg: e, rand: s.rand, cache: map[[32]byte]cipher.AEAD{}}
	return &out, nil
}

// Prepare makes the data key new values are sealed with, unless one is
// current. Call it at start-up: NeedsReseal reports values sealed under
// the local key only while a data key is current, so that a reseal
// during an outage does not fall back to the local key again and again.
// It does nothing without envelope sealing.
func (s *Sealer) Prepare(ctx context.Context) error {
	if s.env == nil || !s.env.cfg.Seal {
		return nil
	}
	_, err := s.env.current(ctx)
	return err
}

// ready reports whether a data key is current.
func (e *envelope) ready() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.valid(e.cur)
}

func (e *envelope) valid(dk *dataKey) bool {
	return dk != nil && dk.uses < e.cfg.MaxDataKeyUses && e.cfg.Now().Sub(dk.made) < e.cfg.DataKeyLifetime
}

// current returns the data key to seal with, making and wrapping a new
// one when there is none or it is spent. It counts one use.
func (e *envelope) current(ctx context.Context) (*dataKey, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.valid(e.cur) {
		raw := make([]byte, dataKeySize)
		if _, err := io.ReadFull(e.rand, raw); err != nil {
			return nil, fmt.Errorf("seal: data key: %w", err)
		}
		ctx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
		defer cancel()
		wrapped, err := e.cfg.Wrapper.WrapKey(ctx, raw)
		if err != nil {
			return nil, fmt.Errorf("seal: wrap a data key: %w", err)
		}
		if len(wrapped) == 0 || len(wrapped) > 0xffff {
			return nil, fmt.Errorf("seal: wrapped data key of %d bytes", len(wrapped))
		}
		aead, err := newAEAD(raw)
		if err != nil {
			return nil, err
		}
		e.cur = &dataKey{wrapped: wrapped, aead: aead, made: e.cfg.Now()}
		e.remember(wrapped, aead)
	}
	e.cur.uses++
	return e.cur, nil
}

func newAEAD(raw []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func (e *envelope) remember(wrapped []byte, aead cipher.AEAD) {
	id := sha256.Sum256(wrapped)
	e.cacheMu.Lock()
	defer e.cacheMu.Unlock()
	if _, ok := e.cache[id]; ok {
		return
	}
	if len(e.order) >= e.cfg.CacheSize {
		delete(e.cache, e.order[0])
		e.order = e.order[1:]
	}
	e.cache[id] = aead
	e.order = append(e.order, id)
}

// seal seals with the current data key; ok false when the wrapper failed
// and Fallback is on (the caller seals locally).
func (e *envelope) seal(plaintext, aad []byte) (out []byte, ok bool, err error) {
	dk, err := e.current(context.Background())
	if err != nil {
		if e.cfg.Fallback {
			if e.cfg.OnFallback != nil {
				e.cfg.OnFallback()
			}
			return nil, false, nil
		}
		return nil, false, err
	}
	out = make([]byte, 3+len(dk.wrapped)+12, envelopeOverhead+len(dk.wrapped)+len(plaintext))
	out[0] = envelopeVersion
	binary.BigEndian.PutUint16(out[1:], uint16(len(dk.wrapped)))
	copy(out[3:], dk.wrapped)
	nonce := out[3+len(dk.wrapped):]
	if _, err := io.ReadFull(e.rand, nonce); err != nil {
		return nil, false, fmt.Errorf("seal: nonce: %w", err)
	}
	return dk.aead.Seal(out, nonce, plaintext, aad), true, nil
}

// open opens an envelope value. A data key the wrapper cannot unwrap
// now (the service is unavailable) is an error that wraps the wrapper's,
// not ErrOpen: the value may be fine.
func (e *envelope) open(sealed, aad []byte) ([]byte, error) {
	if len(sealed) < envelopeOverhead {
		return nil, ErrOpen
	}
	n := int(binary.BigEndian.Uint16(sealed[1:]))
	if n == 0 || len(sealed) < envelopeOverhead+n {
		return nil, ErrOpen
	}
	wrapped, rest := sealed[3:3+n], sealed[3+n:]
	id := sha256.Sum256(wrapped)
	e.cacheMu.Lock()
	aead := e.cache[id]
	e.cacheMu.Unlock()
	if aead == nil {
		ctx, cancel := context.WithTimeout(context.Background(), e.cfg.Timeout)
		defer cancel()
		raw, err := e.cfg.Wrapper.UnwrapKey(ctx, wrapped)
		if err != nil {
			return nil, fmt.Errorf("seal: unwrap the data key: %w", err)
		}
		if len(raw) != dataKeySize {
			return nil, ErrOpen
		}
		if aead, err = newAEAD(raw); err != nil {
			return nil, err
		}
		e.remember(wrapped, aead)
	}
	pt, err := aead.Open(nil, rest[:12], rest[12:], aad)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}
