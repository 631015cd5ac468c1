package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/auth-platform/tokenservice/rpc/auth/authtest"
)

// TestClientEntries: the policy refuses client entries whose fields do
// not go with their method, and duplicates.
func TestClientEntries(t *testing.T) {
	const hash = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
	for name, entries := range map[string]string{
		"unknown method":       `{client_id: a, auth: client_secret_post}`,
		"none with a secret":   `{client_id: a, auth: none, secret_sha256: ` + hash + `}`,
		"none with a role":     `{client_id: a, auth: none, roles: [resource-server]}`,
		"basic without secret": `{client_id: a, auth: client_secret_basic}`,
		"bad secret hash":      `{client_id: a, auth: client_secret_basic, secret_sha256: abc}`,
		"jwt without keys":     `{client_id: a, auth: private_key_jwt}`,
		"jwt with a bad key":   `{client_id: a, auth: private_key_jwt, jwks: {keys: [{kty: EC, crv: P-256, alg: ES256, x: AA, y: AA}]}}`,
		"tls without identity": `{client_id: a, auth: tls_client_auth}`,
		"unknown role":         `{client_id: a, auth: client_secret_basic, secret_sha256: ` + hash + `, roles: [root]}`,
		"empty client_id":      `{client_id: "", auth: none}`,
		"duplicate client_id":  `{client_id: a, auth: none}` + "\n  - " + `{client_id: a, auth: none}`,
		"shared identity":      `{client_id: a, auth: tls_client_auth, identity: x}` + "\n  - " + `{client_id: b, auth: tls_client_auth, identity: x}`,
	} {
		if _, err := ParsePolicy([]byte("clients:\n  - " + entries + "\n" + EndMarker + "\n")); !errors.Is(err, ErrInvalidPolicy) {
			t.Errorf("%s: accepted (%v)", name, err)
		}
	}
}

// TestTLSClientAuth: a verified certificate whose identity is a
// tls_client_auth client's authenticates it (RFC 8705 §2.1); the
// certificate of another identity, or a client_id naming another client,
// does not.
func TestTLSClientAuth(t *testing.T) {
	ca := authtest.NewCA(t, "clients")
	mesh := ca.ClientURI(t, "spiffe://example.org/mesh")
	stranger := ca.ClientURI(t, "spiffe://example.org/stranger")
	file := filepath.Join(t.TempDir(), "p.yaml")
	policy := "clients:\n  - {client_id: mesh, auth: tls_client_auth, identity: \"spiffe://example.org/mesh\"}\n  - {client_id: web, auth: none}\n" + EndMarker + "\n"
	if err := os.WriteFile(file, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	pol, err := LoadPolicy(file, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(Config{Policy: pol, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	auth := func(cert *x509.Certificate, form url.Values) (Identity, error) {
		r := httptest.NewRequest("POST", "/oauth2/token", nil)
		ctx := context.Background()
		if cert != nil {
			ctx = withPeerCertificate(ctx, &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}})
		}
		return g.AuthenticateClient(ctx, r, PathOAuthToken, form, nil)
	}
	id, err := auth(mesh.Leaf, url.Values{})
	if err != nil || id.Kind != KindClient || id.Name != "mesh" || id.Method != ClientAuthTLS || id.Actor() != "client:mesh" {
		t.Fatalf("mesh certificate: %+v, %v", id, err)
	}
	if _, err := auth(mesh.Leaf, url.Values{"client_id": {"mesh"}}); err != nil {
		t.Fatalf("mesh certificate with its client_id: %v", err)
	}
	if id, err := auth(stranger.Leaf, url.Values{"client_id": {"mesh"}}); err == nil {
		t.Fatalf("another certificate passed as mesh: %+v", id)
	}
	if id, err := auth(nil, url.Values{"client_id": {"mesh"}}); err == nil || !strings.Contains(err.Error(), "tls_client_auth") {
		t.Fatalf("mesh without its certificate: %+v, %v", id, err)
	}
	// With the mesh certificate, naming the public client web is web.
	if id, err := auth(mesh.Leaf, url.Values{"client_id": {"web"}}); err != nil || id.Name != "web" || id.Method != ClientAuthNone {
		t.Fatalf("mesh certificate naming web: %+v, %v", id, err)
	}
}
