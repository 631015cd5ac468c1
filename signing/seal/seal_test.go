package seal_test

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
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

// sameNonceReader returns, for each read, 32 bytes that differ from one
// read to the next followed by zeros: every value gets its own salt and
// the same nonce.
type sameNonceReader struct{ n byte }

func (r *sameNonceReader) Read(p []byte) (int, error) {
	r.n++
	for i := range p {
		p[i] = 0
		if i < 32 {
			p[i] = r.n
		}
	}
	return len(p), nil
}

// TestKeyPerValue: each value is sealed under a key of its own (HKDF of
// the sealing key and the value's salt), so even a repeated nonce does not
// repeat a keystream, and the random-nonce bound of one key never
// accumulates over the values sealed. Under one shared key, two values
// sealed with one nonce XOR to the XOR of their plaintexts.
func TestKeyPerValue(t *testing.T) {
	s, err := seal.New(&sameNonceReader{}, bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	p1, p2 := []byte("successor response one"), []byte("successor response two")
	c1, err := s.Seal(p1, []byte("fid.gid"))
	if err != nil {
		t.Fatal(err)
	}
	c2, err := s.Seal(p2, []byte("fid.gid"))
	if err != nil {
		t.Fatal(err)
	}
	const head = 1 + 8 + 32 + 12
	if c1[0] != 3 || len(c1) != head+len(p1)+16 {
		t.Fatalf("version %d, length %d: want version 3, %d bytes", c1[0], len(c1), head+len(p1)+16)
	}
	if !bytes.Equal(c1[head-12:head], c2[head-12:head]) || bytes.Equal(c1[9:41], c2[9:41]) {
		t.Fatal("the test needs equal nonces and different salts")
	}
	same := true
	for i := range p1 {
		if c1[head+i]^c2[head+i] != p1[i]^p2[i] {
			same = false
		}
	}
	if same {
		t.Fatal("two values with one nonce share a keystream: one key seals both")
	}
	for _, c := range [][]byte{c1, c2} {
		if _, err := s.Open(c, []byte("fid.gid")); err != nil {
			t.Fatal(err)
		}
	}
	salt := append([]byte(nil), c1...)
	salt[9] ^= 1
	if _, err := s.Open(salt, []byte("fid.gid")); !errors.Is(err, seal.ErrOpen) {
		t.Fatalf("tampered salt: %v, want ErrOpen", err)
	}
}

// TestOpensVersion1: a value sealed by an earlier release (version 1, one
// AES key per sealing key) still opens, and under the current key is not
// reported for re-sealing.
func TestOpensVersion1(t *testing.T) {
	v1, err := hex.DecodeString("0134f677e53cdefa6607070707070707070707070717c020cc8b33939f388f94fc4fd8ba5219fdf0fa0fe0ea0118603c3c0bcf9a1b57499f01432633543e889e5847ab")
	if err != nil {
		t.Fatal(err)
	}
	s, err := seal.New(rand.Reader, bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	pt, err := s.Open(v1, []byte("fid.gid"))
	if err != nil || string(pt) != `{"refresh_token":"fid.secret"}` {
		t.Fatalf("version 1 value: %q, %v", pt, err)
	}
	if s.NeedsReseal(v1) {
		t.Fatal("a version 1 value under the current key reported for re-sealing")
	}
	if _, err := s.Open(v1, []byte("fid.other")); !errors.Is(err, seal.ErrOpen) {
		t.Fatalf("version 1 value, other additional data: %v", err)
	}
}
