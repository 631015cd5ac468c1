package pkcs11_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
	"github.com/auth-platform/tokenservice/projections"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/pkcs11"
	"github.com/auth-platform/tokenservice/signing/pkcs11/hsmtest"
)

// TestCrashDuringGeneration: the intent is recorded, the token generates
// the pair, and the process dies before key.generated. Another backend
// instance finishing the same intent finds that pair: no second object
// exists, and it signs as the key the first instance made.
func TestCrashDuringGeneration(t *testing.T) {
	tok := hsmtest.New(t)
	ctx := context.Background()
	const intent = "crashed-intent-0001"
	first, err := pkcs11.New(ctx, tok.Config)
	if err != nil {
		t.Fatal(err)
	}
	made, err := first.Create(ctx, signing.ES256, intent)
	if err != nil {
		t.Fatal(err)
	}
	if n := tok.Objects(t); n != 2 {
		t.Fatalf("%d objects on the token after one generation, want a pair", n)
	}
	if err := first.Close(); err != nil { // the crash: no key.generated
		t.Fatal(err)
	}

	second := open(t, tok.Config)
	again, err := second.Create(ctx, signing.ES256, intent)
	if err != nil {
		t.Fatal(err)
	}
	if again.Ref != made.Ref || again.ID != made.ID {
		t.Fatalf("after the crash the intent got key %s (%s), want %s (%s)", again.ID, again.Ref, made.ID, made.Ref)
	}
	if n := tok.Objects(t); n != 2 {
		t.Fatalf("%d objects on the token after the intent was finished again, want the same pair", n)
	}
	s, err := second.Open(ctx, again)
	if err != nil {
		t.Fatal(err)
	}
	input := []byte("e30.e30")
	sig, err := s.Sign(ctx, input)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := made.JWK.PublicKey()
	if err := signing.Verify(signing.ES256, pub, input, sig); err != nil {
		t.Fatalf("the adopted key does not sign as the key made before the crash: %v", err)
	}
}

// TestReconcile: the reconciler deletes what the log does not reference
// (a key whose intent another key fulfilled, the public half a Discard
// interrupted halfway left) and keeps recorded keys, keys of pending
// intents and objects of other label prefixes.
func TestReconcile(t *testing.T) {
	tok := hsmtest.New(t)
	ctx := context.Background()
	b := open(t, tok.Config)
	create := func(intent string) signing.StoredKey {
		t.Helper()
		k, err := b.Create(ctx, signing.ES256, intent)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	recorded := create("recorded")
	pending := create("pending")
	lost := create("lost-race")    // its intent was fulfilled by another replica's key
	halfway := create("discarded") // Discard deleted the private half, then the process died
	if err := b.DeletePrivateHalf(ctx, halfway.Ref); err != nil {
		t.Fatal(err)
	}
	otherCfg := tok.Config
	otherCfg.LabelPrefix = "another-deployment/"
	other := open(t, otherCfg)
	foreign, err := other.Create(ctx, signing.ES256, "theirs")
	if err != nil {
		t.Fatal(err)
	}
	if n := tok.Objects(t); n != 9 {
		t.Fatalf("%d objects before reconciling, want 9", n)
	}

	refs := func(context.Context) (pkcs11.References, error) {
		return pkcs11.References{
			Refs:    map[string]bool{recorded.Ref: true, "0badc0de": true},
			Intents: map[string]bool{"pending": true},
		}, nil
	}
	deleted, err := b.Reconcile(ctx, refs)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, k := range deleted {
		got = append(got, k.Intent)
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"discarded", "lost-race"}) {
		t.Fatalf("deleted %v, want the lost race's key and the half-discarded one", got)
	}
	if n := tok.Objects(t); n != 6 {
		t.Fatalf("%d objects after reconciling, want 6 (3 pairs)", n)
	}
	for _, k := range []signing.StoredKey{recorded, pending} {
		if _, err := b.Open(ctx, k); err != nil {
			t.Fatalf("a referenced key was deleted: %v", err)
		}
	}
	if _, err := other.Open(ctx, foreign); err != nil {
		t.Fatalf("another prefix's key was deleted: %v", err)
	}
	if _, err := b.Open(ctx, lost); !errors.Is(err, pkcs11.ErrKeyNotFound) {
		t.Fatalf("the lost race's key: %v", err)
	}
	// Again: nothing left to do.
	if deleted, err := b.Reconcile(ctx, refs); err != nil || len(deleted) != 0 {
		t.Fatalf("second pass deleted %v, %v", deleted, err)
	}
	// Discard is idempotent, and deletes only its key.
	for range 2 {
		if err := b.Discard(ctx, recorded); err != nil {
			t.Fatal(err)
		}
	}
	if n := tok.Objects(t); n != 4 {
		t.Fatalf("%d objects after discarding one pair, want 4", n)
	}
	keys, err := b.Objects(ctx)
	if err != nil || len(keys) != 1 || keys[0].Ref != pending.Ref || !keys[0].Private || !keys[0].Public {
		t.Fatalf("objects %+v, %v; want only the pending intent's pair", keys, err)
	}
}

// TestKeyringCrashDuringGeneration runs the crash through the keyring and
// the event log: a replica records an intent, the token makes the pair,
// and the replica dies before recording it. The next replica, with its
// own backend instance, finishes the intent with that pair: one active
// key, no object more on the token, and nothing for the reconciler to
// delete.
func TestKeyringCrashDuringGeneration(t *testing.T) {
	tok := hsmtest.New(t)
	ctx := context.Background()
	node := eventlogtest.SingleNode(t)
	clock := issuertest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	crashed, err := pkcs11.New(ctx, tok.Config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = crashed.Close() }) // after the env stops; Close is idempotent
	first := issuertest.New(t, issuertest.Options{Conn: node.Conn, Clock: clock, Algorithm: signing.ES256, Backend: crashed})
	const intent = "crashed-intent-0001"
	data, _ := proto.Marshal(&eventsv1.KeyRequested{IntentId: intent, Algorithm: "ES256", Backend: pkcs11.BackendName, At: timestamppb.New(clock.Now())})
	head, err := first.Log.LastConsistent(ctx, first.Log.Subjects().Keys())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Log.Append(ctx, eventlog.Event{Subject: first.Log.Subjects().Key(intent, "requested"), Type: projections.TypeKeyRequested, Data: data},
		eventlog.Expect{Filter: first.Log.Subjects().Keys(), Seq: head.Seq}); err != nil {
		t.Fatal(err)
	}
	made, err := crashed.Create(ctx, signing.ES256, intent)
	if err != nil {
		t.Fatal(err)
	}
	before := tok.Objects(t)

	nc, err := node.Embedded.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	backend := open(t, tok.Config)
	next := issuertest.New(t, issuertest.Options{Conn: nc, Clock: clock, Algorithm: signing.ES256, Backend: backend})
	if err := next.Keyring.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if n := tok.Objects(t); n != before {
		t.Fatalf("%d objects on the token after the restart, %d before: an orphan", n, before)
	}
	k, ok := next.Set.Key(made.ID)
	if !ok || k.IntentID != intent || k.Ref != made.Ref {
		t.Fatalf("the key made before the crash was not adopted: %+v", k)
	}
	keys, _ := next.Set.Keys()
	active := 0
	for _, k := range keys {
		if k.Status == eventsv1.KeyStatus_KEY_STATUS_ACTIVE {
			active++
		}
	}
	if active != 1 {
		t.Fatalf("%d active keys, want exactly 1", active)
	}
	tokens, err := next.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "k", ClientID: "c", Audience: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := next.Issuer.VerifyAccessToken(tokens.AccessToken, true); err != nil {
		t.Fatalf("HSM-signed token: %v", err)
	}
	// The reconciler, fed from the log, finds every object referenced.
	deleted, err := backend.Reconcile(ctx, func(context.Context) (pkcs11.References, error) {
		next.CaughtUp(t)
		return references(next), nil
	})
	if err != nil || len(deleted) != 0 {
		t.Fatalf("reconciler deleted %+v, %v", deleted, err)
	}
}

// references is what cmd/tokend's wiring computes from the key projection.
func references(env *issuertest.Env) pkcs11.References {
	r := pkcs11.References{Refs: map[string]bool{}, Intents: map[string]bool{}}
	keys, _ := env.Set.Keys()
	for _, k := range keys {
		if k.Backend == pkcs11.BackendName && !k.MaterialDeleted {
			r.Refs[k.Ref] = true
		}
	}
	if in, ok := env.Set.PendingKeyIntent(); ok && in.Backend == pkcs11.BackendName {
		r.Intents[in.ID] = true
	}
	return r
}
