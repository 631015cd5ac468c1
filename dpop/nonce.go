package dpop

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"sync/atomic"
	"time"
)

// Nonces issues and checks stateless DPoP nonces (RFC 9449 §8): the
// base64url of HMAC-SHA256(key, time step) truncated to 128 bits. A nonce
// is valid in its step and the next one, on every replica that shares the
// key. It is safe for concurrent use.
type Nonces struct {
	key  []byte
	step time.Duration
	now  func() time.Time
	// latest is the nonce of the latest step computed: every token
	// response carries the current nonce, which changes once a step (its
	// HMAC was about 1% of a GenerateTokens call).
	latest atomic.Pointer[stepNonce]
}

type stepNonce struct {
	step  int64
	nonce string
}

// NewNonces returns a nonce source. secret is shared by all replicas (at
// least 32 bytes; the key is derived from it, so it can be ENCRYPTION_KEY);
// step is how often the nonce rotates (a nonce lives between one and two
// steps); now is the clock.
func NewNonces(secret []byte, step time.Duration, now func() time.Time) (*Nonces, error) {
	if len(secret) < 32 {
		return nil, errors.New("dpop: nonce secret must be at least 32 bytes")
	}
	if step < time.Second {
		return nil, errors.New("dpop: nonce step must be at least 1s")
	}
	if now == nil {
		now = time.Now
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte("tokenservice dpop nonce key v1"))
	return &Nonces{key: mac.Sum(nil), step: step, now: now}, nil
}

func (n *Nonces) at(step int64) string {
	if l := n.latest.Load(); l != nil && l.step == step {
		return l.nonce
	}
	nonce := n.compute(step)
	if l := n.latest.Load(); l == nil || step > l.step {
		n.latest.Store(&stepNonce{step: step, nonce: nonce})
	}
	return nonce
}

func (n *Nonces) compute(step int64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(step))
	mac := hmac.New(sha256.New, n.key)
	mac.Write(b[:])
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil)[:16])
}

func (n *Nonces) step0() int64 { return n.now().UnixNano() / int64(n.step) }

// Current returns the nonce to hand out now.
func (n *Nonces) Current() string { return n.at(n.step0()) }

// Valid reports whether nonce is the current or the previous step's.
func (n *Nonces) Valid(nonce string) bool {
	if len(nonce) != 22 {
		return false
	}
	s := n.step0()
	cur, prev := n.at(s), n.at(s-1)
	return hmac.Equal([]byte(nonce), []byte(cur)) || hmac.Equal([]byte(nonce), []byte(prev))
}
