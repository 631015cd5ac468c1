package rpc

import (
	"context"
	"errors"
	"log/slog"

	"connectrpc.com/connect"

	"github.com/auth-platform/tokenservice/dpop"
	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/issuer"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
)

// descriptions are what a client is told per error; nothing more.
var descriptions = []struct {
	err  error
	desc string
}{
	{issuer.ErrMalformedToken, "refresh token is malformed"},
	{issuer.ErrTokenReused, "refresh token was already used; its family is revoked"},
	{issuer.ErrTokenExpired, "refresh token expired"},
	{issuer.ErrClientMismatch, "refresh token was issued to another client"},
	{issuer.ErrDPoPKeyMismatch, "DPoP proof key does not match the token binding"},
	// Unknown, revoked and rotated read the same from outside.
	{issuer.ErrInvalidGrant, "refresh token is invalid, revoked or already rotated"},
}

// toConnect maps a domain error to a Connect error with the OAuth code. It
// logs server errors with the correlation ID.
func toConnect(ctx context.Context, log *slog.Logger, procedure string, err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	if code := dpop.Code(err); code != "" {
		// The failed check of RFC 9449 §4.3 is named: it is what the
		// client got wrong, and tells an attacker nothing new.
		return oauthError(connect.CodeInvalidArgument, code, err.Error())
	}
	code := issuer.Code(err)
	var cc connect.Code
	desc := ""
	switch code {
	case issuer.CodeInvalidRequest, issuer.CodeInvalidScope:
		cc = connect.CodeInvalidArgument
		desc = err.Error() // names the field; holds no secret
		if len(code)+2 < len(desc) && desc[:len(code)] == code {
			desc = desc[len(code)+2:]
		}
	case issuer.CodeInvalidGrant, issuer.CodeInvalidDPoPProof:
		cc = connect.CodeInvalidArgument
		for _, d := range descriptions {
			if errors.Is(err, d.err) {
				desc = d.desc
				break
			}
		}
	default:
		switch {
		case errors.Is(err, context.Canceled):
			cc = connect.CodeCanceled
		case errors.Is(err, context.DeadlineExceeded):
			cc = connect.CodeDeadlineExceeded
		case errors.Is(err, eventlog.ErrAmbiguous):
			cc = connect.CodeUnavailable
		default:
			cc = connect.CodeInternal
		}
		desc = "the request could not be completed"
		log.ErrorContext(ctx, "request failed", "procedure", procedure,
			"correlation_id", eventlog.CorrelationID(ctx), "error", err)
	}
	return oauthError(cc, code, desc)
}

func oauthError(cc connect.Code, code, desc string) *connect.Error {
	msg := code
	if desc != "" {
		msg += ": " + desc
	}
	e := connect.NewError(cc, errors.New(msg))
	if d, err := connect.NewErrorDetail(&tokenv1.OAuthError{Error: code, ErrorDescription: desc}); err == nil {
		e.AddDetail(d)
	}
	return e
}
