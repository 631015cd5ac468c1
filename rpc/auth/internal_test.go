package auth

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/proto/token/v1/tokenv1connect"
)

// TestReloadReportsOnce: polling a bad file reports it once, until its
// content changes; a forced reload (SIGHUP) reports it again.
func TestReloadReportsOnce(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "p.yaml")
	_, e, err := GenerateAPIKey(rand.Reader, "k", RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("api_keys:\n" + e.Line() + "\n" + EndMarker + "\n")
	p, err := LoadPolicy(path, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	good := p.current()
	for i := range 3 {
		if news, err := p.reload(false); news || err != nil {
			t.Fatalf("unchanged file, poll %d: news %v, err %v", i, news, err)
		}
	}
	write("api_keys: [\n" + EndMarker + "\n")
	if news, err := p.reload(false); !news || !errors.Is(err, ErrInvalidPolicy) {
		t.Fatalf("bad file, first poll: news %v, err %v", news, err)
	}
	for i := range 3 {
		if news, _ := p.reload(false); news {
			t.Fatalf("bad file reported again at poll %d", i)
		}
	}
	if err := p.Reload(); !errors.Is(err, ErrInvalidPolicy) {
		t.Fatalf("forced reload of a bad file: %v", err)
	}
	if p.current() != good {
		t.Fatal("a bad file replaced the policy")
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if news, err := p.reload(false); !news || err == nil {
		t.Fatalf("missing file, first poll: news %v, err %v", news, err)
	}
	if news, _ := p.reload(false); news {
		t.Fatal("missing file reported twice")
	}
	write("api_keys:\n" + e.Line() + "\n" + EndMarker + "\n")
	if news, err := p.reload(false); !news || err != nil {
		t.Fatalf("good file back: news %v, err %v", news, err)
	}
	// An empty file, as a rewrite in place shows for a moment, and a
	// file cut short have no end marker: neither a poll nor a forced
	// reload applies them.
	good = p.current()
	for _, partial := range []string{"", "api_keys:\n  - {\"name\":\"k\",\"sha256\":\"" + e.SHA256 + "\",\"roles\":[\"admin\"]"} {
		write(partial)
		if _, err := p.reload(false); !errors.Is(err, ErrIncompletePolicy) || p.current() != good {
			t.Fatalf("partial file %q, poll: err %v, replaced %v", partial, err, p.current() != good)
		}
		if err := p.Reload(); !errors.Is(err, ErrIncompletePolicy) || p.current() != good {
			t.Fatalf("partial file %q, forced reload: err %v, replaced %v", partial, err, p.current() != good)
		}
	}
	// An empty policy is written as the marker alone.
	write(EndMarker + "\n")
	if err := p.Reload(); err != nil || countKeys(p.current()) != 0 {
		t.Fatalf("marker only, forced reload: %v, %d keys", err, countKeys(p.current()))
	}
}

// TestRulesCoverService: every RPC of token.v1.TokenService has a rule.
// A new RPC is refused to everyone until it gets one (default deny); this
// test makes that a decision rather than a surprise.
func TestRulesCoverService(t *testing.T) {
	t.Parallel()
	rules := procedureRules()
	methods := tokenv1.File_token_v1_token_proto.Services().ByName("TokenService").Methods()
	for i := range methods.Len() {
		proc := "/" + tokenv1connect.TokenServiceName + "/" + string(methods.Get(i).Name())
		if _, ok := rules[proc]; !ok {
			t.Errorf("%s has no rule", proc)
		}
	}
	if len(rules) != methods.Len() {
		t.Errorf("%d rules for %d RPCs", len(rules), methods.Len())
	}
}

func TestLimitersBounded(t *testing.T) {
	t.Parallel()
	l := newLimiters(3)
	now := time.Unix(0, 0)
	lim := RateLimit{PerSecond: 1, Burst: 1}
	for _, k := range []string{"a", "b", "c", "d"} {
		if !l.allow(k, lim, now) {
			t.Fatalf("%s: first call refused", k)
		}
	}
	if n := l.len(); n != 3 {
		t.Fatalf("%d limiters, want 3", n)
	}
	if l.allow("d", lim, now) {
		t.Fatal("d: second call in the same instant allowed")
	}
	// A limit changed by a reload applies to the existing bucket: a
	// second later it holds the new burst, not the old one.
	raised := RateLimit{PerSecond: 10, Burst: 5}
	later := now.Add(time.Second)
	l.allow("d", raised, now)
	for i := range 5 {
		if !l.allow("d", raised, later) {
			t.Fatalf("d: call %d of the raised burst refused", i)
		}
	}
	if l.allow("d", raised, later) {
		t.Fatal("d: call beyond the raised burst allowed")
	}
}

func TestIdentityActor(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		id   Identity
		want string
	}{
		{Identity{Kind: KindAPIKey, Name: "login", Subject: "login"}, "apikey:login"},
		{Identity{Kind: KindMTLS, Name: "x", Subject: "spiffe://a/b"}, "mtls:spiffe://a/b"},
		{Identity{Kind: KindNone}, ""},
	} {
		if got := tc.id.Actor(); got != tc.want {
			t.Errorf("Actor() = %q, want %q", got, tc.want)
		}
	}
}

// BenchmarkCheck measures what the interceptor adds to an RPC: finding the
// caller (API key: SHA-256 and lookup; mTLS: a map lookup), its rate limit
// and the rule.
func BenchmarkCheck(b *testing.B) {
	path := filepath.Join(b.TempDir(), "p.yaml")
	key, e, err := GenerateAPIKey(rand.Reader, "issuer", RoleIssuer)
	if err != nil {
		b.Fatal(err)
	}
	e.RateLimit = &RateLimit{PerSecond: 1e9, Burst: 1e9}
	policy := "api_keys:\n" + e.Line() + "\nmtls:\n  - {identity: \"spiffe://a/b\", name: m, roles: [issuer], rate_limit: {per_second: 1e9, burst: 1000000000}}\n" + EndMarker + "\n"
	if err := os.WriteFile(path, []byte(policy), 0o600); err != nil {
		b.Fatal(err)
	}
	p, err := LoadPolicy(path, nil)
	if err != nil {
		b.Fatal(err)
	}
	g, err := New(Config{Policy: p})
	if err != nil {
		b.Fatal(err)
	}
	msg := &tokenv1.GenerateTokensRequest{ClientId: "web"}
	proc := tokenv1connect.TokenServiceGenerateTokensProcedure
	b.Run("apikey", func(b *testing.B) {
		h := http.Header{}
		h.Set("Authorization", "Bearer "+key)
		for b.Loop() {
			if _, err := g.check(context.Background(), proc, h, "127.0.0.1:1", msg); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("mtls", func(b *testing.B) {
		ctx := context.WithValue(context.Background(), peerKey{}, peerCertificate{identity: "spiffe://a/b"})
		for b.Loop() {
			if _, err := g.check(ctx, proc, http.Header{}, "127.0.0.1:1", msg); err != nil {
				b.Fatal(err)
			}
		}
	})
}
