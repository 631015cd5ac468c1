package signing_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"errors"
	"math/big"
	"testing"

	"github.com/auth-platform/tokenservice/signing"
)

func TestDERToJOSE(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	d := sha256.Sum256([]byte("x"))
	for range 64 { // short R or S (leading zero bytes) occur in 1/128 signatures
		der, err := ecdsa.SignASN1(rand.Reader, k, d[:])
		if err != nil {
			t.Fatal(err)
		}
		jose, err := signing.DERToJOSE(der, 32)
		if err != nil || len(jose) != 64 {
			t.Fatalf("%d bytes, %v", len(jose), err)
		}
		r, s := new(big.Int).SetBytes(jose[:32]), new(big.Int).SetBytes(jose[32:])
		if !ecdsa.Verify(&k.PublicKey, d[:], r, s) {
			t.Fatal("converted signature does not verify")
		}
	}
	// Short integers are left-padded.
	der, _ := asn1.Marshal(struct{ R, S *big.Int }{big.NewInt(1), big.NewInt(2)})
	jose, err := signing.DERToJOSE(der, 32)
	if err != nil || !bytes.Equal(jose[:31], make([]byte, 31)) || jose[31] != 1 || jose[63] != 2 {
		t.Fatalf("%x %v", jose, err)
	}
	big33 := new(big.Int).Lsh(big.NewInt(1), 264)
	for name, bad := range map[string][]byte{
		"empty":    nil,
		"garbage":  []byte("not der"),
		"trailing": append(append([]byte(nil), der...), 0),
		"too long": mustDER(big33, big.NewInt(1)),
		"zero":     mustDER(big.NewInt(0), big.NewInt(1)),
		"negative": mustDER(big.NewInt(-1), big.NewInt(1)),
	} {
		if _, err := signing.DERToJOSE(bad, 32); !errors.Is(err, signing.ErrMalformedSignature) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func mustDER(r, s *big.Int) []byte {
	b, _ := asn1.Marshal(struct{ R, S *big.Int }{r, s})
	return b
}

// FuzzDERToJOSE: never panics; what it accepts round-trips to the same
// integers.
func FuzzDERToJOSE(f *testing.F) {
	f.Add(mustDER(big.NewInt(1), big.NewInt(2)))
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		jose, err := signing.DERToJOSE(der, 32)
		if err != nil {
			return
		}
		var sig struct{ R, S *big.Int }
		if _, err := asn1.Unmarshal(der, &sig); err != nil ||
			new(big.Int).SetBytes(jose[:32]).Cmp(sig.R) != 0 || new(big.Int).SetBytes(jose[32:]).Cmp(sig.S) != 0 {
			t.Fatalf("%x → %x", der, jose)
		}
	})
}
