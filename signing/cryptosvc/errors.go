package cryptosvc

import "errors"

var (
	// ErrConfig is returned by New for a Config that is incomplete or
	// invalid.
	ErrConfig = errors.New("cryptosvc: invalid configuration")
	// ErrKeyNotFound is returned when the service has no such key or
	// version (NOT_FOUND): destroyed, or another namespace.
	ErrKeyNotFound = errors.New("cryptosvc: key not found in the crypto service")
)
