// Package keystate holds the recorded state of signing keys, as the key
// projection reduces it from the log and the keyring decides from it: a
// key and its lifecycle, a pending creation intent, a declared compromise.
// It is types only (no I/O, no reducer), so that the projection (package
// projections) and the keyring (package signing/keyring) share them
// without either importing the other.
package keystate

import (
	"time"

	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	"github.com/auth-platform/tokenservice/signing"
)

// Key is the state of one signing key.
type Key struct {
	ID        string
	Algorithm signing.Algorithm
	Backend   string
	JWK       signing.JWK
	Sealed    []byte // sealed private key (local backend)
	Ref       string // backend reference (remote backends)
	Status    eventsv1.KeyStatus
	// GeneratedSeq is the stream sequence of the generated event; keys
	// are ordered by it.
	GeneratedSeq uint64
	GeneratedAt  time.Time
	PublishedAt  time.Time
	ActivatedAt  time.Time
	RetiredAt    time.Time
	RetainUntil  time.Time
	// IntentID is the KeyRequested intent a remote key fulfils.
	IntentID string
	// Fallback marks the local key that signs while the primary backend
	// is unavailable; it is published but never activated.
	Fallback bool
	// FallbackEngaged counts the fallback_engaged events of this key.
	FallbackEngaged int
	// MaterialDeleted: the backend was told to delete the destroyed key.
	MaterialDeleted bool
	// Provisioned marks a key the operator provisioned (KMS_KEY_ID,
	// CRYPTO_SIGNING_KEY) and tokend adopted: its material is the
	// operator's, never deleted by tokend.
	Provisioned bool
}

// Stored returns what a backend needs to open or discard the key.
func (k Key) Stored() signing.StoredKey {
	return signing.StoredKey{ID: k.ID, Algorithm: k.Algorithm, JWK: k.JWK, Ref: k.Ref, Sealed: k.Sealed}
}

// Intent is a KeyRequested event: a key a remote backend was asked to
// create. It is pending until a KeyGenerated names it.
type Intent struct {
	ID        string
	Algorithm signing.Algorithm
	Backend   string
	At        time.Time
	KeyID     string // set once fulfilled
}

// Compromise is a declared key compromise (KeyCompromiseDeclared). It is
// pending until a KeyCompromiseResolved names its key.
type Compromise struct {
	// KeyID is the compromised key.
	KeyID string
	// Seq is the stream sequence of the (first pending) declaration: a key
	// generated after it is a fresh key, one generated before it was
	// staged before the incident.
	Seq uint64
	At  time.Time
	// RevokeFamilies asks for the revocation of every active family
	// holding access tokens the key signed. Declarations while one is
	// pending add to it, never take it away.
	RevokeFamilies bool
	// Resolved is set by KeyCompromiseResolved, with the key that
	// replaced the compromised one.
	Resolved bool
	NewKeyID string
}
