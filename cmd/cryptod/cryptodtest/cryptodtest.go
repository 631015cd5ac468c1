// Package cryptodtest runs a real cryptod for tests: a SoftHSM2 token of
// its own (signing/pkcs11/hsmtest), a test CA that issues the server's
// certificate and the callers' client certificates, a policy file, and
// the service itself in process on a loopback port, or the environment a
// child cryptod process needs to serve the same token. Nothing is faked:
// calls go over TLS with mTLS to the service, which signs and
// encrypts on the token.
//
// Certificates come from rpc/auth/authtest.
package cryptodtest

import (
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/cmd/cryptod/app"
	"github.com/auth-platform/tokenservice/rpc/auth"
	"github.com/auth-platform/tokenservice/rpc/auth/authtest"
	"github.com/auth-platform/tokenservice/signing/pkcs11/hsmtest"
)

// Callers of the policy Fixture writes.
const (
	// Namespace is the namespace Identity and APIKey may use.
	Namespace = "tokenservice"
	// Identity is the URI SAN of Fixture.ClientCert.
	Identity = "spiffe://test.local/tokend"
	// OtherIdentity is the URI SAN of Fixture.OtherCert, a caller that may
	// use only the namespace "other".
	OtherIdentity = "spiffe://test.local/other"
	// APIKey is the API key of a caller with Namespace.
	APIKey = "test-api-key-0123456789"
)

// Fixture is everything a cryptod needs, ready to start.
type Fixture struct {
	Token *hsmtest.Token
	// CA issued every certificate; CAFile holds it (PEM).
	CA     *authtest.CA
	CAFile string
	// ServerCert and ServerKey are cryptod's certificate files.
	ServerCert, ServerKey string
	// ClientCert and ClientKey are the mTLS credentials of Identity.
	ClientCert, ClientKey string
	// OtherCert and OtherKey are those of OtherIdentity.
	OtherCert, OtherKey string
	// PolicyFile grants Identity and APIKey Namespace and "test", and
	// OtherIdentity "other".
	PolicyFile string
}

// New prepares a fixture. It initialises a SoftHSM2 token with
// hsmtest.New, which sets SOFTHSM2_CONF for the whole test: the test
// cannot be parallel.
func New(t testing.TB) *Fixture {
	t.Helper()
	dir := t.TempDir()
	f := &Fixture{Token: hsmtest.New(t), CA: authtest.NewCA(t, "cryptodtest CA")}
	f.CAFile = f.CA.WriteFile(t, dir, "ca.pem")
	f.ServerCert, f.ServerKey = f.CA.ServerCert(t).WriteFiles(t, dir, "cryptod")
	f.ClientCert, f.ClientKey = f.CA.ClientURI(t, Identity).WriteFiles(t, dir, "tokend")
	f.OtherCert, f.OtherKey = f.CA.ClientURI(t, OtherIdentity).WriteFiles(t, dir, "other")
	policy := "callers:\n" +
		"  - name: tokend\n    identities: [\"" + Identity + "\"]\n    api_key_sha256: [\"" + auth.HashAPIKey(APIKey) + "\"]\n    namespaces: [" + Namespace + ", test]\n" +
		"  - name: other\n    identities: [\"" + OtherIdentity + "\"]\n    namespaces: [other]\n"
	f.PolicyFile = filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(f.PolicyFile, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// Environ returns the environment of a cryptod serving the fixture on
// listen (host:port), for a child process; it includes SOFTHSM2_CONF.
func (f *Fixture) Environ(listen string) []string {
	env := map[string]string{
		"CRYPTOD_LISTEN": listen, "CRYPTOD_TLS_CERT_FILE": f.ServerCert, "CRYPTOD_TLS_KEY_FILE": f.ServerKey,
		"CRYPTOD_TLS_CLIENT_CA_FILE": f.CAFile, "CRYPTOD_POLICY_FILE": f.PolicyFile,
		"PKCS11_MODULE": f.Token.Config.Module, "PKCS11_TOKEN_LABEL": f.Token.Config.TokenLabel, "PKCS11_PIN": f.Token.Config.PIN,
		"SOFTHSM2_CONF": os.Getenv("SOFTHSM2_CONF"), "LOG_LEVEL": "error", "LOG_FORMAT": "text",
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// Config returns the app configuration Environ describes.
func (f *Fixture) Config(t testing.TB, listen string) app.Config {
	t.Helper()
	vars := map[string]string{}
	for _, kv := range f.Environ(listen) {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	cfg, err := app.ConfigFromEnv(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// ClientTLS returns the TLS configuration of a caller presenting
// certFile and keyFile (none if empty) that trusts the CA.
func (f *Fixture) ClientTLS(t testing.TB, certFile, keyFile string) *tls.Config {
	t.Helper()
	cfg := authtest.ClientTLS(f.CA, nil)
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return cfg
}

// HTTPClient returns an HTTP/2 client with ClientTLS.
func (f *Fixture) HTTPClient(t testing.TB, certFile, keyFile string) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: f.ClientTLS(t, certFile, keyFile), ForceAttemptHTTP2: true}}
}

// Server is a cryptod running in the test process.
type Server struct {
	*app.Main
	// URL is its base URL, https://127.0.0.1:port.
	URL string
	f   *Fixture
}

// Start serves the fixture in process on a loopback port until t ends.
func (f *Fixture) Start(t testing.TB) *Server {
	t.Helper()
	return f.start(t, "127.0.0.1:0")
}

func (f *Fixture) start(t testing.TB, listen string) *Server {
	t.Helper()
	cfg := f.Config(t, listen)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := app.Start(ctx, cfg, app.NewLogger(cfg))
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Main: m, URL: "https://" + m.Addr(), f: f}
	t.Cleanup(func() { s.Stop() })
	return s
}

// Stop closes the server (a fault test stops it under load); its keys
// stay on the token for Restart. Calling it again does nothing.
func (s *Server) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.Close(ctx) // closing twice reports nothing new
}

// Restart serves the same token on the same address again.
func (s *Server) Restart(t testing.TB) *Server {
	t.Helper()
	return s.f.start(t, s.Addr())
}
