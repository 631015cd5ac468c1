package issuer

import (
	"errors"
	"fmt"
)

// OAuth error codes (RFC 6749 §5.2, RFC 9449 §12.2).
const (
	CodeInvalidRequest   = "invalid_request"
	CodeInvalidGrant     = "invalid_grant"
	CodeInvalidScope     = "invalid_scope"
	CodeInvalidDPoPProof = "invalid_dpop_proof"
	CodeServerError      = "server_error"
)

// The errors of the commands. Each one wraps exactly one of the OAuth
// errors below it, which Code maps to its error code.
var (
	// ErrInvalidRequest: the request is malformed (a field missing, too
	// long, or with characters it may not hold).
	ErrInvalidRequest = errors.New(CodeInvalidRequest)
	// ErrInvalidGrant: the refresh token is not usable.
	ErrInvalidGrant = errors.New(CodeInvalidGrant)
	// ErrInvalidScope: the requested scopes exceed the granted ones.
	ErrInvalidScope = errors.New(CodeInvalidScope)
	// ErrInvalidDPoPProof: a DPoP proof is missing, invalid or of the wrong
	// key.
	ErrInvalidDPoPProof = errors.New(CodeInvalidDPoPProof)

	// ErrClaimNotAllowed: extra_claims set an authorization claim
	// (ClaimAuthorization) that the caller may not set.
	ErrClaimNotAllowed = fmt.Errorf("%w: extra_claims may not set this authorization claim for this caller", ErrInvalidRequest)

	// ErrMalformedToken: the refresh token does not have the form
	// "<22 chars>.<43 chars>" of base64url.
	ErrMalformedToken = fmt.Errorf("%w: malformed refresh token", ErrInvalidGrant)
	// ErrUnknownToken: no family has this token, current or spent.
	ErrUnknownToken = fmt.Errorf("%w: unknown refresh token", ErrInvalidGrant)
	// ErrTokenExpired: the refresh token expired.
	ErrTokenExpired = fmt.Errorf("%w: refresh token expired", ErrInvalidGrant)
	// ErrFamilyRevoked: the token's family is revoked.
	ErrFamilyRevoked = fmt.Errorf("%w: refresh token revoked", ErrInvalidGrant)
	// ErrTokenReused: a spent token was presented again; the family is now
	// revoked.
	ErrTokenReused = fmt.Errorf("%w: refresh token reused", ErrInvalidGrant)
	// ErrTokenRotated: the token was rotated by a concurrent request.
	ErrTokenRotated = fmt.Errorf("%w: refresh token already rotated", ErrInvalidGrant)
	// ErrClientMismatch: the token was issued to another client.
	ErrClientMismatch = fmt.Errorf("%w: refresh token issued to another client", ErrInvalidGrant)
	// ErrDPoPKeyMismatch: the family is bound to another DPoP key, or
	// bound and no proof was given.
	ErrDPoPKeyMismatch = fmt.Errorf("%w: proof key does not match the token's binding", ErrInvalidDPoPProof)
)

// Code returns the OAuth error code of err, or CodeServerError if err is
// not one of the errors above.
func Code(err error) string {
	switch {
	case errors.Is(err, ErrInvalidRequest):
		return CodeInvalidRequest
	case errors.Is(err, ErrInvalidGrant):
		return CodeInvalidGrant
	case errors.Is(err, ErrInvalidScope):
		return CodeInvalidScope
	case errors.Is(err, ErrInvalidDPoPProof):
		return CodeInvalidDPoPProof
	}
	return CodeServerError
}

func invalidRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidRequest, fmt.Sprintf(format, args...))
}
