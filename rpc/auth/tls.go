package auth

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const maxPEMBytes = 1 << 20

// CertReloader serves the service's certificate from a certificate file
// and a key file (PEM), and replaces it when the files change (Reload,
// Watch). A pair that does not load never replaces a good one, so a
// half-written rotation (new certificate, old key) is retried at the next
// change. It is safe for concurrent use.
type CertReloader struct {
	certFile, keyFile string
	log               *slog.Logger
	cur               atomic.Pointer[loadedCert]

	mu       sync.Mutex
	lastSeen [32]byte
	lastErr  string
}

type loadedCert struct {
	cert *tls.Certificate
	hash [32]byte
}

// NewCertReloader loads the pair once. log receives the outcome of later
// reloads (default slog.Default()). It returns an error if the pair does
// not load.
func NewCertReloader(certFile, keyFile string, log *slog.Logger) (*CertReloader, error) {
	if log == nil {
		log = slog.Default()
	}
	c := &CertReloader{certFile: certFile, keyFile: keyFile, log: log}
	hash, certPEM, keyPEM, err := c.read()
	if err != nil {
		return nil, err
	}
	cert, err := c.load(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	c.cur.Store(&loadedCert{cert: cert, hash: hash})
	c.lastSeen = hash
	return c, nil
}

// GetCertificate returns the current certificate (tls.Config's
// GetCertificate).
func (c *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cur.Load().cert, nil
}

// Leaf returns the current certificate, parsed.
func (c *CertReloader) Leaf() *x509.Certificate { return c.cur.Load().cert.Leaf }

// Reload reads the files again and, if they changed and load, serves the
// new pair to new connections. On error the previous pair stays and the
// error is returned. Call it on SIGHUP.
func (c *CertReloader) Reload() error {
	_, err := c.reload(true)
	return err
}

// Watch checks the files every interval (default 1 s) and reloads them
// when their content changed; a failure is logged once per content while
// the previous pair stays. It returns ctx's error when ctx ends.
func (c *CertReloader) Watch(ctx context.Context, interval time.Duration) error {
	return poll(ctx, interval, func() {
		if news, err := c.reload(false); err != nil && news {
			c.log.Error("TLS certificate not reloaded; the previous one stays in use", "cert_file", c.certFile, "key_file", c.keyFile, "error", err)
		}
	})
}

// reload returns whether its outcome is news: content or a read error not
// seen before. With force it loads even a content already seen.
func (c *CertReloader) reload(force bool) (news bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	hash, certPEM, keyPEM, err := c.read()
	if err != nil {
		news = err.Error() != c.lastErr
		c.lastErr, c.lastSeen = err.Error(), [32]byte{}
		return news, err
	}
	c.lastErr = ""
	news = hash != c.lastSeen
	c.lastSeen = hash
	if hash == c.cur.Load().hash || (!news && !force) {
		return news, nil
	}
	cert, err := c.load(certPEM, keyPEM)
	if err != nil {
		return true, err
	}
	c.cur.Store(&loadedCert{cert: cert, hash: hash})
	c.log.Info("TLS certificate reloaded", "subject", cert.Leaf.Subject.String(), "not_after", cert.Leaf.NotAfter)
	return true, nil
}

// read reads both files; the hash covers both, length-prefixed.
func (c *CertReloader) read() (hash [32]byte, certPEM, keyPEM []byte, err error) {
	if certPEM, err = readBounded(c.certFile, maxPEMBytes); err != nil {
		return hash, nil, nil, fmt.Errorf("auth: TLS certificate: %w", err)
	}
	if keyPEM, err = readBounded(c.keyFile, maxPEMBytes); err != nil {
		return hash, nil, nil, fmt.Errorf("auth: TLS key: %w", err)
	}
	h := sha256.New()
	for _, b := range [][]byte{certPEM, keyPEM} {
		_ = binary.Write(h, binary.BigEndian, uint64(len(b)))
		h.Write(b)
	}
	copy(hash[:], h.Sum(nil))
	return hash, certPEM, keyPEM, nil
}

func (c *CertReloader) load(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("auth: TLS certificate %s and key %s: %w", c.certFile, c.keyFile, err)
	}
	if pair.Leaf == nil { // set by X509KeyPair since Go 1.23
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("auth: TLS certificate %s: %w", c.certFile, err)
		}
	}
	return &pair, nil
}

// ServerTLSConfig returns the TLS configuration of the service port:
// TLS 1.2 or later, the certificate of certs, ALPN h2 and http/1.1 (so
// gRPC, Connect and gRPC-Web share the port).
//
// With clientCAs, client certificates signed by them are verified and
// identify callers (mTLS). requireClientCert false (the default choice)
// asks for a certificate without requiring one (tls.VerifyClientCertIfGiven):
// API-key callers, health probes and JWKS fetchers have none, and the
// policy refuses a caller without credential anyway; a certificate that is
// given must verify, or the handshake fails. requireClientCert true
// (tls.RequireAndVerifyClientCert) closes the port to everything without a
// certificate, public paths included.
func ServerTLSConfig(certs *CertReloader, clientCAs *x509.CertPool, requireClientCert bool) *tls.Config {
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: certs.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
	}
	if clientCAs != nil {
		cfg.ClientCAs = clientCAs
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		if requireClientCert {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	return cfg
}

// LoadCertPool reads the PEM certificates of file (the client CAs). It
// returns an error if the file holds none.
func LoadCertPool(file string) (*x509.CertPool, error) {
	data, err := readBounded(file, maxPEMBytes)
	if err != nil {
		return nil, fmt.Errorf("auth: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("auth: CA file %s: no PEM certificate", file)
	}
	return pool, nil
}

// Resolver looks up the addresses of a host name; *net.Resolver
// implements it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// IsLoopback reports whether host (as in HOST, or the host of a host:port;
// an IP literal, possibly in brackets or with a zone, or a name) is a
// loopback address: 127.0.0.0/8 or ::1, or the name "localhost" when every
// address r (net.DefaultResolver if nil) resolves it to is loopback. A
// /etc/hosts or a DNS server can point "localhost" anywhere, and a service
// bound there is not on loopback. Any other name is not resolved and is
// false, as are "" and the unspecified addresses (which bind every
// interface). A failed lookup is false.
func IsLoopback(ctx context.Context, r Resolver, host string) bool {
	if LoopbackAddress(host) {
		return true
	}
	name := hostOnly(host)
	if !strings.EqualFold(strings.TrimSuffix(name, "."), "localhost") {
		return false
	}
	if r == nil {
		r = net.DefaultResolver
	}
	addrs, err := r.LookupNetIP(ctx, "ip", "localhost")
	if err != nil || len(addrs) == 0 {
		return false
	}
	for _, a := range addrs {
		if !a.Unmap().IsLoopback() {
			return false
		}
	}
	return true
}

// LoopbackAddress reports whether host (an IP literal, possibly in
// brackets or with a zone, or the host of a host:port) is a loopback
// address: 127.0.0.0/8 or ::1. Names are false: see IsLoopback.
func LoopbackAddress(host string) bool {
	host = hostOnly(host)
	if i := strings.IndexByte(host, '%'); i >= 0 {
		host = host[:i]
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// LoopbackHost reports whether a request's Host header names this machine
// by loopback: a loopback address (LoopbackAddress) or the name
// "localhost", with or without a port. The name is not resolved: the
// header says what the client asked for, and a DNS rebinding attack is
// precisely a foreign name that resolves to 127.0.0.1.
func LoopbackHost(host string) bool {
	return LoopbackAddress(host) || strings.EqualFold(strings.TrimSuffix(hostOnly(host), "."), "localhost")
}

// hostOnly strips the port and the brackets of an address.
func hostOnly(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
}
