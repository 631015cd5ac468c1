package auth_test

import (
	"errors"
	"testing"

	"github.com/auth-platform/tokenservice/rpc/auth"
	"github.com/auth-platform/tokenservice/rpc/auth/authtest"
)

// TestCertificateIdentity: the one rule of certificate identity that
// tokend and cryptod share.
func TestCertificateIdentity(t *testing.T) {
	t.Parallel()
	ca := authtest.NewCA(t, "identity CA")
	const uri = "spiffe://test.example/ns/auth/sa/login"
	tests := []struct {
		name    string
		cert    *authtest.Cert
		want    string
		wantErr error
	}{
		{name: "one URI SAN", cert: ca.ClientURI(t, uri), want: uri},
		{name: "CN", cert: ca.ClientCN(t, "orders-api"), want: "orders-api"},
		{name: "CN that looks like a URI", cert: ca.ClientCN(t, uri), wantErr: auth.ErrUnknownCredential},
		{name: "two URI SANs", cert: ca.Issue(t, authtest.Options{URIs: []string{uri, "spiffe://test.example/other"}}), wantErr: auth.ErrUnknownCredential},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := auth.CertificateIdentity(tt.cert.Leaf)
			if !errors.Is(err, tt.wantErr) || got != tt.want {
				t.Fatalf("CertificateIdentity = %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
