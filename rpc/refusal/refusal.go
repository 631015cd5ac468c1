package refusal

import (
	"errors"
	"strconv"
	"time"

	"connectrpc.com/connect"

	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
)

// OAuth error codes of RFC 6749 §5.2 and RFC 6750 §3.1 (the DPoP ones are
// dpop.CodeInvalidProof and dpop.CodeUseNonce).
const (
	InvalidRequest         = "invalid_request"
	InvalidClient          = "invalid_client"
	InvalidGrant           = "invalid_grant"
	UnauthorizedClient     = "unauthorized_client"
	InvalidScope           = "invalid_scope"
	InvalidToken           = "invalid_token"
	ServerError            = "server_error"
	TemporarilyUnavailable = "temporarily_unavailable"
)

// Generic is the public text of a failure on the server's side.
const Generic = "the request could not be completed"

// Detailer is implemented by a domain error whose Detail is safe to show a
// client: it names what the request got wrong and holds no secret.
type Detailer interface {
	Detail() string
}

// Rule is one row of a Table.
type Rule struct {
	// Err is the sentinel the rule matches, with errors.Is. A nil Err
	// matches every error: the last rule of a table that wants its own
	// fallback.
	Err error
	// Code is the Connect code of the refusal.
	Code connect.Code
	// OAuth is the OAuth error code, first in the message and in the
	// tokenv1.OAuthError detail. Empty for a service that is not OAuth
	// (cryptod): the message is then the public text alone, with no
	// detail.
	OAuth string
	// Public is what the client reads. Empty means the Detail of the
	// error, if it has one (Detailer), else nothing.
	Public string
	// Log marks a failure on the server's side, whose detail the caller
	// logs with the correlation ID.
	Log bool
	// RetryAfter, if positive, is sent as the Retry-After metadata (whole
	// seconds): a refusal that will pass later.
	RetryAfter time.Duration
}

// unknown is the rule of an error that no rule of a table matches: an
// internal error with a generic text, logged.
func unknown() Rule {
	return Rule{Code: connect.CodeInternal, OAuth: ServerError, Public: Generic, Log: true}
}

// Table maps errors to refusals: the first rule whose Err matches wins, so
// a specific sentinel comes before the one it wraps.
type Table []Rule

// Rule returns the first rule of t that matches err, or else the rule of
// an unknown error: CodeInternal, ServerError, Generic, logged.
func (t Table) Rule(err error) Rule {
	for _, r := range t {
		if r.Err == nil || errors.Is(err, r.Err) {
			return r
		}
	}
	return unknown()
}

// Error returns the refusal of err: t.Rule(err).Error(err).
func (t Table) Error(err error) *connect.Error {
	return t.Rule(err).Error(err)
}

// Text returns the public text of err under r: r.Public, or else the
// Detail of err if it has one.
func (r Rule) Text(err error) string {
	if r.Public != "" {
		return r.Public
	}
	var d Detailer
	if errors.As(err, &d) {
		return d.Detail()
	}
	return ""
}

// Error returns the refusal of err under r (see New).
func (r Rule) Error(err error) *connect.Error {
	e := New(r.Code, r.OAuth, r.Text(err), err)
	if r.RetryAfter > 0 {
		e.Meta().Set("Retry-After", strconv.Itoa(int(r.RetryAfter.Round(time.Second)/time.Second)))
	}
	return e
}

// New returns a refusal with Connect code code whose message is
// "oauth: public" (or public alone without an OAuth code, oauth alone
// without a public text), with a tokenv1.OAuthError detail when oauth is
// set. It wraps cause (which may be nil) for the server's side only: the
// client sees the message and the detail.
func New(code connect.Code, oauth, public string, cause error) *connect.Error {
	msg := oauth
	switch {
	case msg == "":
		msg = public
	case public != "":
		msg += ": " + public
	}
	e := connect.NewError(code, &refused{msg: msg, cause: cause})
	if oauth != "" {
		if d, err := connect.NewErrorDetail(&tokenv1.OAuthError{Error: oauth, ErrorDescription: public}); err == nil {
			e.AddDetail(d)
		}
	}
	return e
}

// refused is the error under a refusal: the public message, wrapping the
// cause.
type refused struct {
	msg   string
	cause error
}

func (e *refused) Error() string { return e.msg }
func (e *refused) Unwrap() error { return e.cause }
