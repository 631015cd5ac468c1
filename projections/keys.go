package projections

import (
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/auth-platform/tokenservice/eventlog"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/keystate"
)

// Key is the read model of one signing key (keystate.Key: the keyring
// decides from the same type without importing projections).
type Key = keystate.Key

// StatusName is the lower-case name of a key status ("active", ...).
func StatusName(s eventsv1.KeyStatus) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "KEY_STATUS_"))
}

// Intent is a key creation recorded before a remote backend makes the key
// (keystate.Intent).
type Intent = keystate.Intent

// Compromise is a declared key compromise (keystate.Compromise).
type Compromise = keystate.Compromise

// Keys is the projection of signing keys. It is not safe for concurrent
// use; Set guards it.
type Keys struct {
	byID        map[string]*Key
	intents     map[string]*Intent
	compromises map[string]*Compromise // by compromised key ID
	active      string
	// seq is the sequence of the last key event, the CAS expectation for
	// the next one (key events are serialized on one filter).
	seq uint64
}

// NewKeys returns an empty Keys projection.
func NewKeys() *Keys {
	return &Keys{byID: map[string]*Key{}, intents: map[string]*Intent{}, compromises: map[string]*Compromise{}}
}

// Apply applies one key event.
func (k *Keys) Apply(rec eventlog.Record, m proto.Message) {
	k.seq = rec.Seq
	switch e := m.(type) {
	case *eventsv1.KeyRequested:
		if _, ok := k.intents[e.GetIntentId()]; !ok {
			k.intents[e.GetIntentId()] = &Intent{ID: e.GetIntentId(), Algorithm: signing.Algorithm(e.GetAlgorithm()),
				Backend: e.GetBackend(), At: e.GetAt().AsTime()}
		}
	case *eventsv1.KeyCompromiseDeclared:
		c := k.compromises[e.GetKeyId()]
		if c == nil || c.Resolved {
			c = &Compromise{KeyID: e.GetKeyId(), Seq: rec.Seq, At: e.GetAt().AsTime()}
			k.compromises[e.GetKeyId()] = c
		}
		c.RevokeFamilies = c.RevokeFamilies || e.GetRevokeFamilies()
	case *eventsv1.KeyCompromiseResolved:
		if c := k.compromises[e.GetKeyId()]; c != nil && !c.Resolved {
			c.Resolved, c.NewKeyID = true, e.GetNewKeyId()
		}
	case *eventsv1.KeyResealed:
		if key := k.byID[e.GetKeyId()]; key != nil && key.Status != eventsv1.KeyStatus_KEY_STATUS_DESTROYED {
			key.Sealed = e.GetSealedPrivateKey()
		}
	case *eventsv1.KeyMaterialDeleted:
		if key := k.byID[e.GetKeyId()]; key != nil {
			key.MaterialDeleted = true
		}
	case *eventsv1.KeyFallbackEngaged:
		if key := k.byID[e.GetKeyId()]; key != nil {
			key.FallbackEngaged++
		}
	case *eventsv1.KeyGenerated:
		if _, ok := k.byID[e.GetKeyId()]; ok {
			return
		}
		if in := k.intents[e.GetIntentId()]; in != nil && in.KeyID == "" {
			in.KeyID = e.GetKeyId()
		}
		pk := e.GetPublicKey()
		k.byID[e.GetKeyId()] = &Key{
			ID:        e.GetKeyId(),
			Algorithm: signing.Algorithm(e.GetAlgorithm()),
			Backend:   e.GetBackend(),
			JWK: signing.JWK{Kty: pk.GetKty(), Kid: pk.GetKid(), Use: "sig", Alg: pk.GetAlg(),
				N: pk.GetN(), E: pk.GetE(), Crv: pk.GetCrv(), X: pk.GetX(), Y: pk.GetY()},
			Sealed:       e.GetSealedPrivateKey(),
			Ref:          e.GetBackendKeyRef(),
			Status:       eventsv1.KeyStatus_KEY_STATUS_GENERATED,
			IntentID:     e.GetIntentId(),
			Fallback:     e.GetFallback(),
			Provisioned:  e.GetProvisioned(),
			GeneratedSeq: rec.Seq,
			GeneratedAt:  e.GetAt().AsTime(),
		}
	case *eventsv1.KeyPublished:
		if key := k.byID[e.GetKeyId()]; key != nil && key.Status < eventsv1.KeyStatus_KEY_STATUS_PUBLISHED {
			key.Status = eventsv1.KeyStatus_KEY_STATUS_PUBLISHED
			key.PublishedAt = e.GetAt().AsTime()
		}
	case *eventsv1.KeyActivated:
		key := k.byID[e.GetKeyId()]
		if key == nil || key.Status >= eventsv1.KeyStatus_KEY_STATUS_RETIRED {
			return
		}
		key.Status = eventsv1.KeyStatus_KEY_STATUS_ACTIVE
		key.ActivatedAt = e.GetAt().AsTime()
		if key.PublishedAt.IsZero() {
			key.PublishedAt = key.ActivatedAt
		}
		k.active = key.ID
	case *eventsv1.KeyRetired:
		if key := k.byID[e.GetKeyId()]; key != nil && key.Status < eventsv1.KeyStatus_KEY_STATUS_RETIRED {
			key.Status = eventsv1.KeyStatus_KEY_STATUS_RETIRED
			key.RetiredAt = e.GetAt().AsTime()
			key.RetainUntil = e.GetRetainUntil().AsTime()
			if k.active == key.ID {
				k.active = ""
			}
		}
	case *eventsv1.KeyDestroyed:
		if key := k.byID[e.GetKeyId()]; key != nil {
			key.Status = eventsv1.KeyStatus_KEY_STATUS_DESTROYED
			key.Sealed = nil
			if k.active == key.ID {
				k.active = ""
			}
		}
	}
}

// Active returns the active key, if any.
func (k *Keys) Active() (Key, bool) {
	key := k.byID[k.active]
	if key == nil {
		return Key{}, false
	}
	return *key, true
}

// Get returns key id.
func (k *Keys) Get(id string) (Key, bool) {
	key := k.byID[id]
	if key == nil {
		return Key{}, false
	}
	return *key, true
}

// PendingIntent returns the oldest intent no key fulfils yet.
func (k *Keys) PendingIntent() (Intent, bool) {
	var out *Intent
	for _, in := range k.intents {
		if in.KeyID == "" && (out == nil || in.At.Before(out.At) || in.At.Equal(out.At) && in.ID < out.ID) {
			out = in
		}
	}
	if out == nil {
		return Intent{}, false
	}
	return *out, true
}

// PendingIntents returns every intent no key fulfils yet, oldest first
// (the keyring finishes one at a time, but the reconciler of a remote
// backend must keep the objects of all of them).
func (k *Keys) PendingIntents() []Intent {
	var out []Intent
	for _, in := range k.intents {
		if in.KeyID == "" {
			out = append(out, *in)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].At.Before(out[j].At) || out[i].At.Equal(out[j].At) && out[i].ID < out[j].ID
	})
	return out
}

// PendingCompromises returns every declared key compromise not resolved
// yet, in the order of their declarations.
func (k *Keys) PendingCompromises() []Compromise {
	var out []Compromise
	for _, c := range k.compromises {
		if !c.Resolved {
			out = append(out, *c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out
}

// Seq returns the sequence of the last key event, 0 if none.
func (k *Keys) Seq() uint64 { return k.seq }

// All returns every key, oldest first.
func (k *Keys) All() []Key {
	out := make([]Key, 0, len(k.byID))
	for _, key := range k.byID {
		out = append(out, *key)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GeneratedSeq < out[j].GeneratedSeq })
	return out
}

// JWKS returns the keys a verifier may meet: published, active, and retired
// ones, newest first. Retired keys stay until the key is destroyed (the
// keyring destroys them after their retention).
func (k *Keys) JWKS() []signing.JWK {
	all := k.All()
	out := make([]signing.JWK, 0, len(all))
	for i := len(all) - 1; i >= 0; i-- {
		switch all[i].Status {
		case eventsv1.KeyStatus_KEY_STATUS_PUBLISHED, eventsv1.KeyStatus_KEY_STATUS_ACTIVE, eventsv1.KeyStatus_KEY_STATUS_RETIRED:
			out = append(out, all[i].JWK)
		}
	}
	return out
}
