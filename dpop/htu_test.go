package dpop_test

import (
	"testing"

	"github.com/auth-platform/tokenservice/dpop"
)

func TestNormalizeURI(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://as.example.com/token", "https://as.example.com/token"},
		{"HTTPS://AS.Example.COM/token", "https://as.example.com/token"},
		{"https://as.example.com:443/token", "https://as.example.com/token"},
		{"http://as.example.com:80/token", "http://as.example.com/token"},
		{"https://as.example.com:8443/token", "https://as.example.com:8443/token"},
		{"https://as.example.com", "https://as.example.com/"},
		{"https://as.example.com/a/./b/../token", "https://as.example.com/a/token"},
		{"https://as.example.com/%7euser/%2fx", "https://as.example.com/~user/%2Fx"},
		{"https://as.example.com/token?x=1#frag", "https://as.example.com/token"},
		{"https://[::1]:443/token", "https://[::1]/token"},
		{"https://as.example.com/T%6Fken", "https://as.example.com/Token"},
	}
	for _, tc := range tests {
		got, err := dpop.NormalizeURI(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("NormalizeURI(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "/token", "ftp://x/y", "https://user@x/y", "mailto:a@b", "https://x/%zz", "https:///path"} {
		if got, err := dpop.NormalizeURI(bad); err == nil {
			t.Errorf("NormalizeURI(%q) = %q, want an error", bad, got)
		}
	}
}
