package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/auth-platform/tokenservice/dpop"
	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/issuer"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/rpc"
	"github.com/auth-platform/tokenservice/rpc/auth"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/keyring"
)

// TestRefusals: every sentinel, bare or wrapped with context, maps to its
// Connect code, OAuth code and public text; the message starts with the
// code and matches the OAuthError detail; the server side still finds the
// sentinel; anything else is an internal error that says nothing.
func TestRefusals(t *testing.T) {
	t.Parallel()
	const generic = "the request could not be completed"
	inv := connect.CodeInvalidArgument
	for _, tc := range []struct {
		name   string
		err    error
		code   connect.Code
		oauth  string
		public string
		log    bool
	}{
		{"field named", issuer.ErrClaimNotAllowed, inv, "invalid_request", "extra_claims may not set this authorization claim for this caller", false},
		{"invalid scope", fmt.Errorf("refresh: %w", issuer.ErrInvalidScope), inv, "invalid_scope", "requested scopes exceed the granted ones", false},
		{"malformed", issuer.ErrMalformedToken, inv, "invalid_grant", "refresh token is malformed", false},
		{"reused", fmt.Errorf("refresh: %w", issuer.ErrTokenReused), inv, "invalid_grant", "refresh token was already used; its family is revoked", false},
		{"expired", issuer.ErrTokenExpired, inv, "invalid_grant", "refresh token expired", false},
		{"other client", issuer.ErrClientMismatch, inv, "invalid_grant", "refresh token was issued to another client", false},
		{"unknown token", issuer.ErrUnknownToken, inv, "invalid_grant", "refresh token is invalid, revoked or already rotated", false},
		{"revoked", issuer.ErrFamilyRevoked, inv, "invalid_grant", "refresh token is invalid, revoked or already rotated", false},
		{"rotated", fmt.Errorf("refresh: %w", issuer.ErrTokenRotated), inv, "invalid_grant", "refresh token is invalid, revoked or already rotated", false},
		{"invalid grant", issuer.ErrInvalidGrant, inv, "invalid_grant", "refresh token is invalid, revoked or already rotated", false},
		{"proof key mismatch", fmt.Errorf("refresh: %w", dpop.ErrKeyMismatch), inv, "invalid_dpop_proof", "DPoP proof key does not match the token binding", false},
		{"proof signature", dpop.ErrSignature, inv, "invalid_dpop_proof", "DPoP proof signature does not verify", false},
		// The check is named, not what was wrapped around it.
		{"proof htu, wrapped", fmt.Errorf("%w: request URI: %v", dpop.ErrURI, errors.New("parse \"http://[::1\": missing ']'")), inv, "invalid_dpop_proof", "DPoP proof htu does not match the request URI", false},
		{"proof missing", dpop.ErrMissing, inv, "invalid_dpop_proof", "DPoP proof missing", false},
		{"nonce stale", dpop.ErrNonceStale, inv, "use_dpop_nonce", "DPoP nonce is stale or unknown", false},
		{"nonce missing", fmt.Errorf("generate: %w", dpop.ErrNonceMissing), inv, "use_dpop_nonce", "DPoP nonce required", false},
		{"no new provisioned key", fmt.Errorf("rotate: %w: the provisioned key arn:aws:kms:key/1 is active already", keyring.ErrNoNewKey), connect.CodeFailedPrecondition, "invalid_request",
			"the signing key is provisioned by the operator: supply the next key (a new KMS_KEY_ID, or a new version of CRYPTO_SIGNING_KEY) first", false},
		{"canceled", fmt.Errorf("append: %w", context.Canceled), connect.CodeCanceled, "server_error", generic, true},
		{"deadline", fmt.Errorf("append: %w", context.DeadlineExceeded), connect.CodeDeadlineExceeded, "server_error", generic, true},
		{"ambiguous append", fmt.Errorf("append family f1: %w", eventlog.ErrAmbiguous), connect.CodeUnavailable, "server_error", generic, true},
		{"signing outage", fmt.Errorf("sign: %w: breaker open", signing.ErrUnavailable), connect.CodeUnavailable, "temporarily_unavailable", "signing is unavailable for now; retry later", true},
		{"no credential", auth.ErrNoCredential, connect.CodeUnauthenticated, "invalid_client", "authentication required", false},
		// Unknown and expired read the same.
		{"unknown credential", auth.ErrUnknownCredential, connect.CodeUnauthenticated, "invalid_client", "invalid credential", false},
		{"expired credential", fmt.Errorf("key k1: %w", auth.ErrExpiredCredential), connect.CodeUnauthenticated, "invalid_client", "invalid credential", false},
		{"client not allowed", auth.ErrClientNotAllowed, connect.CodePermissionDenied, "unauthorized_client", "client_id not allowed for this caller", false},
		{"rate limited", auth.ErrRateLimited, connect.CodeResourceExhausted, "temporarily_unavailable", "rate limit exceeded", false},
		{"permission denied", fmt.Errorf("%w: procedure not in the policy", auth.ErrPermissionDenied), connect.CodePermissionDenied, "unauthorized_client", "permission denied", false},
		{"withdrawn, key gone", fmt.Errorf("%w: %w", auth.ErrCallerWithdrawn, auth.ErrUnknownCredential), connect.CodeUnauthenticated, "invalid_client", "invalid credential", false},
		{"withdrawn, role lost", fmt.Errorf("%w: %w", auth.ErrCallerWithdrawn, auth.ErrPermissionDenied), connect.CodePermissionDenied, "unauthorized_client", "permission denied", false},
		{"unknown error", errors.New("pkcs11: slot 3: CKR_PIN_LOCKED"), connect.CodeInternal, "server_error", generic, true},
		{"unknown wrapped error", fmt.Errorf("sign: %w", errors.New("kms: AccessDenied for arn:aws:kms:key/1")), connect.CodeInternal, "server_error", generic, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := rpc.Refusals().Rule(tc.err)
			if r.Code != tc.code || r.OAuth != tc.oauth || r.Text(tc.err) != tc.public || r.Log != tc.log {
				t.Fatalf("rule %+v with text %q, want %v %s %q log %v", r, r.Text(tc.err), tc.code, tc.oauth, tc.public, tc.log)
			}
			ce := rpc.Refusals().Error(tc.err)
			if ce.Code() != tc.code {
				t.Fatalf("code %v, want %v", ce.Code(), tc.code)
			}
			if want := tc.oauth + ": " + tc.public; ce.Message() != want {
				t.Fatalf("message %q, want %q", ce.Message(), want)
			}
			oe := oauthDetail(t, ce)
			if oe.GetError() != tc.oauth || oe.GetErrorDescription() != tc.public {
				t.Fatalf("detail %v, want %s %q", oe, tc.oauth, tc.public)
			}
			if !errors.Is(ce, tc.err) {
				t.Fatal("the refusal does not wrap the error for the server's side")
			}
		})
	}
}

// TestRefusalsReachable: no rule is hidden by an earlier one, so each
// sentinel gets its own row.
func TestRefusalsReachable(t *testing.T) {
	t.Parallel()
	table := rpc.Refusals()
	for i, r := range table {
		if r.Err == nil {
			t.Fatalf("rule %d matches every error: unknown errors must stay internal", i)
		}
		if got := table.Rule(r.Err); got != r {
			t.Errorf("%v: rule %+v, want its own %+v", r.Err, got, r)
		}
		if strings.TrimSpace(r.OAuth) == "" {
			t.Errorf("%v: no OAuth code", r.Err)
		}
	}
}

func oauthDetail(t *testing.T, ce *connect.Error) *tokenv1.OAuthError {
	t.Helper()
	for _, d := range ce.Details() {
		v, err := d.Value()
		if err != nil {
			t.Fatal(err)
		}
		if oe, ok := v.(*tokenv1.OAuthError); ok {
			return oe
		}
	}
	t.Fatal("no OAuthError detail")
	return nil
}

// TestSigningOutageRetryHint: a signing outage with no fallback key is
// unavailable with a retry hint, not an internal error.
func TestSigningOutageRetryHint(t *testing.T) {
	err := fmt.Errorf("sign: %w: breaker open", signing.ErrUnavailable)
	ce := rpc.Refusals().Rule(err).Error(err)
	if ce.Code() != connect.CodeUnavailable || ce.Meta().Get("Retry-After") != "5" {
		t.Fatalf("refusal %v with Retry-After %q, want unavailable and 5", ce.Code(), ce.Meta().Get("Retry-After"))
	}
}
