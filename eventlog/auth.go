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
	"io"
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
	pool *sync.Pool // of hmac hashes under key: the key schedule is made once
}

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
			pool: &sync.Pool{New: func() any { return hmac.New(sha256.New, mk) }}})
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

func (a *Authenticator) mac(k macKey, in authInput) []byte {
	m := k.pool.Get().(hash.Hash)
	defer k.pool.Put(m)
	m.Reset()
	var buf [8]byte
	field := func(s string) {
		binary.BigEndian.PutUint64(buf[:], uint64(len(s)))
		m.Write(buf[:])
		io.WriteString(m, s)
	}
	field("tokenservice event v" + authVersion)
	field(in.subject)
	field(in.aggregate)
	field(in.typ)
	field(in.id)
	field(in.actor)
	field(in.correlation)
	field(in.ttl)
	binary.BigEndian.PutUint64(buf[:], in.prev)
	m.Write(buf[:])
	binary.BigEndian.PutUint64(buf[:], uint64(len(in.data)))
	m.Write(buf[:])
	m.Write(in.data)
	return m.Sum(nil)
}

// sign returns the HeaderAuth value of an event.
func (a *Authenticator) sign(in authInput) string {
	k := a.keys[0]
	return authVersion + "." + k.id + "." + strconv.FormatUint(in.prev, 10) + "." +
		base64.RawURLEncoding.EncodeToString(a.mac(k, in))
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

// parseAuth splits a HeaderAuth value.
func parseAuth(v string) (keyID string, prev uint64, mac []byte, err error) {
	parts := strings.Split(v, ".")
	if len(parts) != 4 || parts[0] != authVersion {
		return "", 0, nil, errors.New("malformed authenticator")
	}
	if prev, err = strconv.ParseUint(parts[2], 10, 64); err != nil {
		return "", 0, nil, errors.New("malformed authenticator")
	}
	if mac, err = base64.RawURLEncoding.DecodeString(parts[3]); err != nil || len(mac) != sha256.Size {
		return "", 0, nil, errors.New("malformed authenticator")
	}
	return parts[1], prev, mac, nil
}

// verify checks the authenticator of a stored message and returns its prev.
// The error wraps ErrForged.
func (a *Authenticator) verify(subject string, seq uint64, h nats.Header, data []byte) (uint64, error) {
	v := h.Get(HeaderAuth)
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
		if hmac.Equal(mac, a.mac(k, inputOf(subject, h, data, prev))) {
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
