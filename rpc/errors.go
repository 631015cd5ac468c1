package rpc

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"connectrpc.com/connect"

	"github.com/auth-platform/tokenservice/dpop"
	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/rpc/auth"
	"github.com/auth-platform/tokenservice/rpc/refusal"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/keyring"
)

// Refusals returns the one table of the service's refusals: each domain
// sentinel with its Connect code, OAuth error code and what the client is
// told, nothing more. An error it does not name is an internal error with
// a generic text, logged (Table.Rule). The guard's rules
// (auth.Refusals) are part of it.
func Refusals() refusal.Table {
	invalid := func(err error, oauth, public string) refusal.Rule {
		return refusal.Rule{Err: err, Code: connect.CodeInvalidArgument, OAuth: oauth, Public: public}
	}
	server := func(err error, code connect.Code) refusal.Rule {
		return refusal.Rule{Err: err, Code: code, OAuth: refusal.ServerError, Public: refusal.Generic, Log: true}
	}
	t := refusal.Table{
		// The field at fault is named (the error's Detail); it holds no
		// secret.
		invalid(issuer.ErrInvalidRequest, refusal.InvalidRequest, ""),
		invalid(issuer.ErrInvalidScope, refusal.InvalidScope, "requested scopes exceed the granted ones"),
		invalid(issuer.ErrMalformedToken, refusal.InvalidGrant, "refresh token is malformed"),
		invalid(issuer.ErrTokenReused, refusal.InvalidGrant, "refresh token was already used; its family is revoked"),
		invalid(issuer.ErrTokenExpired, refusal.InvalidGrant, "refresh token expired"),
		invalid(issuer.ErrClientMismatch, refusal.InvalidGrant, "refresh token was issued to another client"),
		// Unknown, revoked and rotated read the same from outside.
		invalid(issuer.ErrInvalidGrant, refusal.InvalidGrant, "refresh token is invalid, revoked or already rotated"),
		// The failed check of RFC 9449 §4.3 is named (the error's Detail):
		// it is what the client got wrong, and tells an attacker nothing
		// new.
		invalid(dpop.ErrUseNonce, dpop.CodeUseNonce, ""),
		invalid(dpop.ErrInvalidProof, dpop.CodeInvalidProof, ""),
		// An admin's rotation with provisioned keys (KMS_KEY_ID,
		// CRYPTO_SIGNING_KEY) before the operator supplied the next key:
		// what to do is the whole answer.
		{Err: keyring.ErrNoNewKey, Code: connect.CodeFailedPrecondition, OAuth: refusal.InvalidRequest,
			Public: "the signing key is provisioned by the operator: supply the next key (a new KMS_KEY_ID, or a new version of CRYPTO_SIGNING_KEY) first"},
		server(context.Canceled, connect.CodeCanceled),
		server(context.DeadlineExceeded, connect.CodeDeadlineExceeded),
		server(eventlog.ErrAmbiguous, connect.CodeUnavailable),
		// The remote signing backend failed and no fallback key signs: the
		// breaker lets a trial call through after its open interval, so
		// the caller is told to come back, not that the server broke.
		{Err: signing.ErrUnavailable, Code: connect.CodeUnavailable, OAuth: refusal.TemporarilyUnavailable,
			Public: "signing is unavailable for now; retry later", Log: true, RetryAfter: signingRetryAfter},
	}
	return append(t, auth.Refusals()...)
}

// signingRetryAfter is the retry hint of a signing outage: about half the
// breaker's default open interval (10 s).
const signingRetryAfter = 5 * time.Second

// toConnect maps a domain error to a Connect error with the OAuth code
// (Refusals). It logs server errors with the correlation ID; a Connect
// error passes through as it is.
func toConnect(ctx context.Context, log *slog.Logger, procedure string, err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	r := Refusals().Rule(err)
	if r.Log {
		log.ErrorContext(ctx, "request failed", "procedure", procedure,
			"correlation_id", eventlog.CorrelationID(ctx), "error", err)
	}
	return r.Error(err)
}

// oauthError returns a refusal the handler decided itself (a field of the
// request that no domain package reads), in the form of every refusal.
func oauthError(cc connect.Code, code, desc string) *connect.Error {
	return refusal.New(cc, code, desc, nil)
}
