// Package dpoptest makes DPoP proofs for tests and benchmarks: a client key
// of any supported algorithm, and proofs whose header and claims a test can
// change before they are signed.
package dpoptest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"time"

	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/local"
)

// Key is a client's DPoP key.
type Key struct {
	Signer *local.Signer
}

// NewKey generates a key for alg; it panics on failure (tests only).
func NewKey(alg signing.Algorithm) Key {
	s, err := local.Generate(rand.Reader, alg)
	if err != nil {
		panic(err)
	}
	return Key{Signer: s}
}

// JKT returns the RFC 7638 thumbprint of the key.
func (k Key) JKT() string { return k.Signer.KeyID() }

// PublicJWK returns the public key as the jwk header member holds it.
func (k Key) PublicJWK() map[string]any {
	j := k.Signer.PublicJWK()
	m := map[string]any{"kty": j.Kty}
	for name, v := range map[string]string{"crv": j.Crv, "x": j.X, "y": j.Y, "n": j.N, "e": j.E} {
		if v != "" {
			m[name] = v
		}
	}
	return m
}

// Parts are the header and claims of a proof before signing.
type Parts struct {
	Header map[string]any
	Claims map[string]any
}

// Parts returns the header and claims of a valid proof for htm and htu at
// now, with a random jti.
func (k Key) Parts(htm, htu string, now time.Time) Parts {
	var jti [16]byte
	_, _ = rand.Read(jti[:])
	return Parts{
		Header: map[string]any{"typ": "dpop+jwt", "alg": string(k.Signer.Algorithm()), "jwk": k.PublicJWK()},
		Claims: map[string]any{"jti": base64.RawURLEncoding.EncodeToString(jti[:]), "htm": htm, "htu": htu, "iat": now.Unix()},
	}
}

// Sign returns the compact JWS of p signed by k.
func (k Key) Sign(p Parts) string {
	enc := base64.RawURLEncoding
	h, err := json.Marshal(p.Header)
	if err != nil {
		panic(err)
	}
	c, err := json.Marshal(p.Claims)
	if err != nil {
		panic(err)
	}
	input := enc.EncodeToString(h) + "." + enc.EncodeToString(c)
	sig, err := k.Signer.Sign(context.Background(), []byte(input))
	if err != nil {
		panic(err)
	}
	return input + "." + enc.EncodeToString(sig)
}

// Proof returns a signed valid proof; mods change its parts first.
func (k Key) Proof(htm, htu string, now time.Time, mods ...func(*Parts)) string {
	p := k.Parts(htm, htu, now)
	for _, m := range mods {
		m(&p)
	}
	return k.Sign(p)
}

// ATH returns the ath claim for an access token.
func ATH(accessToken string) string {
	sum := sha256.Sum256([]byte(accessToken))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
