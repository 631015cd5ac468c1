package keyringtest

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/keyring"
	"github.com/auth-platform/tokenservice/signing/signingtest"
)

// Provision makes a key of alg in the store, as the operator does, and
// returns the constructor of Provisioner instances configured with it:
// another replica, or the process after a restart, each time it is
// called.
type Provision func(t *testing.T, alg signing.Algorithm) func(t *testing.T) keyring.Provisioner

// ProvisionedOptions describes the Provisioner under test.
type ProvisionedOptions struct {
	// Algorithms lists what the backend supports. Required.
	Algorithms []signing.Algorithm
	// Keys counts the keys in the store (see Options.Keys). Optional.
	Keys func(t *testing.T) int
}

// RunProvisioned runs the contract of a keyring.Provisioner, which
// creates no key: it checks that
//   - Name is set and is not the local backend's, and the backend is
//     remote;
//   - for every supported algorithm, the key Provisioned offers is the
//     operator's key of that algorithm, with its ID the RFC 7638
//     thumbprint of its JWK and a Ref (nothing sealed), the same on every
//     instance; opened by another instance it signs what its JWK
//     verifies (signing/signingtest);
//   - Provisioned refuses an unsupported algorithm with
//     signing.ErrUnsupportedAlgorithm, and an algorithm of another key
//     type with an error;
//   - Create and Discard are refused with signing.ErrProvisioned, make and
//     delete nothing, and the key still signs after them;
//   - Open never passes another key off as the recorded one.
func RunProvisioned(t *testing.T, provision Provision, o ProvisionedOptions) {
	if len(o.Algorithms) == 0 {
		t.Fatal("keyringtest: ProvisionedOptions.Algorithms is required")
	}
	alg := o.Algorithms[0]
	if slices.Contains(o.Algorithms, signing.ES256) {
		alg = signing.ES256
	}
	keys := func(t *testing.T) (int, bool) {
		if o.Keys == nil {
			return 0, false
		}
		return o.Keys(t), true
	}
	ctx := context.Background()
	t.Run("Identity", func(t *testing.T) {
		p := provision(t, alg)(t)
		if p.Name() == "" || p.Name() == keyring.BackendLocal || !p.Remote() {
			t.Fatalf("name %q, remote %v: want a remote backend with a name of its own", p.Name(), p.Remote())
		}
	})
	t.Run("Sign", func(t *testing.T) {
		news := map[signing.Algorithm]func(*testing.T) keyring.Provisioner{}
		for _, a := range o.Algorithms {
			news[a] = provision(t, a) // provisioned before the parallel subtests
		}
		signingtest.Run(t, o.Algorithms, func(t *testing.T, a signing.Algorithm) (signing.Signer, signing.JWK) {
			first, second := news[a](t), news[a](t)
			key := offered(t, first, a)
			if again := offered(t, second, a); again.ID != key.ID || again.Ref != key.Ref || again.JWK != key.JWK {
				t.Fatalf("two instances offer %s (%s) and %s (%s)", key.ID, key.Ref, again.ID, again.Ref)
			}
			s, err := second.Open(ctx, key)
			if err != nil {
				t.Fatalf("Open on another instance: %v", err)
			}
			return s, key.JWK
		})
	})
	t.Run("UnsupportedAlgorithm", func(t *testing.T) {
		p := provision(t, alg)(t)
		for _, a := range append(slices.Clone(signing.Algorithms), "HS256", "none", "") {
			if slices.Contains(o.Algorithms, a) {
				if kty(a) != kty(alg) {
					if k, err := p.Provisioned(ctx, a); err == nil {
						t.Errorf("a %s key offered for %s: %s", alg, a, k.ID)
					}
				}
				continue
			}
			if _, err := p.Provisioned(ctx, a); !errors.Is(err, signing.ErrUnsupportedAlgorithm) {
				t.Errorf("Provisioned %q: got %v, want ErrUnsupportedAlgorithm", a, err)
			}
		}
	})
	t.Run("CreatesAndDeletesNothing", func(t *testing.T) {
		p := provision(t, alg)(t)
		key := offered(t, p, alg)
		before, counted := keys(t)
		if k, err := p.Create(ctx, alg, "intent"); !errors.Is(err, signing.ErrProvisioned) {
			t.Fatalf("Create: key %q, %v; want ErrProvisioned", k.ID, err)
		}
		if err := p.Discard(ctx, key); !errors.Is(err, signing.ErrProvisioned) {
			t.Fatalf("Discard: %v, want ErrProvisioned", err)
		}
		if n, _ := keys(t); counted && n != before {
			t.Fatalf("%d keys after Create and Discard, %d before", n, before)
		}
		signsAs(t, p, key, key)
	})
	t.Run("OpenRefusesAnotherKey", func(t *testing.T) {
		p := provision(t, alg)(t)
		first := offered(t, p, alg)
		second := offered(t, provision(t, alg)(t), alg)
		if first.ID == second.ID {
			t.Fatal("two provisioned keys have one ID")
		}
		wrong := first
		wrong.ID, wrong.JWK = second.ID, second.JWK
		if sg, err := p.Open(ctx, wrong); err == nil && sg.KeyID() == second.ID {
			t.Fatalf("key %s opened as %s", first.ID, second.ID)
		}
	})
}

// offered returns the key p offers for alg, checked as a recorded key.
func offered(t *testing.T, p keyring.Provisioner, alg signing.Algorithm) signing.StoredKey {
	t.Helper()
	key, err := p.Provisioned(context.Background(), alg)
	if err != nil {
		t.Fatalf("Provisioned %s: %v", alg, err)
	}
	checkKey(t, p, key, alg)
	return key
}
