package signing_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/auth-platform/tokenservice/signing"
)

// TestThumbprintRFC7638 checks the example of RFC 7638 §3.1.
func TestThumbprintRFC7638(t *testing.T) {
	j := signing.JWK{
		Kty: "RSA",
		N: "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMs" +
			"tn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91" +
			"CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
		E:   "AQAB",
		Alg: "RS256",
		Kid: "2011-04-29",
	}
	if got, want := j.Thumbprint(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"; got != want {
		t.Fatalf("thumbprint %s, want %s", got, want)
	}
}

func TestJWKRefusesBadKeys(t *testing.T) {
	tests := []struct {
		name    string
		jwk     signing.JWK
		wantErr error
	}{
		{"unknown alg", signing.JWK{Kty: "EC", Alg: "HS256"}, signing.ErrUnsupportedAlgorithm},
		{"none", signing.JWK{Kty: "EC", Alg: "none"}, signing.ErrUnsupportedAlgorithm},
		{"short RSA", signing.JWK{Kty: "RSA", Alg: "RS256", N: "AQAB", E: "AQAB"}, signing.ErrInvalidKey},
		{"huge RSA", signing.JWK{Kty: "RSA", Alg: "RS256", N: strings.Repeat("_", 1400), E: "AQAB"}, signing.ErrInvalidKey},
		{"RSA for ES256", signing.JWK{Kty: "RSA", Alg: "ES256", N: "AQAB", E: "AQAB"}, signing.ErrInvalidKey},
		{"P-384 for ES256", signing.JWK{Kty: "EC", Alg: "ES256", Crv: "P-384", X: "AA", Y: "AA"}, signing.ErrInvalidKey},
		{"point off the curve", signing.JWK{Kty: "EC", Alg: "ES256", Crv: "P-256",
			X: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", Y: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE"}, signing.ErrInvalidKey},
		{"short Ed25519", signing.JWK{Kty: "OKP", Alg: "EdDSA", Crv: "Ed25519", X: "AAAA"}, signing.ErrInvalidKey},
		{"X25519", signing.JWK{Kty: "OKP", Alg: "EdDSA", Crv: "X25519", X: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}, signing.ErrInvalidKey},
		{"oct", signing.JWK{Kty: "oct", Alg: "RS256"}, signing.ErrInvalidKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.jwk.PublicKey(); !errors.Is(err, tc.wantErr) {
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
		})
	}
}
