package rpc

import (
	"crypto/tls"
	"net/http/httptest"
	"testing"
)

func TestParsePublicURL(t *testing.T) {
	for _, bad := range []string{"login.example.com", "ftp://login.example.com", "https://", "http://login.example.com",
		"https://u:p@login.example.com", "https://login.example.com/?a=b", "https://login.example.com/#x", "mailto:a@b", "https://login.example.com/auth"} {
		if _, err := ParsePublicURL(bad); err == nil {
			t.Errorf("ParsePublicURL(%q) accepted", bad)
		}
	}
	for in, want := range map[string]string{
		"https://login.example.com/": "https://login.example.com",
		"http://127.0.0.1:50051":     "http://127.0.0.1:50051",
		"http://localhost:8080/":     "http://localhost:8080",
	} {
		p, err := ParsePublicURL(in)
		if err != nil {
			t.Fatalf("ParsePublicURL(%q): %v", in, err)
		}
		r := httptest.NewRequest("GET", "http://evil.example/x", nil)
		if got, ok := p.Base(r); !ok || got != want {
			t.Errorf("ParsePublicURL(%q).Base = %q, %v; want %q (the configured base wins over Host)", in, got, ok, want)
		}
	}
}

func TestPublicURLUnsetFollowsOnlyLoopbackHosts(t *testing.T) {
	var p PublicURL
	for host, want := range map[string]string{
		"127.0.0.1:50051": "http://127.0.0.1:50051",
		"LOCALHOST:1":     "http://localhost:1",
		"[::1]:80":        "http://[::1]:80",
		"evil.example":    "",
		"10.0.0.1:50051":  "",
		"":                "",
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Host = host
		got, ok := p.Base(r)
		if ok != (want != "") || got != want {
			t.Errorf("Host %q: Base = %q, %v; want %q", host, got, ok, want)
		}
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.Host, r.TLS = "localhost:8443", &tls.ConnectionState{}
	if got, _ := p.Base(r); got != "https://localhost:8443" {
		t.Errorf("TLS request: Base = %q, want https", got)
	}
}
