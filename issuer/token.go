package issuer

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"

	"github.com/auth-platform/tokenservice/issuer/family"
)

const (
	familyIDBytes = 16
	secretBytes   = 32
	jtiBytes      = 16
	familyIDLen   = 22 // base64url of 16 bytes, no padding
	secretLen     = 43 // base64url of 32 bytes, no padding
	// RefreshTokenLen is the length of every refresh token.
	RefreshTokenLen = familyIDLen + 1 + secretLen
	// maxSpent bounds the spent-secret prefixes of a family; older
	// generations then match nothing (refused, not treated as reuse).
	// Every family event carries them and the log is kept forever, so the
	// bound is also the per-rotation storage cost: 128 × 8 bytes = 1 KiB.
	// With rotations every 15 minutes it covers 32 hours of spent tokens.
	maxSpent = 128
)

var b64 = base64.RawURLEncoding

// refreshToken is a parsed refresh token.
type refreshToken struct {
	familyID string
	secret   []byte
}

// fresh is the randomness of one token pair: the refresh token's secret,
// the access token's ID, and the ID of a new family (unused by a
// rotation).
type fresh struct {
	familyID string
	secret   []byte
	jti      string
}

// newFresh draws a token pair's randomness with one read of rand: with
// BoringCrypto every read is a cgo call.
func newFresh(rand io.Reader) (fresh, error) {
	b := make([]byte, familyIDBytes+secretBytes+jtiBytes)
	if _, err := io.ReadFull(rand, b); err != nil {
		return fresh{}, fmt.Errorf("token randomness: %w", err)
	}
	return fresh{
		familyID: b64.EncodeToString(b[:familyIDBytes]),
		secret:   b[familyIDBytes : familyIDBytes+secretBytes : familyIDBytes+secretBytes],
		jti:      b64.EncodeToString(b[familyIDBytes+secretBytes:]),
	}, nil
}

func formatRefreshToken(fid string, secret []byte) string {
	return fid + "." + b64.EncodeToString(secret)
}

// parseRefreshToken checks the exact shape before anything else, so no
// garbage reaches the log as a subject token.
func parseRefreshToken(s string) (refreshToken, error) {
	if len(s) != RefreshTokenLen || s[familyIDLen] != '.' {
		return refreshToken{}, ErrMalformedToken
	}
	fid := s[:familyIDLen]
	if !validFamilyID(fid) {
		return refreshToken{}, ErrMalformedToken
	}
	secret, err := b64.Strict().DecodeString(s[familyIDLen+1:])
	if err != nil || len(secret) != secretBytes {
		return refreshToken{}, ErrMalformedToken
	}
	return refreshToken{familyID: fid, secret: secret}, nil
}

// validFamilyID reports whether s is a canonical base64url 128-bit ID.
func validFamilyID(s string) bool {
	if len(s) != familyIDLen {
		return false
	}
	b, err := b64.Strict().DecodeString(s)
	return err == nil && len(b) == familyIDBytes
}

func hashSecret(secret []byte) []byte {
	h := sha256.Sum256(secret)
	return h[:]
}

func appendSpent(spent, hash []byte) []byte {
	out := append(append([]byte(nil), spent...), hash[:family.SpentPrefixLen]...)
	if over := len(out) - maxSpent*family.SpentPrefixLen; over > 0 {
		out = out[over:]
	}
	return out
}

// ParseRefreshToken splits a refresh token into its family ID and the
// SHA-256 of its secret (what the family state holds), for tools that
// audit it. It returns ErrMalformedToken if it is not one.
func ParseRefreshToken(s string) (familyID string, secretHash []byte, err error) {
	rt, err := parseRefreshToken(s)
	if err != nil {
		return "", nil, err
	}
	return rt.familyID, hashSecret(rt.secret), nil
}
