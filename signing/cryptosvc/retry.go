package cryptosvc

import (
	"context"
	"errors"
	"syscall"

	"connectrpc.com/connect"
)

// transient reports whether a call that failed with err may succeed if it
// is made again: the service answered UNAVAILABLE (crypto.v1's code for
// "the HSM cannot be reached; the call may be retried", which is also
// what the client reports when the service cannot be reached, and what a
// proxy's 502, 503 or 504 maps to) or RESOURCE_EXHAUSTED (a service that
// throttles its callers), or the connection was reset under the call.
// connect-go reports a reset connection (ECONNRESET, EPIPE) as CANCELED,
// the code of a caller's own cancellation, which is not transient; the
// two are told apart by the cause. Every other code crypto.v1 lists is
// permanent (NOT_FOUND, INVALID_ARGUMENT, ALREADY_EXISTS,
// FAILED_PRECONDITION, UNAUTHENTICATED, PERMISSION_DENIED).
func transient(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeResourceExhausted:
		return true
	case connect.CodeCanceled:
		return !errors.Is(err, context.Canceled) && (errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE))
	}
	return false
}
