package auth_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/rpc/auth"
	"github.com/auth-platform/tokenservice/rpc/auth/authtest"
)

func TestIsLoopback(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		host string
		want bool
	}{
		{"127.0.0.1", true},
		{"127.1.2.3", true},
		{"::1", true},
		{"[::1]", true},
		{"localhost", true},
		{"LOCALHOST", true},
		{"localhost.", true},
		{"127.0.0.1:50051", true},
		{"[::1]:50051", true},
		{"localhost:50051", true},
		{"::1%lo", true},
		{"", false},
		{"0.0.0.0", false},
		{"::", false},
		{"[::]:50051", false},
		{":50051", false},
		{"10.0.0.1", false},
		{"192.168.1.10", false},
		{"example.com", false},
		{"localhost.example.com", false},
		{"127.0.0.1.nip.io", false},
	} {
		if got := auth.IsLoopback(context.Background(), nil, tc.host); got != tc.want {
			t.Errorf("IsLoopback(%q) = %v, want %v", tc.host, got, tc.want)
		}
	}
}

// TestLocalhostMustResolveToLoopback: "localhost" is loopback only when
// every address it resolves to is; a hosts file or DNS server can point it
// elsewhere (the resolver is faked: the machine's cannot be made to lie).
func TestLocalhostMustResolveToLoopback(t *testing.T) {
	t.Parallel()
	lo4, lo6, lan := netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback(), netip.MustParseAddr("192.0.2.7")
	for _, tc := range []struct {
		name  string
		addrs []netip.Addr
		err   error
		want  bool
	}{
		{"loopback only", []netip.Addr{lo4, lo6}, nil, true},
		{"a LAN address", []netip.Addr{lan}, nil, false},
		{"loopback and a LAN address", []netip.Addr{lo4, lan}, nil, false},
		{"IPv4-mapped loopback", []netip.Addr{netip.AddrFrom16(lo4.As16())}, nil, true},
		{"no address", nil, nil, false},
		{"lookup fails", nil, errors.New("no such host"), false},
	} {
		r := fakeResolver{addrs: tc.addrs, err: tc.err}
		for _, host := range []string{"localhost", "localhost:50051", "LocalHost."} {
			if got := auth.IsLoopback(context.Background(), r, host); got != tc.want {
				t.Errorf("%s: IsLoopback(%q) = %v, want %v", tc.name, host, got, tc.want)
			}
		}
		// An address literal is never looked up.
		if !auth.IsLoopback(context.Background(), r, "127.0.0.1") {
			t.Errorf("%s: 127.0.0.1 not loopback", tc.name)
		}
	}
}

type fakeResolver struct {
	addrs []netip.Addr
	err   error
}

func (f fakeResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return f.addrs, f.err
}

func TestLoopbackHost(t *testing.T) {
	t.Parallel()
	for host, want := range map[string]bool{
		"localhost": true, "localhost:50051": true, "127.0.0.1:50051": true, "[::1]:50051": true, "127.9.9.9": true,
		"attacker.example": false, "127.0.0.1.nip.io:80": false, "localhost.attacker.example": false, "": false, "0.0.0.0:50051": false,
	} {
		if got := auth.LoopbackHost(host); got != want {
			t.Errorf("LoopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestCertReloaderWatch(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := authtest.NewCA(t, "ca")
	certFile, keyFile := ca.ServerCert(t).WriteFiles(t, dir, "s")
	c, err := auth.NewCertReloader(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Watch(ctx, 5*time.Millisecond) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Watch returned %v", err)
		}
	}()
	next := ca.ServerCert(t)
	// Key first, then certificate: in between the pair does not match and
	// the previous one stays.
	if err := os.WriteFile(keyFile, next.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, next.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return c.Leaf().SerialNumber.Cmp(next.Leaf.SerialNumber) == 0 })
	got, err := c.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil || got.Leaf.SerialNumber.Cmp(next.Leaf.SerialNumber) != 0 {
		t.Fatalf("GetCertificate = %v, %v", got, err)
	}
}

func TestCertReloaderErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := authtest.NewCA(t, "ca")
	certFile, keyFile := ca.ServerCert(t).WriteFiles(t, dir, "s")
	_, otherKey := ca.ServerCert(t).WriteFiles(t, dir, "o")
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, cert, key string }{
		{"missing certificate", filepath.Join(dir, "none.crt"), keyFile},
		{"missing key", certFile, filepath.Join(dir, "none.key")},
		{"mismatched pair", certFile, otherKey},
		{"garbage", garbage, garbage},
	} {
		if _, err := auth.NewCertReloader(tc.cert, tc.key, nil); err == nil {
			t.Errorf("%s: loaded", tc.name)
		}
	}
}

func TestLoadCertPool(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := authtest.NewCA(t, "ca")
	pool, err := auth.LoadCertPool(ca.WriteFile(t, dir, "ca.pem"))
	if err != nil || pool == nil {
		t.Fatalf("LoadCertPool: %v", err)
	}
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("# no certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := auth.LoadCertPool(empty); err == nil {
		t.Fatal("a file without certificate was accepted")
	}
	if _, err := auth.LoadCertPool(filepath.Join(dir, "missing.pem")); err == nil {
		t.Fatal("a missing file was accepted")
	}
}

func TestServerTLSConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := authtest.NewCA(t, "ca")
	certFile, keyFile := ca.ServerCert(t).WriteFiles(t, dir, "s")
	c, err := auth.NewCertReloader(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		cas      bool
		require  bool
		wantAuth tls.ClientAuthType
	}{
		{"TLS only", false, false, tls.NoClientCert},
		{"TLS only, require ignored without CAs", false, true, tls.NoClientCert},
		{"mTLS optional", true, false, tls.VerifyClientCertIfGiven},
		{"mTLS required", true, true, tls.RequireAndVerifyClientCert},
	} {
		var pool = ca.Pool()
		if !tc.cas {
			pool = nil
		}
		cfg := auth.ServerTLSConfig(c, pool, tc.require)
		if cfg.ClientAuth != tc.wantAuth || cfg.MinVersion != tls.VersionTLS12 || len(cfg.NextProtos) != 2 || cfg.NextProtos[0] != "h2" || cfg.NextProtos[1] != "http/1.1" {
			t.Errorf("%s: %+v", tc.name, cfg)
		}
	}
}
