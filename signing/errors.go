package signing

import "errors"

var (
	// ErrUnsupportedAlgorithm is returned for an algorithm outside
	// Algorithms, or one a backend does not support.
	ErrUnsupportedAlgorithm = errors.New("signing: unsupported algorithm")
	// ErrInvalidKey is returned for a key or JWK that is malformed, of the
	// wrong type for its algorithm, or too weak.
	ErrInvalidKey = errors.New("signing: invalid key")
	// ErrNoActiveKey is returned when no key is active for signing.
	ErrNoActiveKey = errors.New("signing: no active signing key")
	// ErrUnavailable is returned when a remote backend cannot sign now:
	// its circuit breaker is open, the rate limit is reached, or the call
	// timed out. A fallback key may sign instead.
	ErrUnavailable = errors.New("signing: backend unavailable")
	// ErrProvisioned is returned by the Create of a backend whose keys the
	// operator provisions: it adopts keys, it never creates one.
	ErrProvisioned = errors.New("signing: keys of this backend are provisioned by the operator")
	// ErrMalformedSignature is returned by DERToJOSE for an ECDSA
	// signature a backend returned that does not parse.
	ErrMalformedSignature = errors.New("signing: malformed ECDSA signature")
)
