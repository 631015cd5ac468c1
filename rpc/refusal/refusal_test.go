package refusal_test

import (
	"errors"
	"fmt"
	"testing"

	"connectrpc.com/connect"

	"github.com/auth-platform/tokenservice/rpc/refusal"
)

var errField = errors.New("field")

type fieldError struct{ detail string }

func (e *fieldError) Error() string  { return "field: " + e.detail + " (internal context)" }
func (e *fieldError) Unwrap() error  { return errField }
func (e *fieldError) Detail() string { return e.detail }

func TestTable(t *testing.T) {
	t.Parallel()
	errFixed := errors.New("fixed")
	table := refusal.Table{
		{Err: errField, Code: connect.CodeInvalidArgument, OAuth: refusal.InvalidRequest},
		{Err: errFixed, Code: connect.CodeNotFound, Public: "not found"},
	}
	withFallback := append(table, refusal.Rule{Code: connect.CodeUnavailable, Public: "unavailable", Log: true})
	for _, tc := range []struct {
		name       string
		table      refusal.Table
		err        error
		wantCode   connect.Code
		wantMsg    string
		wantDetail bool
	}{
		{"detail of the error", table, fmt.Errorf("ctx: %w", &fieldError{"subject is required"}), connect.CodeInvalidArgument, "invalid_request: subject is required", true},
		{"sentinel without detail", table, errField, connect.CodeInvalidArgument, "invalid_request", true},
		{"no OAuth code", table, fmt.Errorf("ctx: %w", errFixed), connect.CodeNotFound, "not found", false},
		{"unknown", table, errors.New("secret detail"), connect.CodeInternal, "server_error: " + refusal.Generic, true},
		{"own fallback", withFallback, errors.New("secret detail"), connect.CodeUnavailable, "unavailable", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ce := tc.table.Error(tc.err)
			if ce.Code() != tc.wantCode || ce.Message() != tc.wantMsg {
				t.Fatalf("%v %q, want %v %q", ce.Code(), ce.Message(), tc.wantCode, tc.wantMsg)
			}
			if got := len(ce.Details()) == 1; got != tc.wantDetail {
				t.Fatalf("%d details, want an OAuthError: %v", len(ce.Details()), tc.wantDetail)
			}
			if !errors.Is(ce, tc.err) {
				t.Fatal("the refusal does not wrap its cause")
			}
		})
	}
}
