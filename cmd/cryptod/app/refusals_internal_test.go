package app

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/auth-platform/tokenservice/cmd/cryptod/keystore"
)

// TestRefusals: each store error keeps its code; an HSM failure says
// nothing of its cause.
func TestRefusals(t *testing.T) {
	t.Parallel()
	ref := keystore.Ref{Namespace: "Bad NS", Name: "k"}
	for _, tc := range []struct {
		name    string
		err     error
		code    connect.Code
		message string
	}{
		{"unauthenticated", errUnauthenticated, connect.CodeUnauthenticated, "unauthenticated"},
		{"namespace", errNamespace, connect.CodePermissionDenied, "namespace not allowed for this caller"},
		{"invalid names the field", ref.Check(), connect.CodeInvalidArgument, `namespace "Bad NS"`},
		{"decrypt", fmt.Errorf("decrypt: %w", keystore.ErrDecrypt), connect.CodeInvalidArgument, "ciphertext does not decrypt"},
		{"not found", fmt.Errorf("%w: tokens/k1", keystore.ErrNotFound), connect.CodeNotFound, "key not found"},
		{"exists", keystore.ErrExists, connect.CodeAlreadyExists, "key exists with another type"},
		{"purpose", keystore.ErrPurpose, connect.CodeFailedPrecondition, "key of another purpose"},
		{"canceled", fmt.Errorf("sign: %w", context.Canceled), connect.CodeCanceled, "context canceled"},
		{"deadline", context.DeadlineExceeded, connect.CodeDeadlineExceeded, "context deadline exceeded"},
		{"HSM failure", errors.New("pkcs11: CKR_DEVICE_ERROR on slot 0"), connect.CodeUnavailable, "the HSM cannot serve the call"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ce := refusals().Error(tc.err)
			if ce.Code() != tc.code || ce.Message() != tc.message {
				t.Fatalf("%v %q, want %v %q", ce.Code(), ce.Message(), tc.code, tc.message)
			}
			if strings.Contains(ce.Message(), "pkcs11") || len(ce.Details()) != 0 {
				t.Fatalf("%q with %d details: says too much", ce.Message(), len(ce.Details()))
			}
		})
	}
}
