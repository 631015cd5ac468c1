package signing

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"math/big"
)

// JWK is a public key in the members of RFC 7517 §4 and RFC 7518 §6.
type JWK struct {
	Kty string `json:"kty"`
	Kid string `json:"kid,omitempty"`
	Use string `json:"use,omitempty"`
	Alg string `json:"alg,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
}

var b64 = base64.RawURLEncoding

// MinRSABits and MaxRSABits bound the RSA moduli accepted: the maximum
// keeps a verification of a key from outside (a DPoP proof's) cheap.
const (
	MinRSABits = 2048
	MaxRSABits = 4096
)

// PublicJWK returns the JWK of pub, for alg, with kid set to its RFC 7638
// thumbprint and use "sig".
func PublicJWK(alg Algorithm, pub crypto.PublicKey) (JWK, error) {
	var j JWK
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if alg != RS256 && alg != PS256 {
			return JWK{}, fmt.Errorf("%w: RSA key for %s", ErrInvalidKey, alg)
		}
		if k.N.BitLen() < MinRSABits {
			return JWK{}, fmt.Errorf("%w: RSA key of %d bits", ErrInvalidKey, k.N.BitLen())
		}
		j = JWK{Kty: "RSA", N: b64.EncodeToString(k.N.Bytes()), E: b64.EncodeToString(big.NewInt(int64(k.E)).Bytes())}
	case *ecdsa.PublicKey:
		crv, size := "", 0
		switch {
		case k.Curve == elliptic.P256() && alg == ES256:
			crv, size = "P-256", 32
		case k.Curve == elliptic.P384() && alg == ES384:
			crv, size = "P-384", 48
		default:
			return JWK{}, fmt.Errorf("%w: EC key on %s for %s", ErrInvalidKey, k.Curve.Params().Name, alg)
		}
		raw, err := k.Bytes()
		if err != nil {
			return JWK{}, fmt.Errorf("%w: %v", ErrInvalidKey, err)
		}
		j = JWK{Kty: "EC", Crv: crv, X: b64.EncodeToString(raw[1 : 1+size]), Y: b64.EncodeToString(raw[1+size:])}
	case ed25519.PublicKey:
		if alg != EdDSA {
			return JWK{}, fmt.Errorf("%w: Ed25519 key for %s", ErrInvalidKey, alg)
		}
		j = JWK{Kty: "OKP", Crv: "Ed25519", X: b64.EncodeToString(k)}
	default:
		return JWK{}, fmt.Errorf("%w: key type %T", ErrInvalidKey, pub)
	}
	j.Alg, j.Use = string(alg), "sig"
	j.Kid = j.Thumbprint()
	return j, nil
}

// Thumbprint returns the RFC 7638 SHA-256 thumbprint of j, base64url
// encoded: the hash of the required members in lexicographic order with no
// white space. Unknown key types give the hash of {"kty":...} only and are
// refused by PublicKey.
func (j JWK) Thumbprint() string {
	// The members are base64url or fixed names, so no JSON escaping is
	// needed; a member with a quote or backslash is invalid anyway.
	var s string
	switch j.Kty {
	case "RSA":
		s = `{"e":"` + j.E + `","kty":"RSA","n":"` + j.N + `"}`
	case "EC":
		s = `{"crv":"` + j.Crv + `","kty":"EC","x":"` + j.X + `","y":"` + j.Y + `"}`
	case "OKP":
		s = `{"crv":"` + j.Crv + `","kty":"OKP","x":"` + j.X + `"}`
	default:
		s = `{"kty":"` + j.Kty + `"}`
	}
	sum := sha256.Sum256([]byte(s))
	return b64.EncodeToString(sum[:])
}

// PublicKey parses j into a public key and checks it fits its algorithm.
func (j JWK) PublicKey() (crypto.PublicKey, error) {
	alg, err := ParseAlgorithm(j.Alg)
	if err != nil {
		return nil, err
	}
	switch j.Kty {
	case "RSA":
		n, err1 := b64.DecodeString(j.N)
		e, err2 := b64.DecodeString(j.E)
		if err1 != nil || err2 != nil || len(e) == 0 || len(e) > 4 || (alg != RS256 && alg != PS256) {
			return nil, fmt.Errorf("%w: RSA members", ErrInvalidKey)
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		if pub.N.BitLen() < MinRSABits || pub.N.BitLen() > MaxRSABits || pub.E < 3 || pub.E%2 == 0 {
			return nil, fmt.Errorf("%w: RSA key of %d bits, exponent %d", ErrInvalidKey, pub.N.BitLen(), pub.E)
		}
		return pub, nil
	case "EC":
		var curve elliptic.Curve
		switch {
		case j.Crv == "P-256" && alg == ES256:
			curve = elliptic.P256()
		case j.Crv == "P-384" && alg == ES384:
			curve = elliptic.P384()
		default:
			return nil, fmt.Errorf("%w: EC curve %q for %s", ErrInvalidKey, j.Crv, alg)
		}
		size := (curve.Params().BitSize + 7) / 8
		x, err1 := b64.DecodeString(j.X)
		y, err2 := b64.DecodeString(j.Y)
		if err1 != nil || err2 != nil || len(x) != size || len(y) != size {
			return nil, fmt.Errorf("%w: EC coordinates", ErrInvalidKey)
		}
		raw := append(append([]byte{4}, x...), y...)
		pub, err := ecdsa.ParseUncompressedPublicKey(curve, raw)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidKey, err)
		}
		return pub, nil
	case "OKP":
		x, err := b64.DecodeString(j.X)
		if err != nil || j.Crv != "Ed25519" || len(x) != ed25519.PublicKeySize || alg != EdDSA {
			return nil, fmt.Errorf("%w: OKP members", ErrInvalidKey)
		}
		return ed25519.PublicKey(x), nil
	}
	return nil, fmt.Errorf("%w: kty %q", ErrInvalidKey, j.Kty)
}
