package auth

import (
	"errors"

	"connectrpc.com/connect"

	"github.com/auth-platform/tokenservice/rpc/refusal"
)

// Sentinel errors. The first four are why a caller is refused; they reach
// the log, while the caller gets only a short message (see Guard).
var (
	// ErrNoCredential means the request carried no credential (no API key
	// and no client certificate that the policy knows).
	ErrNoCredential = errors.New("auth: no credential")
	// ErrUnknownCredential means an API key, or a client certificate
	// identity, that the policy does not hold, or a malformed
	// Authorization header.
	ErrUnknownCredential = errors.New("auth: unknown credential")
	// ErrExpiredCredential means an API key past its expiry.
	ErrExpiredCredential = errors.New("auth: expired credential")
	// ErrPermissionDenied means the caller's roles do not allow the call,
	// or the procedure is not in the policy table (default deny).
	ErrPermissionDenied = errors.New("auth: permission denied")
	// ErrClientNotAllowed means the caller may not act for the client_id
	// of the request.
	ErrClientNotAllowed = errors.New("auth: client_id not allowed for this caller")
	// ErrRateLimited means the caller exceeded its rate limit.
	ErrRateLimited = errors.New("auth: rate limit exceeded")
	// ErrCallerWithdrawn means a stream's caller, admitted when the
	// stream began, no longer is: its entry left the policy or changed,
	// its key or certificate expired, or it lost the role. It comes
	// wrapped with the reason (ErrUnknownCredential, ErrExpiredCredential,
	// ErrPermissionDenied).
	ErrCallerWithdrawn = errors.New("auth: caller no longer admitted")
	// ErrNotLoopbackHost means a request, with authentication disabled,
	// is addressed to a Host that is not a loopback name or address: a
	// web page whose name was rebound to 127.0.0.1 (DNS rebinding).
	ErrNotLoopbackHost = errors.New("auth: Host is not a loopback name or address")
	// ErrInvalidPolicy wraps every error in a policy file.
	ErrInvalidPolicy = errors.New("auth: invalid policy")
	// ErrIncompletePolicy means a policy file whose last line is not
	// EndMarker: cut short, still being written, or without the marker.
	// It comes wrapped with ErrInvalidPolicy.
	ErrIncompletePolicy = errors.New("auth: incomplete policy file")
)

// publicDenied is the public text of a call the caller's roles do not allow.
const publicDenied = "permission denied"

// Refusals returns the rules of the refusals above (package refusal): the
// Connect code, OAuth error code (RFC 6749 §5.2) and public text of each.
// An unknown credential and an expired one read the same, so that a
// caller learns nothing about which keys exist; a stream's withdrawn
// caller is refused for its reason. The guard refuses an error that no
// rule names as ErrPermissionDenied; rpc's table includes these rules.
func Refusals() refusal.Table {
	return refusal.Table{
		{Err: ErrClientRequest, Code: connect.CodeInvalidArgument, OAuth: refusal.InvalidRequest,
			Public: "malformed client authentication: use one method, HTTP Basic with form-encoded credentials or a client_assertion"},
		{Err: ErrNoCredential, Code: connect.CodeUnauthenticated, OAuth: refusal.InvalidClient, Public: "authentication required"},
		{Err: ErrUnknownCredential, Code: connect.CodeUnauthenticated, OAuth: refusal.InvalidClient, Public: "invalid credential"},
		{Err: ErrExpiredCredential, Code: connect.CodeUnauthenticated, OAuth: refusal.InvalidClient, Public: "invalid credential"},
		{Err: ErrClientNotAllowed, Code: connect.CodePermissionDenied, OAuth: refusal.UnauthorizedClient, Public: "client_id not allowed for this caller"},
		{Err: ErrNotLoopbackHost, Code: connect.CodePermissionDenied, OAuth: refusal.InvalidRequest,
			Public: "authentication is disabled (AUTH_MODE=none), so only requests addressed to localhost, 127.0.0.1 or [::1] are served; the Host of this one is not (DNS rebinding protection)"},
		{Err: ErrRateLimited, Code: connect.CodeResourceExhausted, OAuth: refusal.TemporarilyUnavailable, Public: "rate limit exceeded"},
		{Err: ErrPermissionDenied, Code: connect.CodePermissionDenied, OAuth: refusal.UnauthorizedClient, Public: publicDenied},
		{Err: ErrCallerWithdrawn, Code: connect.CodePermissionDenied, OAuth: refusal.UnauthorizedClient, Public: publicDenied},
	}
}
