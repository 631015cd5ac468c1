package dpop

import "errors"

// OAuth error codes of DPoP failures (RFC 9449 §12.2).
const (
	CodeInvalidProof = "invalid_dpop_proof"
	CodeUseNonce     = "use_dpop_nonce"
)

// ErrInvalidProof is wrapped by every error that makes a proof invalid;
// ErrUseNonce by those that a fresh nonce fixes.
var (
	ErrInvalidProof = errors.New(CodeInvalidProof)
	ErrUseNonce     = errors.New(CodeUseNonce)
)

func invalid(msg string) error { return &proofError{msg: msg, kind: ErrInvalidProof} }

type proofError struct {
	msg  string
	kind error
}

func (e *proofError) Error() string { return e.msg }
func (e *proofError) Unwrap() error { return e.kind }

// Detail names the failed check of RFC 9449 §4.3, without what was
// wrapped around it: it is what the client got wrong, and tells an
// attacker nothing new, so it may be shown to the client.
func (e *proofError) Detail() string { return e.msg }

// The checks of RFC 9449 §4.3, one sentinel each.
var (
	ErrMissing         = invalid("DPoP proof missing")
	ErrTooLarge        = invalid("DPoP proof too large")
	ErrMalformed       = invalid("DPoP proof is not a well-formed JWS")
	ErrType            = invalid(`DPoP proof typ is not "dpop+jwt"`)
	ErrAlgorithm       = invalid("DPoP proof alg is not an allowed asymmetric algorithm")
	ErrJWK             = invalid("DPoP proof jwk is missing or not a valid public key for its alg")
	ErrPrivateKey      = invalid("DPoP proof jwk contains private key members")
	ErrSignature       = invalid("DPoP proof signature does not verify")
	ErrMissingClaim    = invalid("DPoP proof lacks a required claim (jti, htm, htu, iat)")
	ErrMethod          = invalid("DPoP proof htm does not match the request method")
	ErrURI             = invalid("DPoP proof htu does not match the request URI")
	ErrIssuedTooEarly  = invalid("DPoP proof iat is too far in the past")
	ErrIssuedInFuture  = invalid("DPoP proof iat is in the future")
	ErrAccessTokenHash = invalid("DPoP proof ath does not match the access token")
	ErrReplay          = invalid("DPoP proof jti was already used")
	ErrKeyMismatch     = invalid("DPoP proof key does not match the token binding")
	// ErrNotTokenRequest: a proof given to a token request was not made for
	// one (POST to a token endpoint, without ath).
	ErrNotTokenRequest = invalid("DPoP proof was not made for a token request (POST to the token endpoint, no ath)")

	ErrNonceMissing = &proofError{msg: "DPoP nonce required", kind: ErrUseNonce}
	ErrNonceStale   = &proofError{msg: "DPoP nonce is stale or unknown", kind: ErrUseNonce}
)

// Code returns the OAuth error code of err: use_dpop_nonce,
// invalid_dpop_proof, or "" for an error that is not about the proof.
func Code(err error) string {
	switch {
	case errors.Is(err, ErrUseNonce):
		return CodeUseNonce
	case errors.Is(err, ErrInvalidProof):
		return CodeInvalidProof
	}
	return ""
}

// Label returns a bounded metric label naming the failed check.
func Label(err error) string {
	for _, e := range []struct {
		err   error
		label string
	}{
		{ErrMissing, "missing"}, {ErrTooLarge, "too_large"}, {ErrMalformed, "malformed"}, {ErrType, "typ"},
		{ErrAlgorithm, "alg"}, {ErrJWK, "jwk"}, {ErrPrivateKey, "private_key"}, {ErrSignature, "signature"},
		{ErrMissingClaim, "missing_claim"}, {ErrMethod, "htm"}, {ErrURI, "htu"}, {ErrIssuedTooEarly, "iat_old"},
		{ErrIssuedInFuture, "iat_future"}, {ErrAccessTokenHash, "ath"}, {ErrReplay, "replay"},
		{ErrKeyMismatch, "key_mismatch"}, {ErrNotTokenRequest, "not_token_request"}, {ErrNonceMissing, "nonce_missing"}, {ErrNonceStale, "nonce_stale"},
	} {
		if errors.Is(err, e.err) {
			return e.label
		}
	}
	if err == nil {
		return "none"
	}
	return "other"
}

// Labels lists every value Label returns.
var Labels = []string{"none", "missing", "too_large", "malformed", "typ", "alg", "jwk", "private_key", "signature",
	"missing_claim", "htm", "htu", "iat_old", "iat_future", "ath", "replay", "key_mismatch", "not_token_request", "nonce_missing",
	"nonce_stale", "other"}
