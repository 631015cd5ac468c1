package pkcs11_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"testing"

	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/pkcs11"
	"github.com/auth-platform/tokenservice/signing/pkcs11/hsmtest"
)

// TestKeyStore: keys generated under a label are found again, once; a
// pair signs digests that verify with its public key; an AES key
// encrypts and decrypts inside the token and refuses other associated
// data; Destroy removes a key and is idempotent.
func TestKeyStore(t *testing.T) {
	tok := hsmtest.New(t)
	b := open(t, tok.Config)
	ctx := context.Background()
	sum256 := sha256.Sum256([]byte("message"))
	sum384 := sha512.Sum384([]byte("message"))
	tests := []struct {
		typ    pkcs11.KeyType
		alg    signing.Algorithm
		digest []byte
		verify func(pub crypto.PublicKey, sig []byte) bool
	}{
		{pkcs11.RSA2048, signing.RS256, sum256[:], func(pub crypto.PublicKey, sig []byte) bool {
			k := pub.(*rsa.PublicKey)
			return k.N.BitLen() == 2048 && rsa.VerifyPKCS1v15(k, crypto.SHA256, sum256[:], sig) == nil
		}},
		{pkcs11.RSA3072, signing.PS256, sum256[:], func(pub crypto.PublicKey, sig []byte) bool {
			k := pub.(*rsa.PublicKey)
			return k.N.BitLen() == 3072 && rsa.VerifyPSS(k, crypto.SHA256, sum256[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
		}},
		{pkcs11.ECP256, signing.ES256, sum256[:], func(pub crypto.PublicKey, sig []byte) bool {
			return ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), sum256[:], sig)
		}},
		{pkcs11.ECP384, signing.ES384, sum384[:], func(pub crypto.PublicKey, sig []byte) bool {
			return ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), sum384[:], sig)
		}},
	}
	for _, tc := range tests {
		label := "ks/" + tc.typ.String()
		ref, created, err := b.Generate(ctx, tc.typ, label)
		if err != nil || !created {
			t.Fatalf("%s: %v (created %v)", tc.typ, err, created)
		}
		again, created, err := b.Generate(ctx, tc.typ, label)
		if err != nil || created || again != ref {
			t.Fatalf("%s again: %s, created %v, %v; want %s", tc.typ, again, created, err, ref)
		}
		s, err := b.Signer(ctx, ref, tc.alg)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := s.SignDigest(ctx, tc.digest)
		if err != nil {
			t.Fatal(err)
		}
		if !tc.verify(s.Public(), sig) {
			t.Fatalf("%s: the signature of the digest does not verify", tc.typ)
		}
		if _, err := s.SignDigest(ctx, tc.digest[:20]); err == nil {
			t.Fatalf("%s: a short digest was signed", tc.typ)
		}
	}

	ref, _, err := b.Generate(ctx, pkcs11.AES256, "ks/aes")
	if err != nil {
		t.Fatal(err)
	}
	if found, ok, err := b.Find(ctx, "ks/aes"); err != nil || !ok || found != ref {
		t.Fatalf("Find: %s, %v, %v", found, ok, err)
	}
	aead, err := b.AEAD(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, pkcs11.NonceSize)
	nonce[0] = 7
	ct, err := aead.Seal(ctx, nonce, []byte("data key"), []byte("aad"))
	if err != nil || len(ct) != len("data key")+16 {
		t.Fatalf("Seal: %d bytes, %v", len(ct), err)
	}
	pt, err := aead.Open(ctx, nonce, ct, []byte("aad"))
	if err != nil || string(pt) != "data key" {
		t.Fatalf("Open: %q, %v", pt, err)
	}
	ct[0] ^= 1
	if _, err := aead.Open(ctx, nonce, ct, []byte("aad")); !errors.Is(err, pkcs11.ErrDecrypt) {
		t.Fatalf("altered ciphertext: %v", err)
	}
	ct[0] ^= 1
	if _, err := aead.Open(ctx, nonce, ct, []byte("other")); !errors.Is(err, pkcs11.ErrDecrypt) {
		t.Fatalf("other associated data: %v", err)
	}
	if _, err := b.Signer(ctx, ref, signing.ES256); err == nil {
		t.Fatal("an AES key opened as a signer")
	}

	for range 2 {
		if err := b.Destroy(ctx, ref); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok, err := b.Find(ctx, "ks/aes"); err != nil || ok {
		t.Fatalf("destroyed key found: %v, %v", ok, err)
	}
	if _, err := b.AEAD(ctx, ref); !errors.Is(err, pkcs11.ErrKeyNotFound) {
		t.Fatalf("AEAD of a destroyed key: %v", err)
	}
	if n := tok.Objects(t); n != 8 {
		t.Fatalf("%d objects left, want the 4 pairs", n)
	}
}
