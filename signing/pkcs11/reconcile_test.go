package pkcs11_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/auth-platform/tokenservice/issuer/issuertest"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/pkcs11"
	"github.com/auth-platform/tokenservice/signing/pkcs11/hsmtest"
)

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
