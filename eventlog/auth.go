package eventlog

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// HeaderAuth carries the authenticator of an event:
// "1.<key id>.<prev>.<mac>", where prev is the sequence of the aggregate's
// message that the event follows (the compare-and-set expectation it was
// appended with, 0 for the first) and mac an HMAC-SHA256, base64url, under
// the key named by key id.
const HeaderAuth = "Token-Auth"

// authVersion is the first field of HeaderAuth and the domain separator of
// the MAC input.
const authVersion = "1"

// Authenticator makes and checks the authenticators of events. Its keys are
// derived from the service's ENCRYPTION_KEY (and the previous keys during a
// rotation), so only holders of that key can produce an event the service
// accepts, whoever can publish to NATS.
//
// The MAC binds the subject, the aggregate's filter (the stored
// compare-and-set header), the event type, the message ID, the actor, the
// correlation ID, the TTL, the payload and prev: a forged event fails the
// MAC, and an authentic event published again later fails the chain check
// (Record.Follows), because the aggregate's message after prev is the
// original, not the copy.
//
// An Authenticator is immutable and safe for concurrent use.
type Authenticator struct {
	keys    []macKey // keys[0] authenticates new events
	vouched atomic.Pointer[vouch]
}

// vouch is a checkpoint of a key rotation (Vouch).
type vouch struct {
	through uint64
	refused map[uint64]bool
}

type macKey struct {
	id   string
	key  []byte
	pool *sync.Pool // of *macState under key: the key schedule is made once
}

// macState is an HMAC under one key and the buffer its input is built
// in: the input goes to the HMAC in one Write, since with BoringCrypto
// every Write is a cgo call.
type macState struct {
	h   hash.Hash
	buf []byte
	sum []byte
}

// maxPooledInput bounds the MAC input buffer a pool keeps: an event with a
// large payload (a sealed key) does not pin its buffer for ever.
const maxPooledInput = 16 << 10

// macKeySize is the size of a derived MAC key.
const macKeySize = 32

// NewAuthenticator returns the authenticator whose new events are under the
// key derived from current and whose reads also accept the keys derived
// from previous (a rotation of ENCRYPTION_KEY: keep the previous key
// configured while the log holds events it authenticated). Each key must
// be at least 32 bytes.
func NewAuthenticator(current []byte, previous ...[]byte) (*Authenticator, error) {
	a := &Authenticator{}
	for i, k := range append([][]byte{current}, previous...) {
		if len(k) < 32 {
			return nil, fmt.Errorf("eventlog: authenticator: key %d is %d bytes, want at least 32", i, len(k))
		}
		mk := DeriveKey(k, "tokenservice event mac key v1")
		id := sha256.Sum256(mk)
		a.keys = append(a.keys, macKey{id: hex.EncodeToString(id[:4]), key: mk,
			pool: &sync.Pool{New: func() any { return &macState{h: hmac.New(sha256.New, mk)} }}})
	}
	return a, nil
}

// DeriveKey returns a 32-byte key for one purpose, derived from the
// service's ENCRYPTION_KEY (HMAC-SHA256 of the purpose under it), so the
// configured key itself is never used for more than one purpose.
func DeriveKey(key []byte, purpose string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(purpose))
	return m.Sum(nil)
}

// Vouch accepts the records at or before sequence through whose MAC key
// is no longer known (an ENCRYPTION_KEY dropped after a rotation), except
// those in refused: the service verified them while it held that key and
// recorded so under the current one (a token.log.rekeyed event), and the
// log only grows, so nothing can have been inserted there since. Records
// under a known key are checked as always. Call it before the log is read.
func (a *Authenticator) Vouch(through uint64, refused []uint64) {
	v := &vouch{through: through, refused: make(map[uint64]bool, len(refused))}
	for _, seq := range refused {
		v.refused[seq] = true
	}
	a.vouched.Store(v)
}

// KeyID returns the ID of the key that authenticates new events.
func (a *Authenticator) KeyID() string { return a.keys[0].id }

// authInput is what an event's MAC covers.
type authInput struct {
	subject, aggregate, typ, id, actor, correlation, ttl string
	prev                                                 uint64
	data                                                 []byte
}

// appendTo appends the MAC input to b: every string field length-prefixed,
// the domain separator first, then prev and the length-prefixed payload.
func (in authInput) appendTo(b []byte) []byte {
	for _, f := range [...]string{"tokenservice event v" + authVersion,
		in.subject, in.aggregate, in.typ, in.id, in.actor, in.correlation, in.ttl} {
		b = binary.BigEndian.AppendUint64(b, uint64(len(f)))
		b = append(b, f...)
	}
	b = binary.BigEndian.AppendUint64(b, in.prev)
	b = binary.BigEndian.AppendUint64(b, uint64(len(in.data)))
	return append(b, in.data...)
}

// mac returns the HMAC of in under k.
func (a *Authenticator) mac(k macKey, in authInput) [sha256.Size]byte {
	m := k.pool.Get().(*macState)
	m.buf = in.appendTo(m.buf[:0])
	m.h.Reset()
	m.h.Write(m.buf)
	m.sum = m.h.Sum(m.sum[:0])
	var sum [sha256.Size]byte
	copy(sum[:], m.sum)
	if cap(m.buf) <= maxPooledInput {
		k.pool.Put(m)
	}
	return sum
}

// sign returns the HeaderAuth value of an event.
func (a *Authenticator) sign(in authInput) string {
	k := a.keys[0]
	mac := a.mac(k, in)
	return authVersion + "." + k.id + "." + strconv.FormatUint(in.prev, 10) + "." +
		base64.RawURLEncoding.EncodeToString(mac[:])
}

// Sign returns the Token-Auth value of a message about to be appended
// with headers h (its event type, ID, actor, correlation ID, TTL and
// compare-and-set subject set) after the aggregate's sequence prev. Append
// calls it; it is exported for tools and benchmarks.
func (a *Authenticator) Sign(subject string, h nats.Header, data []byte, prev uint64) string {
	return a.sign(inputOf(subject, h, data, prev))
}

// Verify checks the Token-Auth header of the stored message at seq and
// returns the sequence it follows; the error wraps ErrForged. Every read
// of a Log calls it; it is exported for tools and benchmarks.
func (a *Authenticator) Verify(subject string, seq uint64, h nats.Header, data []byte) (uint64, error) {
	return a.verify(subject, seq, h, data)
}

// inputOf returns the MAC input of a stored message.
func inputOf(subject string, h nats.Header, data []byte, prev uint64) authInput {
	return authInput{
		subject: subject, aggregate: h.Get(jetstream.ExpectedLastSubjSeqSubjHeader), typ: h.Get(HeaderEvent), id: h.Get(HeaderMsgID), actor: h.Get(HeaderActor),
		correlation: h.Get(HeaderCorrelationID), ttl: h.Get(HeaderTTL), prev: prev, data: data,
	}
}

var errMalformedAuth = errors.New("malformed authenticator")

// parseAuth splits a HeaderAuth value.
func parseAuth(v string) (keyID string, prev uint64, mac [sha256.Size]byte, err error) {
	version, rest, ok1 := strings.Cut(v, ".")
	keyID, rest, ok2 := strings.Cut(rest, ".")
	seq, enc, ok3 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || !ok3 || strings.Contains(enc, ".") || version != authVersion {
		return "", 0, mac, errMalformedAuth
	}
	if prev, err = strconv.ParseUint(seq, 10, 64); err != nil {
		return "", 0, mac, errMalformedAuth
	}
	if base64.RawURLEncoding.DecodedLen(len(enc)) != sha256.Size {
		return "", 0, mac, errMalformedAuth
	}
	if n, err := base64.RawURLEncoding.Decode(mac[:], []byte(enc)); err != nil || n != sha256.Size {
		return "", 0, mac, errMalformedAuth
	}
	return keyID, prev, mac, nil
}

// verify checks the authenticator of a stored message and returns its prev.
// The error wraps ErrForged.
func (a *Authenticator) verify(subject string, seq uint64, h nats.Header, data []byte) (uint64, error) {
	return a.check(h.Get(HeaderAuth), seq, inputOf(subject, h, data, 0))
}

// check checks v, the authenticator of the stored message at seq whose MAC
// input is in but for prev, and returns its prev. The error wraps
// ErrForged.
func (a *Authenticator) check(v string, seq uint64, in authInput) (uint64, error) {
	if v == "" {
		return 0, fmt.Errorf("%w: no authenticator", ErrForged)
	}
	kid, prev, mac, err := parseAuth(v)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrForged, err)
	}
	for _, k := range a.keys {
		if k.id != kid {
			continue
		}
		in.prev = prev
		if want := a.mac(k, in); hmac.Equal(mac[:], want[:]) {
			return prev, nil
		}
		return 0, fmt.Errorf("%w: MAC does not verify", ErrForged)
	}
	if v := a.vouched.Load(); v != nil && seq <= v.through && !v.refused[seq] {
		return prev, nil // verified when its key was held (Vouch)
	}
	return 0, fmt.Errorf("%w: unknown MAC key %q (is the previous ENCRYPTION_KEY still configured?)", ErrForged, kid)
}

// Follows reports, as an error wrapping ErrForged, a record that does not
// follow prev, the sequence of its aggregate's message before it (0 for
// none): an authentic event published again. A reader that reads an
// aggregate in stream order checks each record with it; Log.Last and
// LastConsistent check the record they return themselves.
func (r Record) Follows(prev uint64) error {
	if r.Prev != prev {
		return fmt.Errorf("%w: seq %d follows seq %d of its aggregate but was appended after seq %d (replayed)", ErrForged, r.Seq, prev, r.Prev)
	}
	return nil
}
