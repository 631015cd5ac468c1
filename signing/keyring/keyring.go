package keyring

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/events"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/breaker"
	"github.com/auth-platform/tokenservice/signing/keystate"
	"github.com/auth-platform/tokenservice/signing/seal"
)

// BackendLocal names the local backend in key events.
const BackendLocal = "local"

// View is the key state the keyring decides from: the key projection of
// this replica (projections.Set implements it). Its methods must be safe
// for concurrent use and return copies.
type View interface {
	// ActiveKey returns the key that signs, if any.
	ActiveKey() (keystate.Key, bool)
	// Key returns key id, in any state.
	Key(id string) (keystate.Key, bool)
	// Keys returns every key, oldest first, and the sequence of the last
	// key event.
	Keys() ([]keystate.Key, uint64)
	// PendingKeyIntent returns the oldest key creation not finished yet.
	PendingKeyIntent() (keystate.Intent, bool)
	// PendingCompromises returns the declared key compromises not
	// resolved yet, oldest first.
	PendingCompromises() []keystate.Compromise
}

// Waiter lets the keyring wait for the View to apply a sequence.
type Waiter interface {
	WaitFor(ctx context.Context, seq uint64) error
}

// Config configures a Keyring.
type Config struct {
	// Algorithm is the algorithm of new keys. Default ES256.
	Algorithm signing.Algorithm
	// Retention is how long a retired key stays in the JWKS. Default
	// 24 hours.
	Retention time.Duration
	// Prepublish is how long a new key is in the JWKS before it signs: at
	// least the JWKS cache lifetime. Default 6 minutes.
	Prepublish time.Duration
	// RotationPeriod is how long a key signs before the next one takes
	// over; 0 disables scheduled rotation. Default 0. It does not apply
	// to a Provisioner backend: the operator rotates its keys.
	RotationPeriod time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Rand is the source of key material. Required (crypto/rand.Reader).
	Rand io.Reader
	// Backend makes the signing keys, or, if it is a Provisioner, offers
	// the keys the operator provisioned. Default the local backend.
	Backend Backend
	// Fallback keeps a local key published in the JWKS (never activated)
	// to sign while a remote Backend is unavailable. Default off.
	Fallback bool
	// Breaker configures the breaker in front of a remote backend's
	// signers (its Observer is chained with the keyring's own).
	Breaker breaker.Config
	// OnError, if set, is told of the errors of Run's work (recording a
	// fallback_engaged event), which nobody else waits for. It must not
	// block. Default: none.
	OnError func(error)
}

// Keyring is safe for concurrent use.
type Keyring struct {
	log    *eventlog.Log
	set    View
	waiter Waiter
	sealer *seal.Sealer
	cfg    Config

	local    Backend
	backends map[string]Backend
	engaged  atomic.Bool   // a fallback_engaged event was recorded for the current outage
	fellBack chan struct{} // the breaker opened: Run records fallback_engaged

	mu      sync.Mutex
	signers map[string]signing.Signer
	publics sync.Map // kid → publicKey
}

type publicKey struct {
	key crypto.PublicKey
	alg signing.Algorithm
}

// New returns a keyring over log whose key state is read from set, kept
// current by waiter.
func New(log *eventlog.Log, set View, waiter Waiter, sealer *seal.Sealer, cfg Config) (*Keyring, error) {
	if cfg.Rand == nil {
		return nil, errors.New("keyring: Config.Rand is required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Retention <= 0 {
		cfg.Retention = 24 * time.Hour
	}
	if cfg.Prepublish <= 0 {
		cfg.Prepublish = 6 * time.Minute
	}
	if cfg.Algorithm == "" {
		cfg.Algorithm = signing.ES256
	}
	if _, err := signing.Method(cfg.Algorithm); err != nil {
		return nil, err
	}
	loc := Local{Sealer: sealer, Rand: cfg.Rand}
	if cfg.Backend == nil {
		cfg.Backend = loc
	}
	backends := map[string]Backend{BackendLocal: loc, cfg.Backend.Name(): cfg.Backend}
	return &Keyring{log: log, set: set, waiter: waiter, sealer: sealer, cfg: cfg, local: loc, backends: backends,
		signers: map[string]signing.Signer{}, fellBack: make(chan struct{}, 1)}, nil
}

// Active returns the signer of the active key. It returns
// signing.ErrNoActiveKey if there is none.
func (k *Keyring) Active(ctx context.Context) (signing.Signer, error) {
	key, ok := k.set.ActiveKey()
	if !ok {
		return nil, signing.ErrNoActiveKey
	}
	s, err := k.signer(key)
	if err != nil {
		return nil, err
	}
	// While the primary backend's breaker is open, sign with the
	// fallback key rather than fail (or wait) on every request.
	if b, ok := s.(*breaker.Signer); ok && b.Open() && k.cfg.Fallback {
		if fb, ok := k.Fallback(); ok {
			return fb, nil
		}
	}
	return s, nil
}

func (k *Keyring) signer(key keystate.Key) (signing.Signer, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if s, ok := k.signers[key.ID]; ok {
		return s, nil
	}
	b, ok := k.backends[key.Backend]
	if !ok {
		return nil, fmt.Errorf("keyring: key %s: backend %q not configured", key.ID, key.Backend)
	}
	s, err := b.Open(context.Background(), key.Stored())
	if err != nil {
		return nil, err
	}
	if s.KeyID() != key.ID {
		return nil, fmt.Errorf("keyring: key %s: the backend's key has ID %s", key.ID, s.KeyID())
	}
	if b.Remote() {
		cfg := k.cfg.Breaker
		cfg.Name = key.ID
		cfg.Observer = breakerObserver{k: k, next: k.cfg.Breaker.Observer}
		s = breaker.New(s, cfg)
	}
	if key.Fallback {
		s = FallbackSigner{s}
	}
	k.signers[key.ID] = s
	return s, nil
}

// FallbackSigner marks the fallback key's signer: the issuer gives tokens
// it signs a shorter lifetime.
type FallbackSigner struct{ signing.Signer }

// IsFallback reports true.
func (FallbackSigner) IsFallback() bool { return true }

// Fallback returns the signer of the fallback key, if fallback is on and
// one is published.
func (k *Keyring) Fallback() (signing.Signer, bool) {
	if !k.cfg.Fallback {
		return nil, false
	}
	keys, _ := k.set.Keys()
	for i := len(keys) - 1; i >= 0; i-- {
		if keys[i].Fallback && keys[i].Status == eventsv1.KeyStatus_KEY_STATUS_PUBLISHED {
			s, err := k.signer(keys[i])
			return s, err == nil
		}
	}
	return nil, false
}

// PublicKey returns the public key and algorithm of key kid if it is in
// the JWKS (published, active or retired).
func (k *Keyring) PublicKey(kid string) (crypto.PublicKey, signing.Algorithm, bool) {
	if v, ok := k.publics.Load(kid); ok {
		pk := v.(publicKey)
		if key, ok := k.set.Key(kid); ok && inJWKS(key.Status) {
			return pk.key, pk.alg, true
		}
		return nil, "", false
	}
	key, ok := k.set.Key(kid)
	if !ok || !inJWKS(key.Status) {
		return nil, "", false
	}
	pub, err := key.JWK.PublicKey()
	if err != nil {
		return nil, "", false
	}
	k.publics.Store(kid, publicKey{key: pub, alg: key.Algorithm})
	return pub, key.Algorithm, true
}

func inJWKS(s eventsv1.KeyStatus) bool {
	return s == eventsv1.KeyStatus_KEY_STATUS_PUBLISHED || s == eventsv1.KeyStatus_KEY_STATUS_ACTIVE || s == eventsv1.KeyStatus_KEY_STATUS_RETIRED
}

// goal says what a converge loop works toward beyond the schedule and
// the compromises declared in the log.
type goal struct {
	stage bool // make sure a next key is staged (Rotate)
}

// EnsureActive makes sure some key is active, creating the first one if
// the log has none, and returns the active key's ID. A key of another
// algorithm than Config.Algorithm stays active; Tick stages the change.
// Concurrent callers on any replica end with the same single active key.
func (k *Keyring) EnsureActive(ctx context.Context) (string, error) {
	if err := k.converge(ctx, &goal{}); err != nil {
		return "", err
	}
	key, ok := k.set.ActiveKey()
	if !ok {
		return "", signing.ErrNoActiveKey
	}
	if _, err := k.signer(key); err != nil {
		return "", err
	}
	k.Fallback() // opened now, while whatever sealed it can be reached
	return key.ID, nil
}

// Tick moves the key lifecycle along at the current time (see the package
// documentation). Every replica may call it; key events are serialized,
// so they agree on one outcome. It opens the fallback key ahead of need:
// sealed with a crypto service's data key, it could not be opened during
// the outage it is for.
func (k *Keyring) Tick(ctx context.Context) error {
	if err := k.converge(ctx, &goal{}); err != nil {
		return err
	}
	k.Fallback()
	return nil
}

// Rotation is the outcome of Rotate.
type Rotation struct {
	// KeyID is the new key; Previous the key it replaces.
	KeyID, Previous string
	// ActivatesAt is when the new key signs (now, for an immediate one).
	ActivatesAt time.Time
}

// Rotate stages a new key that activates after the pre-publication (or
// returns the one already staged). With immediate, for a compromised key,
// it is Responder.Compromise without the revocation of families: the
// compromise of the active key is declared in the log first, then a new
// key is activated at once and the old one destroyed at once (it leaves
// the JWKS, so its tokens stop verifying), then the compromise is
// resolved; a pending compromise of that key that asks for the revocation
// is joined and left for a Responder to resolve. It returns
// signing.ErrNoActiveKey if no key is active to replace, and, with a
// Provisioner backend, ErrNoNewKey if the operator has not supplied a key
// the log does not hold as active, retired or destroyed.
func (k *Keyring) Rotate(ctx context.Context, immediate bool) (Rotation, error) {
	if immediate {
		c, err := k.compromise(ctx, nil, false)
		return c.Rotation, err
	}
	// The key to replace is the log's active key, not what a lagging
	// projection shows.
	if _, err := k.catchUp(ctx); err != nil {
		return Rotation{}, err
	}
	prev, _ := k.set.ActiveKey()
	if err := k.converge(ctx, &goal{stage: true}); err != nil {
		return Rotation{}, err
	}
	next, ok := k.staged()
	if !ok {
		return Rotation{}, errors.New("keyring: no key staged after rotation")
	}
	return Rotation{KeyID: next.ID, Previous: prev.ID, ActivatesAt: next.PublishedAt.Add(k.cfg.Prepublish)}, nil
}

// staged returns the key waiting to be activated, if any.
func (k *Keyring) staged() (keystate.Key, bool) {
	keys, _ := k.set.Keys()
	for _, key := range keys {
		if key.Status == eventsv1.KeyStatus_KEY_STATUS_GENERATED || key.Status == eventsv1.KeyStatus_KEY_STATUS_PUBLISHED {
			return key, true
		}
	}
	return keystate.Key{}, false
}

// offer is what a Provisioner backend offered when a converge began: the
// key the operator provisioned, or why it could not be read.
type offer struct {
	key signing.StoredKey
	err error
}

// names reports whether o offers key id (nil offers nothing).
func (o *offer) names(id string) bool { return o != nil && o.err == nil && o.key.ID == id }

// provisionedTimeout bounds the question to a Provisioner.
const provisionedTimeout = 10 * time.Second

// offered asks a Provisioner backend which key the operator provisioned;
// it returns nil for a backend that creates its keys. It is the one call
// to the backend a converge makes before it decides (plan is then a pure
// function of the log, the clock and the offer).
func (k *Keyring) offered(ctx context.Context) *offer {
	p, ok := k.cfg.Backend.(Provisioner)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, provisionedTimeout)
	defer cancel()
	key, err := p.Provisioned(ctx, k.cfg.Algorithm)
	switch {
	case err != nil:
		err = fmt.Errorf("keyring: read the provisioned key: %w", err)
	case key.Algorithm != k.cfg.Algorithm || key.ID == "" || key.Ref == "":
		err = fmt.Errorf("keyring: the provisioned key %q (kid %q, %s) is not a key of %s with a reference", key.Ref, key.ID, key.Algorithm, k.cfg.Algorithm)
	}
	return &offer{key: key, err: err}
}

// usable returns nil if o offers a key that can take over from the active
// one: not in the log yet, or staged (generated or published, not yet
// active); otherwise ErrNoNewKey or the error of reading the offer.
func (k *Keyring) usable(o *offer) error {
	if o.err != nil {
		return o.err
	}
	key, ok := k.set.Key(o.key.ID)
	if !ok || !key.Fallback && (key.Status == eventsv1.KeyStatus_KEY_STATUS_GENERATED || key.Status == eventsv1.KeyStatus_KEY_STATUS_PUBLISHED) {
		return nil
	}
	return fmt.Errorf("%w: the provisioned key %s (kid %s) is %s already", ErrNoNewKey, o.key.Ref, o.key.ID, statusName(key.Status))
}

func statusName(s eventsv1.KeyStatus) string {
	switch s {
	case eventsv1.KeyStatus_KEY_STATUS_ACTIVE:
		return "active"
	case eventsv1.KeyStatus_KEY_STATUS_RETIRED:
		return "retired"
	case eventsv1.KeyStatus_KEY_STATUS_DESTROYED:
		return "destroyed"
	case eventsv1.KeyStatus_KEY_STATUS_GENERATED, eventsv1.KeyStatus_KEY_STATUS_PUBLISHED:
		return "staged"
	}
	return "in the log"
}

// converge appends the next lifecycle event toward g until there is none
// left. Each step reads the head of the key aggregate from the leader and
// lets the projection catch up, so its decision sees every key event and
// its compare-and-set expectation is current; a lost race is re-decided.
// With a Provisioner backend it asks once, first, for the provisioned key;
// if that fails, the steps that need no new key are still taken and the
// error is returned at the end.
func (k *Keyring) converge(ctx context.Context, g *goal) error {
	o := k.offered(ctx)
	for attempt := 0; attempt < 64; attempt++ {
		head, err := k.catchUp(ctx)
		if err != nil {
			return err
		}
		act, err := k.plan(g, o)
		if err != nil {
			return err
		}
		if act == nil {
			if o != nil {
				return o.err
			}
			return nil
		}
		if act.run != nil {
			if err := act.run(ctx); err != nil {
				return err
			}
		}
		err = k.append(ctx, act.kid, act.msg, eventlog.Expect{Filter: k.log.Subjects().Keys(), Seq: head})
		if errors.Is(err, eventlog.ErrConflict) && act.undo != nil {
			// Another replica recorded the intent's key first. If it is
			// not the key we made, ours would be an orphan: delete it.
			if _, werr := k.catchUp(ctx); werr != nil {
				return werr
			}
			if key, ok := k.set.Key(act.kid); !ok || key.Status == eventsv1.KeyStatus_KEY_STATUS_UNSPECIFIED {
				if uerr := act.undo(ctx); uerr != nil {
					return fmt.Errorf("keyring: discard a key that lost the race: %w", uerr)
				}
			}
		}
		if err != nil && !errors.Is(err, eventlog.ErrConflict) {
			return err
		}
	}
	return errors.New("keyring: the key lifecycle did not settle after 64 steps")
}

// catchUp reads the head of the key aggregate from the leader and waits
// until the projection applied it, so a decision sees every key event; it
// returns the head, the compare-and-set expectation of the next one.
func (k *Keyring) catchUp(ctx context.Context) (uint64, error) {
	head := uint64(0)
	rec, err := k.log.LastConsistent(ctx, k.log.Subjects().Keys())
	switch {
	case err == nil:
		head = rec.Seq
	case !errors.Is(err, eventlog.ErrNotFound):
		return 0, err
	}
	if err := k.waiter.WaitFor(ctx, head); err != nil {
		return 0, fmt.Errorf("keyring: wait for key projection: %w", err)
	}
	return head, nil
}

func (k *Keyring) append(ctx context.Context, kid string, m proto.Message, expect eventlog.Expect) error {
	ev, err := events.Key(k.log.Subjects(), kid, m)
	if err != nil {
		return err
	}
	seq, err := k.log.Append(ctx, ev, expect)
	if err != nil {
		return fmt.Errorf("keyring: %s %s: %w", ev.Type, kid, err)
	}
	if err := k.waiter.WaitFor(ctx, seq); err != nil {
		return err
	}
	return nil
}
