package keyring_test

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	"github.com/auth-platform/tokenservice/eventlog/events"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
	"github.com/auth-platform/tokenservice/projections"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/keyring"
	"github.com/auth-platform/tokenservice/signing/local"
)

// The keyring decides from the replica's key projection.
var _ keyring.View = (*projections.Set)(nil)

// TestReplicasRaceToCreateTheKey: four replicas start at once on an empty
// log; they end with one active key, the same everywhere.
func TestReplicasRaceToCreateTheKey(t *testing.T) {
	node := eventlogtest.SingleNode(t)
	clock := issuertest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	envs := startReplicas(t, node, 4, issuertest.Options{Clock: clock, Algorithm: signing.EdDSA})
	for _, e := range envs {
		e.CaughtUp(t)
	}
	keys, _ := envs[0].Set.Keys()
	if len(keys) != 1 {
		t.Fatalf("%d keys after the race, want 1", len(keys))
	}
	for i, e := range envs {
		k, ok := e.Set.ActiveKey()
		if !ok || k.ID != keys[0].ID {
			t.Fatalf("replica %d: active %v %v, want %s", i, k.ID, ok, keys[0].ID)
		}
		if e.Set.Digest() != envs[0].Set.Digest() {
			t.Fatalf("replica %d holds other key state", i)
		}
	}
}

// TestAlgorithmChangeRotates: a replica configured for another algorithm
// stages a key of it; the key signs only after its pre-publication, and
// the old key is retired but stays in the JWKS, so its tokens keep
// verifying.
func TestAlgorithmChangeRotates(t *testing.T) {
	node := eventlogtest.SingleNode(t)
	clock := issuertest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	env := issuertest.New(t, issuertest.Options{Conn: node.Conn, Clock: clock, Algorithm: signing.ES256})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	old, err := env.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "a", ClientID: "c", Audience: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := node.Embedded.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ps := issuertest.New(t, issuertest.Options{Conn: nc, Clock: clock, Algorithm: signing.PS256, Prepublish: 6 * time.Minute})
	if err := ps.Keyring.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	next, ok := stagedKey(ps)
	if !ok || next.Algorithm != signing.PS256 || len(ps.Set.JWKS()) != 2 {
		t.Fatalf("no PS256 key staged in the JWKS: %+v", next)
	}
	if k, _ := ps.Set.ActiveKey(); k.Algorithm != signing.ES256 {
		t.Fatal("the new key signs before its pre-publication")
	}
	clock.Advance(6 * time.Minute)
	if err := ps.Keyring.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	env.CaughtUp(t)
	keys, _ := env.Set.Keys()
	if len(keys) != 2 || keys[0].Status != eventsv1.KeyStatus_KEY_STATUS_RETIRED || keys[1].Status != eventsv1.KeyStatus_KEY_STATUS_ACTIVE {
		for _, k := range keys {
			t.Logf("key %s %s %v", k.ID, k.Algorithm, k.Status)
		}
		t.Fatal("want the old key retired and the new one active")
	}
	if _, err := env.Issuer.VerifyAccessToken(old.AccessToken, true); err != nil {
		t.Fatalf("token of the retired key: %v", err)
	}
	fresh, err := env.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "a", ClientID: "c", Audience: []string{"api"}})
	if err != nil || fresh.KeyID != next.ID {
		t.Fatalf("new token signed by %s (%v), want %s", fresh.KeyID, err, next.ID)
	}
	// Nothing more to do.
	before := env.LastSeq(t)
	if err := ps.Keyring.Tick(ctx); err != nil || env.LastSeq(t) != before {
		t.Fatalf("idle Tick: %v, %d new events", err, env.LastSeq(t)-before)
	}
}

func stagedKey(e *issuertest.Env) (projections.Key, bool) {
	keys, _ := e.Set.Keys()
	for _, k := range keys {
		if k.Status == eventsv1.KeyStatus_KEY_STATUS_PUBLISHED || k.Status == eventsv1.KeyStatus_KEY_STATUS_GENERATED {
			return k, true
		}
	}
	return projections.Key{}, false
}

// TestScheduledRotationWithCachingVerifier runs the clock over several
// rotation periods with two replicas ticking. A verifier that caches the
// JWKS for its max-age never meets an unknown kid, and every token keeps
// verifying until it expires (retention outlives access tokens).
func TestScheduledRotationWithCachingVerifier(t *testing.T) {
	const (
		maxAge    = 5 * time.Minute
		prepub    = 6 * time.Minute
		period    = 12 * time.Hour
		retention = time.Hour
		accessTTL = 15 * time.Minute
		step      = 2 * time.Minute
	)
	node := eventlogtest.SingleNode(t)
	clock := issuertest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	opts := issuertest.Options{Conn: node.Conn, Clock: clock, Algorithm: signing.EdDSA, Prepublish: prepub,
		RotationPeriod: period, Retention: retention, AccessTTL: accessTTL}
	a := issuertest.New(t, opts)
	nc, err := node.Embedded.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	opts.Conn = nc
	b := issuertest.New(t, opts)
	ctx := context.Background()

	cache, cachedAt := jwksKids(a), clock.Now()
	type issued struct {
		token string
		exp   time.Time
	}
	var live []issued
	rotations := map[string]bool{}
	for clock.Now().Before(time.Date(2026, 1, 2, 13, 0, 0, 0, time.UTC)) {
		clock.Advance(step)
		for _, e := range []*issuertest.Env{a, b} {
			if err := e.Keyring.Tick(ctx); err != nil {
				t.Fatal(err)
			}
		}
		a.CaughtUp(t)
		if clock.Now().Sub(cachedAt) >= maxAge {
			cache, cachedAt = jwksKids(a), clock.Now()
		}
		tok, err := a.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "s", ClientID: "c", Audience: []string{"api"}})
		if err != nil {
			t.Fatal(err)
		}
		rotations[tok.KeyID] = true
		if !cache[tok.KeyID] {
			t.Fatalf("at %s a token is signed by %s, unknown to a JWKS cached at %s", clock.Now(), tok.KeyID, cachedAt)
		}
		live = append(live, issued{tok.AccessToken, tok.AccessExpiresAt})
		kept := live[:0]
		for _, l := range live {
			if !clock.Now().Before(l.exp) {
				continue
			}
			if _, err := a.Issuer.VerifyAccessToken(l.token, true); err != nil {
				t.Fatalf("at %s a token that expires at %s no longer verifies: %v", clock.Now(), l.exp, err)
			}
			kept = append(kept, l)
		}
		live = kept
	}
	keys, _ := a.Set.Keys()
	destroyed := 0
	for _, k := range keys {
		if k.Status == eventsv1.KeyStatus_KEY_STATUS_DESTROYED {
			destroyed++
		}
	}
	if len(rotations) < 3 || destroyed < 2 {
		t.Fatalf("%d keys signed and %d were destroyed over 37 hours with a 12-hour period", len(rotations), destroyed)
	}
	// Both replicas' projections applied the whole log: same keys.
	a.CaughtUp(t)
	b.CaughtUp(t)
	if a.Set.Digest() != b.Set.Digest() {
		t.Fatal("the replicas disagree on the keys")
	}
}

func jwksKids(e *issuertest.Env) map[string]bool {
	out := map[string]bool{}
	for _, j := range e.Set.JWKS() {
		out[j.Kid] = true
	}
	return out
}

// TestImmediateRotation: a compromised key is replaced at once, leaves the
// JWKS at once, and the families it signed for can be revoked in one call.
func TestImmediateRotation(t *testing.T) {
	env := issuertest.New(t, issuertest.Options{Algorithm: signing.ES256})
	ctx := context.Background()
	toks := generate(t, env, 3)
	r, err := env.Keyring.Rotate(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if r.Previous != toks[0].KeyID || r.KeyID == r.Previous {
		t.Fatalf("rotation %+v", r)
	}
	if cur, _ := env.Set.ActiveKey(); cur.ID != r.KeyID {
		t.Fatal("the new key does not sign at once")
	}
	if jwksKids(env)[r.Previous] {
		t.Fatal("the compromised key is still in the JWKS")
	}
	if _, err := env.Issuer.VerifyAccessToken(toks[0].AccessToken, true); err == nil {
		t.Fatal("a token of the compromised key still verifies")
	}
	n, err := env.Issuer.RevokeSignedBy(ctx, r.Previous)
	if err != nil || n != 3 {
		t.Fatalf("revoked %d families (%v), want 3", n, err)
	}
	for _, tok := range toks {
		if _, err := env.Issuer.Refresh(ctx, issuer.RefreshRequest{RefreshToken: tok.RefreshToken, ClientID: "c"}); !errors.Is(err, issuer.ErrFamilyRevoked) {
			t.Fatalf("refresh after the compromise: %v", err)
		}
	}
}

// TestResumesInterruptedCreation: a crash after "generated" (before
// "activated") leaves a key that the next start adopts instead of making
// another.
func TestResumesInterruptedCreation(t *testing.T) {
	node := eventlogtest.SingleNode(t)
	log := eventlogtest.OpenLog(t, node.Conn, eventlog.Config{})
	s, err := local.Generate(rand.Reader, signing.ES384)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := s.Marshal()
	env0 := issuertest.New(t, issuertest.Options{Conn: node.Conn, Algorithm: signing.ES256})
	sealed, err := env0.Sealer.Seal(der, []byte(s.KeyID()))
	if err != nil {
		t.Fatal(err)
	}
	j := s.PublicJWK()
	data, _ := proto.Marshal(&eventsv1.KeyGenerated{KeyId: s.KeyID(), Algorithm: "ES384", Backend: "local",
		PublicKey:        &eventsv1.PublicKey{Kty: j.Kty, Kid: j.Kid, Alg: j.Alg, Crv: j.Crv, X: j.X, Y: j.Y},
		SealedPrivateKey: sealed, At: timestamppb.Now()})
	ctx := context.Background()
	head, err := log.LastConsistent(ctx, log.Subjects().Keys())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := log.Append(ctx, eventlog.Event{Subject: log.Subjects().Key(s.KeyID(), "generated"), Type: events.TypeKeyGenerated, Data: data},
		eventlog.Expect{Filter: log.Subjects().Keys(), Seq: head.Seq}); err != nil {
		t.Fatal(err)
	}
	// The "restart": a replica configured for ES384 adopts the
	// interrupted key instead of making another.
	env := issuertest.New(t, issuertest.Options{Conn: node.Conn, Algorithm: signing.ES384, Prepublish: time.Minute})
	if err := env.Keyring.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	k, ok := stagedKey(env)
	if !ok || k.ID != s.KeyID() || k.Status != eventsv1.KeyStatus_KEY_STATUS_PUBLISHED {
		t.Fatalf("staged key %s %v, want the interrupted %s published", k.ID, k.Status, s.KeyID())
	}
	keys, _ := env.Set.Keys()
	if len(keys) != 2 {
		t.Fatalf("%d keys, want 2 (the active ES256 one and the adopted ES384 one)", len(keys))
	}
}

// TestReplicasRaceToRotate: four replicas asked to rotate at once stage
// one key between them.
func TestReplicasRaceToRotate(t *testing.T) {
	node := eventlogtest.SingleNode(t)
	clock := issuertest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	var envs []*issuertest.Env
	for range 4 {
		nc, err := node.Embedded.Connect()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		envs = append(envs, issuertest.New(t, issuertest.Options{Conn: nc, Clock: clock, Algorithm: signing.EdDSA}))
	}
	var wg sync.WaitGroup
	got := make([]string, len(envs))
	for i, e := range envs {
		wg.Go(func() {
			r, err := e.Keyring.Rotate(context.Background(), false)
			if err != nil {
				t.Error(err)
				return
			}
			got[i] = r.KeyID
		})
	}
	wg.Wait()
	envs[0].CaughtUp(t)
	keys, _ := envs[0].Set.Keys()
	if len(keys) != 2 {
		t.Fatalf("%d keys after four concurrent rotations, want 2 (one active, one staged)", len(keys))
	}
	for i := range got {
		if got[i] != keys[1].ID {
			t.Fatalf("replica %d reports %s, the staged key is %s", i, got[i], keys[1].ID)
		}
	}
}
