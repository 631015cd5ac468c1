package seal_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"

	"pgregory.net/rapid"

	"github.com/auth-platform/tokenservice/signing/seal"
)

// drawKeys draws n distinct sealing keys.
func drawKeys(t *rapid.T, n int, label string) [][]byte {
	keys := rapid.SliceOfNDistinct(rapid.SliceOfN(rapid.Byte(), seal.KeySize, seal.KeySize), n, n,
		func(k []byte) string { return string(k) }).Draw(t, label)
	return keys
}

// TestSealProperties is the specification's cache property suite for the
// sealer of the keys, the grace records and the families read model:
//
//   - round trip: what Seal returns opens with the same additional data to
//     the same plaintext, with local keys and with the envelope;
//   - any single bit changed, and any truncation, is refused (ErrOpen for
//     local keys; an error, never a plaintext, for either format);
//   - other additional data is refused;
//   - rotation: after ENCRYPTION_KEY is rotated, with the old keys kept as
//     previous, a value sealed under any of them opens and is reported for
//     re-sealing; re-sealed, it opens with the new key alone, which refuses
//     the old value.
func TestSealProperties(t *testing.T) {
	w := newWrapper(t)
	rapid.Check(t, func(t *rapid.T) {
		keys := drawKeys(t, rapid.IntRange(2, 4).Draw(t, "keys"), "key")
		newKey, older := keys[0], keys[1:]
		current := rapid.IntRange(0, len(older)-1).Draw(t, "sealing key") // the key in use before the rotation
		plaintext := rapid.SliceOfN(rapid.Byte(), 0, 512).Draw(t, "plaintext")
		aad := rapid.SliceOfN(rapid.Byte(), 0, 64).Draw(t, "aad")
		envelope := rapid.Bool().Draw(t, "envelope")

		before, err := seal.New(rand.Reader, older[current])
		if err != nil {
			t.Fatal(err)
		}
		if envelope {
			if before, err = before.WithEnvelope(seal.Envelope{Wrapper: w, Seal: true}); err != nil {
				t.Fatal(err)
			}
		}
		sealed, err := before.Seal(plaintext, aad)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(sealed, plaintext) && len(plaintext) >= 16 {
			t.Fatal("the plaintext is in the sealed value")
		}
		got, err := before.Open(sealed, aad)
		if err != nil || !bytes.Equal(got, plaintext) {
			t.Fatalf("round trip: %x, %v", got, err)
		}

		// One bit changed anywhere.
		bit := rapid.IntRange(0, len(sealed)*8-1).Draw(t, "bit")
		tampered := bytes.Clone(sealed)
		tampered[bit/8] ^= 1 << (bit % 8)
		refused(t, before, tampered, aad, envelope, "one bit changed")
		// Cut short.
		refused(t, before, sealed[:rapid.IntRange(0, len(sealed)-1).Draw(t, "cut")], aad, envelope, "truncated")
		// Other additional data (another record's place).
		other := rapid.SliceOfN(rapid.Byte(), 0, 64).Filter(func(b []byte) bool { return !bytes.Equal(b, aad) }).Draw(t, "other aad")
		refused(t, before, sealed, other, envelope, "other additional data")

		// Rotation: the new key seals, every old one still opens.
		rotated, err := seal.New(rand.Reader, newKey, older...)
		if err != nil {
			t.Fatal(err)
		}
		if envelope {
			if rotated, err = rotated.WithEnvelope(seal.Envelope{Wrapper: w}); err != nil { // turned off: opens, no longer seals
				t.Fatal(err)
			}
		}
		if got, err := rotated.Open(sealed, aad); err != nil || !bytes.Equal(got, plaintext) {
			t.Fatalf("after rotation: %x, %v", got, err)
		}
		if !rotated.NeedsReseal(sealed) {
			t.Fatal("a value of the old key (or the envelope turned off) is not reported for re-sealing")
		}
		resealed, err := rotated.Seal(plaintext, aad)
		if err != nil {
			t.Fatal(err)
		}
		if rotated.NeedsReseal(resealed) {
			t.Fatal("a re-sealed value is reported for re-sealing")
		}
		onlyNew, err := seal.New(rand.Reader, newKey)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := onlyNew.Open(resealed, aad); err != nil || !bytes.Equal(got, plaintext) {
			t.Fatalf("re-sealed, with the new key alone: %x, %v", got, err)
		}
		if _, err := onlyNew.Open(sealed, aad); err == nil {
			t.Fatal("the new key alone opened a value of the old key")
		}
	})
}

// refused checks that s does not open value with aad: ErrOpen for a local
// sealer (or ErrNoWrapper, when the changed bit turned the format into the
// envelope's), an error for an envelope one (a changed wrapped key is the
// crypto service's refusal); never a plaintext.
func refused(t *rapid.T, s *seal.Sealer, value, aad []byte, envelope bool, what string) {
	got, err := s.Open(value, aad)
	if err == nil || got != nil {
		t.Fatalf("%s: opened to %x", what, got)
	}
	if !envelope && !errors.Is(err, seal.ErrOpen) && !errors.Is(err, seal.ErrNoWrapper) {
		t.Fatalf("%s: %v, want ErrOpen", what, err)
	}
}
