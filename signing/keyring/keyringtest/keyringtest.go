// Package keyringtest is the contract suite every keyring.Backend passes:
// what the keyring relies on from a backend, checked against the real
// store (the local sealer, local-kms, SoftHSM2, cryptod).
//
// Run checks that
//   - Name is set and, like Remote, the same on every instance;
//   - a key made by Create is the key of its algorithm whose ID is the
//     RFC 7638 thumbprint of its JWK, with its material in the log
//     (Sealed) for a local backend and outside it (Ref, nothing sealed)
//     for a remote one;
//   - for every supported algorithm, a key made by one instance and
//     opened by another signs what its JWK verifies (signing/signingtest);
//   - an unsupported algorithm is refused with
//     signing.ErrUnsupportedAlgorithm by Create and by Open, and Create
//     makes nothing for it;
//   - Open never passes another key off as the recorded one;
//   - for a remote backend, Create is idempotent per intent: called again,
//     on the same instance or on another one after a crash, it returns
//     the key it made (same ID, Ref and JWK) and makes no second one; the
//     intent's key is not reused for another algorithm;
//   - Discard is idempotent, on the same instance and after a restart,
//     deletes only its key, and a discarded remote key no longer opens;
//   - for a remote backend, the keyring finishes an intent that a crash
//     interrupted between Create and key.generated with the key the
//     crashed replica made: one active key, no orphan, tokens verify.
//
// RunProvisioned is the contract of a keyring.Provisioner, a backend that
// signs with the operator's keys and creates none.
package keyringtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"slices"
	"testing"

	"github.com/auth-platform/tokenservice/issuer/issuertest"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/keyring"
	"github.com/auth-platform/tokenservice/signing/signingtest"
)

// Options describes the backend under test.
type Options struct {
	// Algorithms lists what the backend supports; every other algorithm
	// of signing.Algorithms must be refused. Required.
	Algorithms []signing.Algorithm
	// Keys counts the keys in the backend's store, in any unit (KMS keys,
	// objects on a token) as long as a new key adds to it. Optional:
	// without it the suite cannot see an orphan, and skips those checks.
	Keys func(t *testing.T) int
	// Recovered, if set, is called once the keyring finished an intent a
	// crash interrupted, with the recovering replica and its backend
	// instance, for checks of the backend's own (a reconciler's).
	// Optional.
	Recovered func(t *testing.T, env *issuertest.Env, b keyring.Backend)
}

// NewBackend returns a new instance of the backend under test over the
// same store each time it is called: another replica, or the process
// after a crash. It closes what it opens with t.Cleanup.
type NewBackend func(t *testing.T) keyring.Backend

// Run runs the contract against the backends newBackend returns. Its
// subtests run in sequence, since they count the store's keys; only the
// signing contract's run in parallel. Run does not call t.Parallel: a
// caller may (local, KMS), or may not (SoftHSM2, configured per process).
func Run(t *testing.T, newBackend NewBackend, o Options) {
	if len(o.Algorithms) == 0 {
		t.Fatal("keyringtest: Options.Algorithms is required")
	}
	alg := o.Algorithms[0]
	if slices.Contains(o.Algorithms, signing.ES256) {
		alg = signing.ES256 // the fastest to generate in every store
	}
	// Intents are unique to this run, so that runs sharing a store (or a
	// real HSM's token) never find each other's keys.
	var r [6]byte
	if _, err := rand.Read(r[:]); err != nil {
		t.Fatal(err)
	}
	s := suite{newBackend: newBackend, o: o, alg: alg, prefix: "contract-" + hex.EncodeToString(r[:]) + "-"}
	t.Run("Identity", s.identity)
	t.Run("Sign", s.sign)
	t.Run("UnsupportedAlgorithm", s.unsupported)
	t.Run("OpenRefusesAnotherKey", s.openAnother)
	t.Run("CreateIdempotentPerIntent", s.idempotentCreate)
	t.Run("DiscardIdempotent", s.discard)
	t.Run("KeyringFinishesInterruptedIntent", s.keyringCrash)
}

type suite struct {
	newBackend NewBackend
	o          Options
	alg        signing.Algorithm
	prefix     string // of every intent the suite creates a key for
}

// intent returns the run's intent named name.
func (s suite) intent(name string) string { return s.prefix + name }

func (s suite) keys(t *testing.T) (int, bool) {
	t.Helper()
	if s.o.Keys == nil {
		return 0, false
	}
	return s.o.Keys(t), true
}

func (s suite) create(t *testing.T, b keyring.Backend, alg signing.Algorithm, intent string) signing.StoredKey {
	t.Helper()
	key, err := b.Create(context.Background(), alg, intent)
	if err != nil {
		t.Fatalf("Create %s for intent %q: %v", alg, intent, err)
	}
	checkKey(t, b, key, alg)
	return key
}

// checkKey checks what the keyring records of a key: its ID, algorithm,
// JWK, and where its material is.
func checkKey(t *testing.T, b keyring.Backend, key signing.StoredKey, alg signing.Algorithm) {
	t.Helper()
	if key.Algorithm != alg || key.JWK.Alg != string(alg) {
		t.Fatalf("Create %s made a key of algorithm %q (JWK %q)", alg, key.Algorithm, key.JWK.Alg)
	}
	if key.ID == "" || key.JWK.Kid != key.ID || key.JWK.Thumbprint() != key.ID {
		t.Fatalf("key ID %q, JWK kid %q, thumbprint %q: want all equal", key.ID, key.JWK.Kid, key.JWK.Thumbprint())
	}
	if _, err := key.JWK.PublicKey(); err != nil {
		t.Fatalf("the key's JWK: %v", err)
	}
	if b.Remote() {
		if key.Ref == "" || len(key.Sealed) != 0 {
			t.Fatalf("a remote key has Ref %q and %d sealed bytes: want a reference and nothing sealed in the log", key.Ref, len(key.Sealed))
		}
	} else if len(key.Sealed) == 0 {
		t.Fatal("a local key has no sealed material: the log could not open it again")
	}
}

// signsAs checks that b opens key and that its signature verifies with
// want's public key.
func signsAs(t *testing.T, b keyring.Backend, key, want signing.StoredKey) {
	t.Helper()
	ctx := context.Background()
	sg, err := b.Open(ctx, key)
	if err != nil {
		t.Fatalf("Open %s: %v", key.ID, err)
	}
	if sg.KeyID() != want.ID {
		t.Fatalf("Open %s: signer of key %s, want %s", key.ID, sg.KeyID(), want.ID)
	}
	pub, err := want.JWK.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	input := []byte("e30.e30")
	sig, err := sg.Sign(ctx, input)
	if err != nil {
		t.Fatalf("Sign with %s: %v", key.ID, err)
	}
	if err := signing.Verify(want.Algorithm, pub, input, sig); err != nil {
		t.Fatalf("a signature of %s does not verify with the JWK of %s: %v", key.ID, want.ID, err)
	}
}

func (s suite) identity(t *testing.T) {
	a, b := s.newBackend(t), s.newBackend(t)
	if a.Name() == "" {
		t.Fatal("Name is empty: key events could not say which backend holds a key")
	}
	if a.Name() != b.Name() || a.Remote() != b.Remote() {
		t.Fatalf("two instances: %q (remote %v) and %q (remote %v)", a.Name(), a.Remote(), b.Name(), b.Remote())
	}
	if a.Name() == keyring.BackendLocal && a.Remote() {
		t.Fatalf("a remote backend named %q, the local backend's name", a.Name())
	}
}

// sign runs the signing contract with keys made by one instance and
// opened by another, as a replica opens a key another one made.
func (s suite) sign(t *testing.T) {
	creator, opener := s.newBackend(t), s.newBackend(t)
	signingtest.Run(t, s.o.Algorithms, func(t *testing.T, alg signing.Algorithm) (signing.Signer, signing.JWK) {
		key := s.create(t, creator, alg, s.intent("sign-"+string(alg)))
		sg, err := opener.Open(context.Background(), key)
		if err != nil {
			t.Fatalf("Open on another instance: %v", err)
		}
		return sg, key.JWK
	})
}

func (s suite) unsupported(t *testing.T) {
	b := s.newBackend(t)
	ctx := context.Background()
	var refused []signing.Algorithm
	for _, alg := range signing.Algorithms {
		if !slices.Contains(s.o.Algorithms, alg) {
			refused = append(refused, alg)
		}
	}
	refused = append(refused, "HS256", "none", "")
	before, counted := s.keys(t)
	for _, alg := range refused {
		if _, err := b.Create(ctx, alg, s.intent("unsupported-"+string(alg))); !errors.Is(err, signing.ErrUnsupportedAlgorithm) {
			t.Errorf("Create %q: got %v, want ErrUnsupportedAlgorithm", alg, err)
		}
	}
	if n, _ := s.keys(t); counted && n != before {
		t.Fatalf("%d keys after refused creations, %d before", n, before)
	}
	// A recorded key opened with an algorithm the backend does not
	// support (a log written by another configuration) is refused too.
	key := s.create(t, b, s.alg, s.intent("unsupported-open"))
	for _, alg := range refused {
		k := key
		k.Algorithm = alg
		if _, err := b.Open(ctx, k); !errors.Is(err, signing.ErrUnsupportedAlgorithm) {
			t.Errorf("Open as %q: got %v, want ErrUnsupportedAlgorithm", alg, err)
		}
	}
}

// openAnother: a key recorded under another key's ID does not open as
// that key (the keyring checks the ID too; a backend must not lie).
func (s suite) openAnother(t *testing.T) {
	b := s.newBackend(t)
	first := s.create(t, b, s.alg, s.intent("open-1"))
	second := s.create(t, b, s.alg, s.intent("open-2"))
	if first.ID == second.ID {
		t.Fatal("two intents got one key")
	}
	wrong := first
	wrong.ID, wrong.JWK = second.ID, second.JWK
	if sg, err := b.Open(context.Background(), wrong); err == nil && sg.KeyID() == second.ID {
		t.Fatalf("key %s opened as %s", first.ID, second.ID)
	}
}

func (s suite) idempotentCreate(t *testing.T) {
	b := s.newBackend(t)
	if !b.Remote() {
		t.Skip("a local key lives in the log: the keyring records no intent for it")
	}
	intent := s.intent("intent-1")
	made := s.create(t, b, s.alg, intent)
	before, counted := s.keys(t)
	same := func(t *testing.T, got signing.StoredKey) {
		t.Helper()
		if got.ID != made.ID || got.Ref != made.Ref || got.JWK != made.JWK {
			t.Fatalf("Create again for the intent: key %s (%s), want %s (%s)", got.ID, got.Ref, made.ID, made.Ref)
		}
		if n, _ := s.keys(t); counted && n != before {
			t.Fatalf("%d keys after Create again for the intent, %d before: an orphan", n, before)
		}
	}
	same(t, s.create(t, b, s.alg, intent))
	// The crash: the instance that made the key is gone; another one
	// finishes the intent.
	restarted := s.newBackend(t)
	again := s.create(t, restarted, s.alg, intent)
	same(t, again)
	signsAs(t, restarted, again, made)

	// Another intent makes another key (so the count above can fail).
	other := s.create(t, restarted, s.alg, s.intent("intent-2"))
	if other.ID == made.ID || other.Ref == made.Ref {
		t.Fatalf("a second intent got the first intent's key %s", made.ID)
	}
	if n, _ := s.keys(t); counted && n <= before {
		t.Fatalf("%d keys after a new intent's key, %d before: Options.Keys does not count keys", n, before)
	}
	// The intent's key is not reused, nor a second one made, for
	// another algorithm.
	for _, alg := range s.o.Algorithms {
		if kty(alg) == kty(s.alg) {
			continue
		}
		if k, err := restarted.Create(context.Background(), alg, intent); err == nil {
			t.Fatalf("Create %s for an intent fulfilled with %s: got key %s, want an error", alg, s.alg, k.ID)
		}
		break
	}
}

func kty(alg signing.Algorithm) string {
	switch alg {
	case signing.RS256, signing.PS256:
		return "RSA"
	case signing.ES256:
		return "P-256"
	case signing.ES384:
		return "P-384"
	}
	return string(alg)
}

func (s suite) discard(t *testing.T) {
	b := s.newBackend(t)
	ctx := context.Background()
	gone := s.create(t, b, s.alg, s.intent("discard-1"))
	kept := s.create(t, b, s.alg, s.intent("discard-2"))
	for range 2 {
		if err := b.Discard(ctx, gone); err != nil {
			t.Fatalf("Discard: %v", err)
		}
	}
	restarted := s.newBackend(t)
	if err := restarted.Discard(ctx, gone); err != nil {
		t.Fatalf("Discard again after a restart: %v", err)
	}
	signsAs(t, restarted, kept, kept)
	if !b.Remote() {
		return // nothing outside the log to delete
	}
	if sg, err := restarted.Open(ctx, gone); err == nil {
		if _, err := sg.Sign(ctx, []byte("e30.e30")); err == nil {
			t.Fatal("a discarded key still signs")
		}
	}
}
