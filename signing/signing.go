package signing

import (
	"context"
	"crypto"
	"fmt"

	"github.com/golang-jwt/jwt/v5"
)

// Algorithm is a JOSE "alg" value.
type Algorithm string

// The supported algorithms.
const (
	RS256 Algorithm = "RS256"
	PS256 Algorithm = "PS256"
	ES256 Algorithm = "ES256"
	ES384 Algorithm = "ES384"
	EdDSA Algorithm = "EdDSA"
)

// Algorithms lists every supported algorithm.
var Algorithms = []Algorithm{RS256, PS256, ES256, ES384, EdDSA}

// ParseAlgorithm returns the Algorithm named s, or ErrUnsupportedAlgorithm.
func ParseAlgorithm(s string) (Algorithm, error) {
	for _, a := range Algorithms {
		if string(a) == s {
			return a, nil
		}
	}
	return "", fmt.Errorf("%w: %q (want one of RS256, PS256, ES256, ES384, EdDSA)", ErrUnsupportedAlgorithm, s)
}

// Signer signs JWS signing inputs with one key. Implementations are safe
// for concurrent use.
type Signer interface {
	// KeyID returns the key's ID (the "kid" header).
	KeyID() string
	// Algorithm returns the JOSE algorithm the signer uses.
	Algorithm() Algorithm
	// Sign returns the JWS signature of signingInput
	// (BASE64URL(header) "." BASE64URL(payload)), in the JOSE encoding of
	// the algorithm (R||S for ECDSA).
	Sign(ctx context.Context, signingInput []byte) ([]byte, error)
}

// Method returns the golang-jwt signing method of alg.
func Method(alg Algorithm) (jwt.SigningMethod, error) {
	switch alg {
	case RS256:
		return jwt.SigningMethodRS256, nil
	case PS256:
		return jwt.SigningMethodPS256, nil
	case ES256:
		return jwt.SigningMethodES256, nil
	case ES384:
		return jwt.SigningMethodES384, nil
	case EdDSA:
		return jwt.SigningMethodEdDSA, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnsupportedAlgorithm, alg)
}

// Verify checks sig over signingInput with pub for alg.
func Verify(alg Algorithm, pub crypto.PublicKey, signingInput, sig []byte) error {
	m, err := Method(alg)
	if err != nil {
		return err
	}
	return m.Verify(string(signingInput), sig, pub)
}

// StoredKey is what the event log holds of a key: enough for the backend
// that made it to sign with it again.
type StoredKey struct {
	ID        string // RFC 7638 thumbprint
	Algorithm Algorithm
	JWK       JWK
	// Ref is a remote backend's reference to the key (a KMS key ID).
	Ref string
	// Sealed is a local private key, sealed.
	Sealed []byte
}
