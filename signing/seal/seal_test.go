package seal_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/auth-platform/tokenservice/signing/seal"
)

func TestSealOpen(t *testing.T) {
	oldKey := bytes.Repeat([]byte{1}, 32)
	newKey := bytes.Repeat([]byte{2}, 32)
	old, err := seal.New(rand.Reader, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := old.Seal([]byte("private key"), []byte("kid-1"))
	if err != nil {
		t.Fatal(err)
	}
	// After rotating ENCRYPTION_KEY the old value still opens, and is
	// reported as needing a re-seal.
	rotated, err := seal.New(rand.Reader, newKey, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := rotated.Open(sealed, []byte("kid-1"))
	if err != nil || string(pt) != "private key" {
		t.Fatalf("open after rotation: %q %v", pt, err)
	}
	if !rotated.NeedsReseal(sealed) {
		t.Fatal("old value not reported for re-sealing")
	}
	resealed, _ := rotated.Seal(pt, []byte("kid-1"))
	if rotated.NeedsReseal(resealed) {
		t.Fatal("fresh value reported for re-sealing")
	}
	onlyNew, _ := seal.New(rand.Reader, newKey)
	tamper := append([]byte(nil), sealed...)
	tamper[len(tamper)-1] ^= 1
	tests := []struct {
		name   string
		sealer *seal.Sealer
		value  []byte
		aad    string
	}{
		{"other additional data", old, sealed, "kid-2"},
		{"tampered", old, tamper, "kid-1"},
		{"key gone", onlyNew, sealed, "kid-1"},
		{"truncated", old, sealed[:20], "kid-1"},
		{"empty", old, nil, "kid-1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.sealer.Open(tc.value, []byte(tc.aad)); !errors.Is(err, seal.ErrOpen) {
				t.Fatalf("got %v, want ErrOpen", err)
			}
		})
	}
	if _, err := seal.New(rand.Reader, []byte("short")); !errors.Is(err, seal.ErrKeySize) {
		t.Fatalf("short key: %v", err)
	}
	// Nonces differ: sealing twice gives different bytes.
	a, _ := old.Seal([]byte("x"), nil)
	b, _ := old.Seal([]byte("x"), nil)
	if bytes.Equal(a, b) {
		t.Fatal("two seals of one value are equal")
	}
}
