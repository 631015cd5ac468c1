// Package keyring drives the lifecycle of signing keys through the event
// log (generated → published → activated → retired → destroyed) and hands
// the issuer the Signer of the active key.
//
// Key events are serialized: every one is appended with compare-and-set on
// the single filter token.key.>, so two replicas that race to create or
// rotate a key produce one change; the loser re-reads and adopts the
// winner's key. The key projection (package projections) is the source of
// the JWKS and of the active key on every replica.
//
// This version creates the first key of the configured algorithm at start
// (published and activated at once: no verifier can have cached a JWKS
// yet), and rotates to a new key when the configured algorithm changes,
// retiring the old key, which stays in the JWKS. Scheduled rotation with
// pre-publication and remote backends come with the signing-keys issue.
package keyring

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/projections"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/local"
	"github.com/auth-platform/tokenservice/signing/seal"
)

// BackendLocal names the local backend in key events.
const BackendLocal = "local"

// Waiter lets the keyring wait for the projections to apply a sequence.
type Waiter interface {
	WaitFor(ctx context.Context, seq uint64) error
}

// Config configures a Keyring.
type Config struct {
	// Retention is how long a retired key stays in the JWKS. Default
	// 24 hours.
	Retention time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Rand is the source of key material. Required (crypto/rand.Reader).
	Rand io.Reader
}

// Keyring is safe for concurrent use.
type Keyring struct {
	log    *eventlog.Log
	set    *projections.Set
	waiter Waiter
	sealer *seal.Sealer
	cfg    Config

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
func New(log *eventlog.Log, set *projections.Set, waiter Waiter, sealer *seal.Sealer, cfg Config) (*Keyring, error) {
	if cfg.Rand == nil {
		return nil, errors.New("keyring: Config.Rand is required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Retention <= 0 {
		cfg.Retention = 24 * time.Hour
	}
	return &Keyring{log: log, set: set, waiter: waiter, sealer: sealer, cfg: cfg, signers: map[string]signing.Signer{}}, nil
}

// Active returns the signer of the active key. It returns
// signing.ErrNoActiveKey if there is none.
func (k *Keyring) Active(ctx context.Context) (signing.Signer, error) {
	key, ok := k.set.ActiveKey()
	if !ok {
		return nil, signing.ErrNoActiveKey
	}
	return k.signer(key)
}

func (k *Keyring) signer(key projections.Key) (signing.Signer, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if s, ok := k.signers[key.ID]; ok {
		return s, nil
	}
	if key.Backend != BackendLocal {
		return nil, fmt.Errorf("keyring: key %s: backend %q not configured", key.ID, key.Backend)
	}
	der, err := k.sealer.Open(key.Sealed, []byte(key.ID))
	if err != nil {
		return nil, fmt.Errorf("keyring: unseal key %s (is ENCRYPTION_KEY the one it was sealed with?): %w", key.ID, err)
	}
	s, err := local.Parse(key.Algorithm, der)
	if err != nil {
		return nil, fmt.Errorf("keyring: key %s: %w", key.ID, err)
	}
	if s.KeyID() != key.ID {
		return nil, fmt.Errorf("keyring: key %s: sealed key has ID %s", key.ID, s.KeyID())
	}
	k.signers[key.ID] = s
	return s, nil
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

// EnsureActive makes sure a key of alg is active, creating one (and
// retiring the previous active key) if not. Concurrent callers on any
// replica end with the same single active key.
func (k *Keyring) EnsureActive(ctx context.Context, alg signing.Algorithm) (string, error) {
	for attempt := 0; attempt < 64; attempt++ {
		// Read the head of the key aggregate from the leader and let the
		// projection catch up with it, so the decision below sees every
		// key event and the CAS expectation is current.
		head := uint64(0)
		rec, err := k.log.LastConsistent(ctx, k.log.Subjects().Keys())
		switch {
		case err == nil:
			head = rec.Seq
		case !errors.Is(err, eventlog.ErrNotFound):
			return "", err
		}
		if err := k.waiter.WaitFor(ctx, head); err != nil {
			return "", fmt.Errorf("keyring: wait for key projection: %w", err)
		}
		done, err := k.step(ctx, alg, head)
		if err != nil && !errors.Is(err, eventlog.ErrConflict) {
			return "", err
		}
		if done {
			// Nothing left to do: the active key is of alg and alone.
			key, _ := k.set.ActiveKey()
			if _, err := k.signer(key); err != nil {
				return "", err
			}
			return key.ID, nil
		}
	}
	return "", errors.New("keyring: could not settle the active key after 64 steps")
}

// step appends the next lifecycle event toward "a key of alg is active,
// and no other key is", or reports done once that holds.
// The new key is activated before the old one is retired, so some key can
// sign at every moment.
func (k *Keyring) step(ctx context.Context, alg signing.Algorithm, head uint64) (done bool, err error) {
	keys, _ := k.set.Keys()
	current, hasCurrent := k.set.ActiveKey()
	var stale, pending *projections.Key
	for i := range keys {
		key := &keys[i]
		switch key.Status {
		case eventsv1.KeyStatus_KEY_STATUS_ACTIVE:
			if !hasCurrent || key.ID != current.ID {
				stale = key
			}
		case eventsv1.KeyStatus_KEY_STATUS_GENERATED, eventsv1.KeyStatus_KEY_STATUS_PUBLISHED:
			if key.Algorithm == alg && key.Backend == BackendLocal {
				pending = key // resume a rotation a crash interrupted
			}
		}
	}
	now := k.cfg.Now()
	expect := eventlog.Expect{Filter: k.log.Subjects().Keys(), Seq: head}
	switch {
	case stale != nil:
		// Superseded by a newer activation: retire it. It stays in the
		// JWKS for the retention so its tokens keep verifying.
		return false, k.append(ctx, stale.ID, projections.TypeKeyRetired, "retired", &eventsv1.KeyRetired{
			KeyId: stale.ID, At: timestamppb.New(now), RetainUntil: timestamppb.New(now.Add(k.cfg.Retention)),
		}, expect)
	case hasCurrent && current.Algorithm == alg:
		return true, nil
	case pending == nil:
		s, err := local.Generate(k.cfg.Rand, alg)
		if err != nil {
			return false, err
		}
		der, err := s.Marshal()
		if err != nil {
			return false, err
		}
		sealed, err := k.sealer.Seal(der, []byte(s.KeyID()))
		if err != nil {
			return false, err
		}
		j := s.PublicJWK()
		return false, k.append(ctx, s.KeyID(), projections.TypeKeyGenerated, "generated", &eventsv1.KeyGenerated{
			KeyId: s.KeyID(), Algorithm: string(alg), Backend: BackendLocal,
			PublicKey:        &eventsv1.PublicKey{Kty: j.Kty, Kid: j.Kid, Alg: j.Alg, N: j.N, E: j.E, Crv: j.Crv, X: j.X, Y: j.Y},
			SealedPrivateKey: sealed, At: timestamppb.New(now),
		}, expect)
	case pending.Status == eventsv1.KeyStatus_KEY_STATUS_GENERATED:
		return false, k.append(ctx, pending.ID, projections.TypeKeyPublished, "published",
			&eventsv1.KeyPublished{KeyId: pending.ID, At: timestamppb.New(now)}, expect)
	default:
		return false, k.append(ctx, pending.ID, projections.TypeKeyActivated, "activated",
			&eventsv1.KeyActivated{KeyId: pending.ID, At: timestamppb.New(now)}, expect)
	}
}

func (k *Keyring) append(ctx context.Context, kid, typ, event string, m proto.Message, expect eventlog.Expect) error {
	data, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	seq, err := k.log.Append(ctx, eventlog.Event{Subject: k.log.Subjects().Key(kid, event), Type: typ, Data: data}, expect)
	if err != nil {
		return fmt.Errorf("keyring: %s %s: %w", event, kid, err)
	}
	if err := k.waiter.WaitFor(ctx, seq); err != nil {
		return err
	}
	return nil
}
