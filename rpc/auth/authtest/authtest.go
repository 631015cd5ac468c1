// Package authtest makes certificates for tests of TLS and mTLS: a test CA,
// server certificates for loopback, client certificates with a URI SAN
// (SPIFFE ID) or a common name, expired ones, and files to load them from.
// Keys are ECDSA P-256. Everything fails the test on error.
package authtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority for tests.
type CA struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
}

// NewCA returns a self-signed CA named name, valid from an hour ago for a
// day.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, Key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// Pool returns a pool holding the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// WriteFile writes the CA certificate to dir/name and returns the path.
func (ca *CA) WriteFile(t testing.TB, dir, name string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Options describe a certificate. The zero value is a client certificate
// without identity, valid from an hour ago for an hour.
type Options struct {
	CommonName string
	URIs       []string // URI SANs, e.g. spiffe://example.org/ns/a/sa/b
	DNSNames   []string
	IPs        []net.IP
	// Server makes a server certificate (ExtKeyUsageServerAuth), else a
	// client certificate (ExtKeyUsageClientAuth).
	Server bool
	// NotBefore and NotAfter default to an hour ago and an hour ahead.
	NotBefore, NotAfter time.Time
}

// Cert is an issued certificate with its key.
type Cert struct {
	TLS     tls.Certificate
	Leaf    *x509.Certificate
	CertPEM []byte // the leaf only
	KeyPEM  []byte
}

// Issue returns a certificate signed by the CA.
func (ca *CA) Issue(t testing.TB, o Options) *Cert {
	t.Helper()
	key := newKey(t)
	now := time.Now()
	if o.NotBefore.IsZero() {
		o.NotBefore = now.Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = now.Add(time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: o.CommonName},
		NotBefore:    o.NotBefore,
		NotAfter:     o.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		DNSNames:     o.DNSNames,
		IPAddresses:  o.IPs,
	}
	if o.Server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	for _, s := range o.URIs {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return &Cert{
		TLS:     tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		Leaf:    leaf,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
}

// ServerCert returns a server certificate for 127.0.0.1, ::1 and
// localhost.
func (ca *CA) ServerCert(t testing.TB) *Cert {
	t.Helper()
	return ca.Issue(t, Options{
		CommonName: "localhost", Server: true,
		DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	})
}

// ClientURI returns a client certificate whose identity is the URI SAN uri.
func (ca *CA) ClientURI(t testing.TB, uri string) *Cert {
	t.Helper()
	return ca.Issue(t, Options{URIs: []string{uri}})
}

// ClientCN returns a client certificate whose identity is the common name
// cn (no URI SAN).
func (ca *CA) ClientCN(t testing.TB, cn string) *Cert {
	t.Helper()
	return ca.Issue(t, Options{CommonName: cn})
}

// Expired returns a client certificate with URI SAN uri that expired an
// hour ago.
func (ca *CA) Expired(t testing.TB, uri string) *Cert {
	t.Helper()
	now := time.Now()
	return ca.Issue(t, Options{URIs: []string{uri}, NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour)})
}

// WriteFiles writes the certificate and key to dir/name.crt and
// dir/name.key (mode 0600) and returns the paths.
func (c *Cert) WriteFiles(t testing.TB, dir, name string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, c.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, c.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// ClientTLS returns a client configuration that trusts ca, offers h2 and
// presents cert (nil: no certificate).
func ClientTLS(ca *CA, cert *Cert) *tls.Config {
	cfg := &tls.Config{RootCAs: ca.Pool(), NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{cert.TLS}
	}
	return cfg
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return n
}
