package issuer

import (
	"errors"
	"fmt"

	"github.com/auth-platform/tokenservice/dpop"
)

// The errors of the commands. Each one wraps exactly one of the first
// three, or dpop.ErrInvalidProof; rpc maps them to OAuth error codes
// (invalid_request, invalid_grant, invalid_scope, invalid_dpop_proof) and
// every other error is a server error.
var (
	// ErrInvalidRequest: the request is malformed (a field missing, too
	// long, or with characters it may not hold). The error names the
	// field in its Detail, which holds no secret.
	ErrInvalidRequest = errors.New("issuer: invalid request")
	// ErrInvalidGrant: the refresh token is not usable.
	ErrInvalidGrant = errors.New("issuer: invalid grant")
	// ErrInvalidScope: the requested scopes exceed the granted ones.
	ErrInvalidScope = errors.New("issuer: invalid scope")

	// ErrClaimNotAllowed: extra_claims set an authorization claim
	// (ClaimAuthorization) that the caller may not set.
	ErrClaimNotAllowed = &detailError{kind: ErrInvalidRequest, detail: "extra_claims may not set this authorization claim for this caller"}

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
)

// refusal reports whether err refuses the request (it wraps one of the
// errors above, or a DPoP error), as opposed to a failure of the service.
func refusal(err error) bool {
	return errors.Is(err, ErrInvalidRequest) || errors.Is(err, ErrInvalidGrant) ||
		errors.Is(err, ErrInvalidScope) || dpop.Code(err) != ""
}

// invalidRequest returns an error wrapping ErrInvalidRequest whose Detail
// is the formatted text: it names the field at fault and holds no secret.
func invalidRequest(format string, args ...any) error {
	return &detailError{kind: ErrInvalidRequest, detail: fmt.Sprintf(format, args...)}
}

// detailError is a refusal with a text that is safe to show the client.
type detailError struct {
	kind   error
	detail string
}

func (e *detailError) Error() string  { return e.kind.Error() + ": " + e.detail }
func (e *detailError) Unwrap() error  { return e.kind }
func (e *detailError) Detail() string { return e.detail }
