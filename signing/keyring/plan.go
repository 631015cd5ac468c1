package keyring

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/keystate"
)

// The key lifecycle as actions: plan decides the next key event toward a
// goal from the projection and the clock; each action is one event (and,
// for a new remote key, the backend call that makes it).

type action struct {
	kid string
	msg proto.Message // the key event (events.Key derives its type and subject)
	// run, if set, does the action's side effect and fills in the rest.
	run func(ctx context.Context) error
	// undo, if set, reverses the side effect when the event lost the race.
	undo func(ctx context.Context) error
}

// plan decides the next key event toward g at the current time, or nil.
// o is what a Provisioner backend offered (nil for one that creates its
// keys).
func (k *Keyring) plan(g *goal, o *offer) (*action, error) {
	now := k.cfg.Now()
	keys, _ := k.set.Keys()
	current, hasCurrent := k.set.ActiveKey()
	var staged, fallback *keystate.Key
	for i := range keys {
		key := &keys[i]
		if key.Fallback {
			if key.Status == eventsv1.KeyStatus_KEY_STATUS_GENERATED {
				return publish(key.ID, now), nil
			}
			if key.Status == eventsv1.KeyStatus_KEY_STATUS_PUBLISHED {
				fallback = key
			}
			continue
		}
		switch key.Status {
		case eventsv1.KeyStatus_KEY_STATUS_ACTIVE:
			if !hasCurrent || key.ID != current.ID {
				// Superseded by a newer activation: retire it.
				return k.retire(key.ID, now), nil
			}
		case eventsv1.KeyStatus_KEY_STATUS_RETIRED:
			if !key.RetainUntil.After(now) {
				return destroy(key.ID, now), nil
			}
		case eventsv1.KeyStatus_KEY_STATUS_GENERATED, eventsv1.KeyStatus_KEY_STATUS_PUBLISHED:
			staged = key
		}
	}
	// After ENCRYPTION_KEY changed, seal every local key again under the
	// new key, so the old one can be retired.
	for i := range keys {
		key := &keys[i]
		if key.Backend == BackendLocal && len(key.Sealed) > 0 && key.Status != eventsv1.KeyStatus_KEY_STATUS_DESTROYED &&
			k.sealer.NeedsReseal(key.Sealed) {
			return k.reseal(key, now)
		}
	}
	// A remote key whose creation was recorded but not finished (another
	// replica's, or ours before a crash): finish it, idempotently. A
	// Provisioner creates nothing: an intent of managed mode, left by a
	// crash before a switch to a provisioned key, waits for managed mode,
	// which finds its key by the intent.
	if in, ok := k.set.PendingKeyIntent(); ok && !k.provisions(in.Backend) {
		return k.create(in, now)
	}
	// The fallback key is published long before it can be needed.
	if k.cfg.Fallback && fallback == nil {
		return k.generateWith(k.local, k.cfg.Algorithm, now, true)
	}
	// A compromised key: a fresh key signs at once, the old one leaves the
	// JWKS at once. Decided from the log alone, so that any replica, or
	// this one after a restart, finishes what a declaration asked for.
	for _, c := range k.set.PendingCompromises() {
		if act, err := k.contain(c, keys, current, hasCurrent, now, o); act != nil || err != nil {
			return act, err
		}
	}
	if staged != nil {
		if staged.Status == eventsv1.KeyStatus_KEY_STATUS_GENERATED {
			return publish(staged.ID, now), nil
		}
		if !hasCurrent || !now.Before(staged.PublishedAt.Add(k.cfg.Prepublish)) {
			return activate(staged.ID, now), nil
		}
		return k.deleteMaterial(keys, now), nil
	}
	switch {
	case !hasCurrent:
		// The first key (or a log whose keys were all destroyed): it
		// signs at once; no verifier can have cached it yet.
		return k.generate(now, o)
	case g.stage, current.Algorithm != k.cfg.Algorithm:
		return k.generate(now, o)
	case o != nil:
		// Provisioned keys rotate when the operator supplies the next
		// one: a key the log does not hold yet is staged.
		if o.err == nil {
			if _, ok := k.set.Key(o.key.ID); !ok {
				return k.generate(now, o)
			}
		}
	case k.cfg.RotationPeriod > 0 && !now.Before(current.ActivatedAt.Add(k.cfg.RotationPeriod-k.cfg.Prepublish)):
		return k.generate(now, o)
	}
	return k.deleteMaterial(keys, now), nil
}

// provisions reports whether the backend named name is a Provisioner.
func (k *Keyring) provisions(name string) bool {
	_, ok := k.backends[name].(Provisioner)
	return ok
}

// deleteMaterial returns the deletion of a destroyed remote key's
// material, or nil. It is the lifecycle's last concern, so an unreachable
// backend never delays anything else.
func (k *Keyring) deleteMaterial(keys []keystate.Key, now time.Time) *action {
	for i := range keys {
		key := keys[i]
		b, ok := k.backends[key.Backend]
		if key.Status != eventsv1.KeyStatus_KEY_STATUS_DESTROYED || key.MaterialDeleted || !ok || !b.Remote() {
			continue
		}
		// The operator's keys are the operator's to delete; and a
		// Provisioner may not delete any (it holds no such permission:
		// keys tokend made in managed mode wait for managed mode).
		if key.Provisioned || k.provisions(key.Backend) {
			continue
		}
		return &action{kid: key.ID, msg: &eventsv1.KeyMaterialDeleted{KeyId: key.ID, At: timestamppb.New(now)},
			run: func(ctx context.Context) error { return b.Discard(ctx, key.Stored()) }}
	}
	return nil
}

// generate makes the next key with the configured backend: at once for a
// local one; for a remote one, first the intent (the key is created by
// the next step, create); for a Provisioner, the key it offered (o),
// adopted as it is: it returns ErrNoNewKey if the log holds it already.
func (k *Keyring) generate(now time.Time, o *offer) (*action, error) {
	if o != nil {
		if err := k.usable(o); err != nil {
			return nil, err
		}
		if _, ok := k.set.Key(o.key.ID); ok {
			// Staged already: plan publishes and activates it, contain
			// activates it; it is never generated twice.
			return nil, fmt.Errorf("%w: the provisioned key %s (kid %s) is staged already", ErrNoNewKey, o.key.Ref, o.key.ID)
		}
		act := generated(k.cfg.Backend, o.key, "", now, false)
		act.msg.(*eventsv1.KeyGenerated).Provisioned = true
		return act, nil
	}
	if !k.cfg.Backend.Remote() {
		return k.generateWith(k.cfg.Backend, k.cfg.Algorithm, now, false)
	}
	var b [16]byte
	if _, err := io.ReadFull(k.cfg.Rand, b[:]); err != nil {
		return nil, err
	}
	intent := base64.RawURLEncoding.EncodeToString(b[:])
	return &action{kid: intent, msg: &eventsv1.KeyRequested{
		IntentId: intent, Algorithm: string(k.cfg.Algorithm), Backend: k.cfg.Backend.Name(), At: timestamppb.New(now),
	}}, nil
}

func (k *Keyring) generateWith(b Backend, alg signing.Algorithm, now time.Time, fallback bool) (*action, error) {
	key, err := b.Create(context.Background(), alg, "")
	if err != nil {
		return nil, err
	}
	return generated(b, key, "", now, fallback), nil
}

// create finishes a recorded intent: the backend returns the key it made
// for it before a crash, or makes it now.
func (k *Keyring) create(in keystate.Intent, now time.Time) (*action, error) {
	b, ok := k.backends[in.Backend]
	if !ok {
		return nil, fmt.Errorf("keyring: key intent %s: backend %q not configured", in.ID, in.Backend)
	}
	act := &action{}
	act.run = func(ctx context.Context) error {
		key, err := b.Create(ctx, in.Algorithm, in.ID)
		if err != nil {
			return fmt.Errorf("keyring: create %s key for intent %s: %w", in.Backend, in.ID, err)
		}
		*act = *generated(b, key, in.ID, now, false)
		act.undo = func(ctx context.Context) error { return b.Discard(ctx, key) }
		return nil
	}
	return act, nil
}

func generated(b Backend, key signing.StoredKey, intent string, now time.Time, fallback bool) *action {
	j := key.JWK
	return &action{kid: key.ID, msg: &eventsv1.KeyGenerated{
		KeyId: key.ID, Algorithm: string(key.Algorithm), Backend: b.Name(),
		PublicKey:        &eventsv1.PublicKey{Kty: j.Kty, Kid: j.Kid, Alg: j.Alg, N: j.N, E: j.E, Crv: j.Crv, X: j.X, Y: j.Y},
		SealedPrivateKey: key.Sealed, BackendKeyRef: key.Ref, IntentId: intent, Fallback: fallback, At: timestamppb.New(now),
	}}
}

// reseal opens a local key with whichever configured key sealed it and
// seals it under the current one.
func (k *Keyring) reseal(key *keystate.Key, now time.Time) (*action, error) {
	der, err := k.sealer.Open(key.Sealed, []byte(key.ID))
	if err != nil {
		return nil, fmt.Errorf("keyring: key %s is sealed under a key neither ENCRYPTION_KEY nor ENCRYPTION_KEY_PREVIOUS holds: %w", key.ID, err)
	}
	sealed, err := k.sealer.Seal(der, []byte(key.ID))
	if err != nil {
		return nil, err
	}
	return &action{kid: key.ID, msg: &eventsv1.KeyResealed{KeyId: key.ID, SealedPrivateKey: sealed, At: timestamppb.New(now)}}, nil
}

func publish(kid string, now time.Time) *action {
	return &action{kid: kid, msg: &eventsv1.KeyPublished{KeyId: kid, At: timestamppb.New(now)}}
}

func activate(kid string, now time.Time) *action {
	return &action{kid: kid, msg: &eventsv1.KeyActivated{KeyId: kid, At: timestamppb.New(now)}}
}

func (k *Keyring) retire(kid string, now time.Time) *action {
	return &action{kid: kid, msg: &eventsv1.KeyRetired{KeyId: kid, At: timestamppb.New(now), RetainUntil: timestamppb.New(now.Add(k.cfg.Retention))}}
}

func destroy(kid string, now time.Time) *action {
	return &action{kid: kid, msg: &eventsv1.KeyDestroyed{KeyId: kid, At: timestamppb.New(now)}}
}
