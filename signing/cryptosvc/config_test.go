package cryptosvc_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/auth-platform/tokenservice/signing/cryptosvc"
)

// TestNewValidates: New refuses an incomplete or invalid Config with
// ErrConfig, before any call.
func TestNewValidates(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		cfg     cryptosvc.Config
		wantErr error
	}{
		{"valid", cryptosvc.Config{Address: "https://cryptod:8443"}, nil},
		{"valid namespace", cryptosvc.Config{Address: "cryptod:8443", Namespace: "team-a.keys_1"}, nil},
		{"no address", cryptosvc.Config{}, cryptosvc.ErrConfig},
		{"plain http", cryptosvc.Config{Address: "http://cryptod:8443"}, cryptosvc.ErrConfig},
		{"namespace with a slash", cryptosvc.Config{Address: "https://cryptod:8443", Namespace: "Bad/NS"}, cryptosvc.ErrConfig},
		{"namespace too long", cryptosvc.Config{Address: "https://cryptod:8443", Namespace: strings.Repeat("a", 64)}, cryptosvc.ErrConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := cryptosvc.New(tc.cfg); !errors.Is(err, tc.wantErr) {
				t.Fatalf("New: %v, want %v", err, tc.wantErr)
			}
		})
	}
}
