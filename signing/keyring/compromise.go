package keyring

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/eventlog"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/keystate"
)

// The key-compromise command (see the package documentation): declare,
// contain (plan does it, from the log), revoke, resolve.

// Revoker revokes the token families whose access tokens a key signed;
// *issuer.Issuer implements it. It must be idempotent: a family already
// revoked counts for nothing and is no error.
type Revoker interface {
	RevokeSignedBy(ctx context.Context, kid string) (int, error)
}

// Containment is the outcome of a key compromise.
type Containment struct {
	// Rotation.KeyID is the key that signs now, Previous the compromised
	// key, ActivatesAt when the new key was activated.
	Rotation
	// RevokedFamilies is how many families this call revoked.
	RevokedFamilies int
}

// Responder carries out key compromises: the keyring's immediate rotation
// and the revocation of the families the compromised key signed, as one
// command recorded in the log before it acts. It is safe for concurrent
// use, on any number of replicas.
type Responder struct {
	k       *Keyring
	revoker Revoker
}

// NewResponder returns a Responder that rotates keys with k and revokes
// families with r.
func NewResponder(k *Keyring, r Revoker) *Responder { return &Responder{k: k, revoker: r} }

// Compromise declares the active key compromised and contains it: it
// appends key.compromise_declared (with revokeFamilies) before it acts,
// then activates a fresh key at once, destroys the compromised one at once
// (with any key staged before the declaration), with revokeFamilies
// revokes every active family holding access tokens the compromised key
// signed (reason key_compromise), and appends key.compromise_resolved. A
// compromise of the same key already declared and not resolved is joined,
// not declared again.
//
// If it fails part-way, the declaration stays in the log: the key
// lifecycle of any replica (Keyring.Tick, EnsureActive) finishes the
// rotation, and Resume the rest. It returns signing.ErrNoActiveKey if no
// key is active, and with a Provisioner backend ErrNoNewKey, before it
// declares anything, if the operator has not supplied the key that
// replaces the compromised one; other errors are the log's or the
// Revoker's.
func (r *Responder) Compromise(ctx context.Context, revokeFamilies bool) (Containment, error) {
	return r.k.compromise(ctx, r.revoker, revokeFamilies)
}

// Resume finishes every compromise declared and not resolved (one whose
// command crashed, here or on another replica): the rotation if it is not
// done, the revocation of families if it was asked for, the resolution.
// It is idempotent, and cheap when nothing is pending (no I/O). Run it at
// start-up, before serving, and then periodically. Errors of several
// compromises are joined.
func (r *Responder) Resume(ctx context.Context) error {
	if len(r.k.set.PendingCompromises()) == 0 {
		return nil
	}
	if _, err := r.k.catchUp(ctx); err != nil {
		return err
	}
	var errs []error
	for _, c := range r.k.set.PendingCompromises() {
		if _, err := r.k.finish(ctx, c, r.revoker); err != nil {
			errs = append(errs, fmt.Errorf("keyring: resume the compromise of key %s: %w", c.KeyID, err))
		}
	}
	return errors.Join(errs...)
}

// compromise is Responder.Compromise, or with r nil (Rotate) everything
// but the revocation: a compromise that asks for one is left pending.
func (k *Keyring) compromise(ctx context.Context, r Revoker, revokeFamilies bool) (Containment, error) {
	// With provisioned keys, a compromise is declared only once the
	// operator has supplied the key that replaces the compromised one:
	// declared without it, no replica could finish it.
	if o := k.offered(ctx); o != nil {
		if _, err := k.catchUp(ctx); err != nil {
			return Containment{}, err
		}
		if err := k.usable(o); err != nil {
			return Containment{}, err
		}
	}
	c, err := k.declare(ctx, revokeFamilies)
	if err != nil {
		return Containment{}, err
	}
	return k.finish(ctx, c, r)
}

// declare appends the compromise of the log's active key, or joins the
// pending one of that key, and returns it as the projection holds it.
func (k *Keyring) declare(ctx context.Context, revokeFamilies bool) (keystate.Compromise, error) {
	for attempt := 0; attempt < 64; attempt++ {
		head, err := k.catchUp(ctx)
		if err != nil {
			return keystate.Compromise{}, err
		}
		cur, ok := k.set.ActiveKey()
		if !ok {
			return keystate.Compromise{}, signing.ErrNoActiveKey
		}
		if c, ok := k.pendingCompromise(cur.ID); ok && (c.RevokeFamilies || !revokeFamilies) {
			return c, nil
		}
		err = k.append(ctx, cur.ID, &eventsv1.KeyCompromiseDeclared{KeyId: cur.ID, At: timestamppb.New(k.cfg.Now()), RevokeFamilies: revokeFamilies},
			eventlog.Expect{Filter: k.log.Subjects().Keys(), Seq: head})
		if err != nil && !errors.Is(err, eventlog.ErrConflict) {
			return keystate.Compromise{}, err
		}
		// Appended, or another key event won: read it back and decide again.
	}
	return keystate.Compromise{}, errors.New("keyring: the compromise declaration did not settle after 64 attempts")
}

// finish carries compromise c through: the lifecycle converges (plan
// contains every pending compromise), families are revoked if c asks for
// it and r is set, and the resolution is appended, unless another replica
// appended it first.
func (k *Keyring) finish(ctx context.Context, c keystate.Compromise, r Revoker) (Containment, error) {
	out := Containment{Rotation: Rotation{Previous: c.KeyID}}
	if err := k.converge(ctx, &goal{}); err != nil {
		return out, err
	}
	if cur, ok := k.set.ActiveKey(); ok {
		out.KeyID, out.ActivatesAt = cur.ID, cur.ActivatedAt
	}
	revoked := false
	for attempt := 0; attempt < 64; attempt++ {
		head, err := k.catchUp(ctx)
		if err != nil {
			return out, err
		}
		p, ok := k.pendingCompromise(c.KeyID)
		if !ok {
			return out, nil // resolved, by another replica or an earlier run
		}
		if p.RevokeFamilies && !revoked {
			if r == nil {
				return out, nil // Rotate has no revoker: a Responder resolves it
			}
			// The family index has applied every event up to the key's
			// destruction (catchUp waited for it), so it lists every
			// family the key signed while it was in the JWKS.
			n, err := r.RevokeSignedBy(ctx, c.KeyID)
			out.RevokedFamilies += n
			if err != nil {
				return out, fmt.Errorf("keyring: revoke the families key %s signed: %w", c.KeyID, err)
			}
			revoked = true
			continue
		}
		err = k.append(ctx, c.KeyID, &eventsv1.KeyCompromiseResolved{KeyId: c.KeyID, At: timestamppb.New(k.cfg.Now()),
			NewKeyId: out.KeyID, RevokedFamilies: int64(out.RevokedFamilies)}, eventlog.Expect{Filter: k.log.Subjects().Keys(), Seq: head})
		if err == nil {
			return out, nil
		}
		if !errors.Is(err, eventlog.ErrConflict) {
			return out, err
		}
	}
	return out, fmt.Errorf("keyring: the compromise of key %s did not settle after 64 attempts", c.KeyID)
}

func (k *Keyring) pendingCompromise(kid string) (keystate.Compromise, bool) {
	for _, c := range k.set.PendingCompromises() {
		if c.KeyID == kid {
			return c, true
		}
	}
	return keystate.Compromise{}, false
}

// contain returns the next key event toward containing compromise c, or
// nil once a fresh key signs, c's key is destroyed (out of the JWKS), and
// no key staged before the declaration is left to take over at its
// activation time. current is the active key. A fresh key is one
// generated after the declaration, or the key the operator provisioned
// (o), staged before it or not: the operator vouches for that one.
func (k *Keyring) contain(c keystate.Compromise, keys []keystate.Key, current keystate.Key, hasCurrent bool, now time.Time, o *offer) (*action, error) {
	fresh := func(key keystate.Key) bool {
		return key.ID != c.KeyID && (key.GeneratedSeq >= c.Seq || o.names(key.ID))
	}
	if !hasCurrent || !fresh(current) {
		for _, key := range keys {
			if key.Fallback || !fresh(key) {
				continue
			}
			switch key.Status {
			case eventsv1.KeyStatus_KEY_STATUS_GENERATED:
				return publish(key.ID, now), nil
			case eventsv1.KeyStatus_KEY_STATUS_PUBLISHED:
				return activate(key.ID, now), nil
			}
		}
		return k.generate(now, o)
	}
	for _, key := range keys {
		if key.Fallback || key.Status == eventsv1.KeyStatus_KEY_STATUS_DESTROYED {
			continue
		}
		staged := key.Status == eventsv1.KeyStatus_KEY_STATUS_GENERATED || key.Status == eventsv1.KeyStatus_KEY_STATUS_PUBLISHED
		if key.ID == c.KeyID || staged && !fresh(key) {
			return destroy(key.ID, now), nil
		}
	}
	return nil, nil
}
