// Package cryptodtest runs a real cryptod for tests: a SoftHSM2 token of
// its own (signing/pkcs11/hsmtest), a test CA that issues the server's
// certificate and the callers' client certificates, a policy file, and
// the service itself in process on a loopback port, or the environment a
// child cryptod process needs to serve the same token. Nothing is faked:
// calls go over TLS 1.3 with mTLS to the service, which signs and
// encrypts on the token.
//
// The CA stands in until rpc/auth/authtest (issue 7) can be shared.
package cryptodtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/cmd/cryptod/app"
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

// CA is a test certificate authority (ECDSA P-256).
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	dir  string
	// File is the CA certificate (PEM).
	File string
}

// NewCA makes a CA whose files live in t.TempDir().
func NewCA(t testing.TB) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cryptodtest CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &CA{cert: cert, key: key, dir: t.TempDir()}
	ca.File = filepath.Join(ca.dir, "ca.pem")
	writePEM(t, ca.File, "CERTIFICATE", der)
	return ca
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Issue writes a certificate and key for name: a server certificate for
// 127.0.0.1 and localhost, or a client certificate whose URI SAN is name
// when it is a URI and whose subject CN is name otherwise. It returns the
// files.
func (ca *CA) Issue(t testing.TB, name string, server bool) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		if u, err := url.Parse(name); err == nil && u.Scheme != "" {
			tmpl.URIs = []*url.URL{u}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(ca.dir, strings.NewReplacer("/", "_", ":", "_").Replace(name))
	certFile, keyFile = base+".crt", base+".key"
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "PRIVATE KEY", kder)
	return certFile, keyFile
}

// Fixture is everything a cryptod needs, ready to start.
type Fixture struct {
	Token *hsmtest.Token
	CA    *CA
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
	f := &Fixture{Token: hsmtest.New(t), CA: NewCA(t)}
	f.ServerCert, f.ServerKey = f.CA.Issue(t, "cryptod", true)
	f.ClientCert, f.ClientKey = f.CA.Issue(t, Identity, false)
	f.OtherCert, f.OtherKey = f.CA.Issue(t, OtherIdentity, false)
	sum := sha256.Sum256([]byte(APIKey))
	policy := "callers:\n" +
		"  - name: tokend\n    identities: [\"" + Identity + "\"]\n    api_key_sha256: [\"" + hex.EncodeToString(sum[:]) + "\"]\n    namespaces: [" + Namespace + ", test]\n" +
		"  - name: other\n    identities: [\"" + OtherIdentity + "\"]\n    namespaces: [other]\n"
	f.PolicyFile = filepath.Join(t.TempDir(), "policy.yaml")
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
		"CRYPTOD_TLS_CLIENT_CA_FILE": f.CA.File, "CRYPTOD_POLICY_FILE": f.PolicyFile,
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
	pool := x509.NewCertPool()
	b, err := os.ReadFile(f.CA.File)
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(b)
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
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
