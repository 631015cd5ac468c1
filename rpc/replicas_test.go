package rpc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/auth-platform/tokenservice/dpop/dpoptest"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/signing"
)

func (s *server) introspect(t *testing.T, token string) *tokenv1.IntrospectTokenResponse {
	t.Helper()
	resp, err := s.client.IntrospectToken(context.Background(), connect.NewRequest(&tokenv1.IntrospectTokenRequest{Token: token}))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Msg
}

func (s *server) gen(t *testing.T, subject string) *tokenv1.TokenResponse {
	t.Helper()
	resp, err := s.client.GenerateTokens(context.Background(), connect.NewRequest(&tokenv1.GenerateTokensRequest{
		Subject: subject, ClientId: "web", Audience: []string{"api"}, Scopes: []string{"read", "write"}}))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Msg
}

// TestIntrospect follows RFC 7662: an active token reports its claims; an
// unknown, malformed, rotated, expired or revoked one reports active false
// and nothing else.
func TestIntrospect(t *testing.T) {
	s := newServer(t)
	ctx := context.Background()
	tok := s.gen(t, "alice")

	at := s.introspect(t, tok.GetAccessToken())
	if !at.GetActive() || at.GetSub() != "alice" || at.GetClientId() != "web" || at.GetScope() != "read write" ||
		at.GetTokenType() != "Bearer" || at.GetSid() != tok.GetFamilyId() || at.GetJti() == "" || at.GetIss() != "https://issuer.test" ||
		len(at.GetAud()) != 1 || at.GetAud()[0] != "api" || at.GetExp() <= at.GetIat() || at.GetCnf() != nil {
		t.Fatalf("access token: %v", at)
	}
	rt := s.introspect(t, tok.GetRefreshToken())
	if !rt.GetActive() || rt.GetTokenType() != "refresh_token" || rt.GetSub() != "alice" || rt.GetSid() != tok.GetFamilyId() || rt.GetScope() != "read write" {
		t.Fatalf("refresh token: %v", rt)
	}

	next, err := s.client.RefreshTokens(ctx, connect.NewRequest(&tokenv1.RefreshTokensRequest{RefreshToken: tok.GetRefreshToken(), ClientId: "web"}))
	if err != nil {
		t.Fatal(err)
	}
	if r := s.introspect(t, next.Msg.GetRefreshToken()); !r.GetActive() {
		t.Fatal("the rotated refresh token is inactive")
	}
	for name, token := range map[string]string{
		"spent refresh token": tok.GetRefreshToken(),
		"unknown family":      "AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"garbage":             "not a token",
		"forged jwt":          "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.",
	} {
		if r := s.introspect(t, token); r.Active == nil || r.GetActive() || r.GetSub() != "" || r.GetSid() != "" {
			t.Fatalf("%s: %v", name, r)
		}
	}

	// Revocation: both the family's access tokens and its refresh token.
	if _, err := s.client.RevokeToken(ctx, connect.NewRequest(&tokenv1.RevokeTokenRequest{Target: &tokenv1.RevokeTokenRequest_FamilyId{FamilyId: tok.GetFamilyId()}})); err != nil {
		t.Fatal(err)
	}
	s.env.CaughtUp(t)
	if s.introspect(t, tok.GetAccessToken()).GetActive() || s.introspect(t, next.Msg.GetRefreshToken()).GetActive() {
		t.Fatal("a revoked family's tokens are active")
	}

	// Expiry.
	other := s.gen(t, "bob")
	s.env.Clock.Advance(16 * time.Minute)
	if s.introspect(t, other.GetAccessToken()).GetActive() {
		t.Fatal("an expired access token is active")
	}
	if !s.introspect(t, other.GetRefreshToken()).GetActive() {
		t.Fatal("a live refresh token is inactive")
	}
	s.env.Clock.Advance(time.Hour)
	if s.introspect(t, other.GetRefreshToken()).GetActive() {
		t.Fatal("an expired refresh token is active")
	}

	// Over the Connect JSON protocol the answer has RFC 7662's member
	// names, and an inactive token is exactly {"active":false}.
	post := func(token string) map[string]any {
		body, _ := json.Marshal(map[string]string{"token": token})
		resp, err := s.http.Post(s.url+"/token.v1.TokenService/IntrospectToken", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, raw)
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	if m := post("nope"); len(m) != 1 || m["active"] != false {
		t.Fatalf("inactive answer: %v", m)
	}
	live := s.gen(t, "carol")
	m := post(live.GetAccessToken())
	if m["active"] != true || m["client_id"] != "web" || m["token_type"] != "Bearer" || m["sub"] != "carol" {
		t.Fatalf("active answer: %v", m)
	}
	// exp and iat are JSON numbers (RFC 7662 §2.2), not strings.
	if _, ok := m["exp"].(float64); !ok {
		t.Fatalf("exp is %T in %v, want a number", m["exp"], m)
	}
	if _, ok := m["iat"].(float64); !ok {
		t.Fatalf("iat is %T in %v, want a number", m["iat"], m)
	}
}

// TestIntrospectDPoP: a DPoP-bound token reports token_type DPoP and its
// key's thumbprint in cnf.jkt (RFC 9449 §6.2).
func TestIntrospectDPoP(t *testing.T) {
	s := newServer(t)
	k := dpoptest.NewKey(signing.ES256)
	tok := s.generateBound(t, k)
	for _, token := range []string{tok.GetAccessToken(), tok.GetRefreshToken()} {
		r := s.introspect(t, token)
		if !r.GetActive() || r.GetCnf().GetJkt() != k.JKT() {
			t.Fatalf("bound token: %v", r)
		}
	}
	if r := s.introspect(t, tok.GetAccessToken()); r.GetTokenType() != "DPoP" {
		t.Fatalf("token_type %q", r.GetTokenType())
	}
}

// TestListFamilies lists a subject's sessions from the read model, and
// counts the model's operations in token_service_cache_operations_total.
func TestListFamilies(t *testing.T) {
	s := newServer(t)
	ctx := context.Background()
	cache := func(op, status string) string {
		return seriesKey("token_service_cache_operations_total", "operation", op, "status", status)
	}
	start := scrapeSnapshot(t, s.http, s.url)
	for _, k := range []string{cache("read", "ok"), cache("read", "miss"), cache("read", "invalid"), cache("read", "error"),
		cache("write", "ok"), cache("write", "conflict"), cache("write", "error"), cache("delete", "ok"), cache("delete", "error")} {
		if _, ok := start[k]; !ok {
			t.Errorf("%s is not exposed from start-up", k)
		}
	}
	a, b, c := s.gen(t, "alice"), s.gen(t, "alice"), s.gen(t, "alice")
	s.gen(t, "bob")
	if _, err := s.client.RefreshTokens(ctx, connect.NewRequest(&tokenv1.RefreshTokensRequest{RefreshToken: b.GetRefreshToken(), ClientId: "web"})); err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.RevokeToken(ctx, connect.NewRequest(&tokenv1.RevokeTokenRequest{Target: &tokenv1.RevokeTokenRequest_FamilyId{FamilyId: c.GetFamilyId()}})); err != nil {
		t.Fatal(err)
	}
	list := func(all bool) []*tokenv1.Family {
		resp, err := s.client.ListFamilies(ctx, connect.NewRequest(&tokenv1.ListFamiliesRequest{Subject: "alice", IncludeInactive: all}))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Msg.GetFamilies()
	}
	// The model is written asynchronously: wait for the revocation.
	deadline := time.Now().Add(10 * time.Second)
	for len(list(true)) != 3 || list(true)[2].GetStatus() != "revoked" {
		if time.Now().After(deadline) {
			t.Fatalf("read model: %v", list(true))
		}
		time.Sleep(10 * time.Millisecond)
	}
	all := list(true)
	if all[0].GetFamilyId() != a.GetFamilyId() || all[1].GetFamilyId() != b.GetFamilyId() || all[2].GetFamilyId() != c.GetFamilyId() {
		t.Fatalf("order: %v", all)
	}
	if all[1].GetGeneration() != 2 || all[0].GetGeneration() != 1 || all[1].GetLastRefreshedAt() == nil || all[0].GetLastRefreshedAt() != nil ||
		all[2].GetRevocationReason() != "client" || all[0].GetClientId() != "web" || all[0].GetCreatedAt() == nil {
		t.Fatalf("families: %v", all)
	}
	if active := list(false); len(active) != 2 {
		t.Fatalf("%d active families, want 2", len(active))
	}
	// Six events written (four families, a rotation, a revocation): a new
	// family's entry is created without a read, the rotation and the
	// revocation each read theirs first; every listing read alice's values
	// (none, a miss, if it came before the model had any).
	now := scrapeSnapshot(t, s.http, s.url)
	moved := func(k string) float64 { return now[k] - start[k] }
	if moved(cache("write", "ok")) != 6 || moved(cache("read", "ok")) < 2+3 ||
		moved(cache("read", "invalid"))+moved(cache("read", "error"))+moved(cache("write", "error")) != 0 {
		t.Fatalf("cache operations: write ok %v, read miss %v, read ok %v", moved(cache("write", "ok")), moved(cache("read", "miss")), moved(cache("read", "ok")))
	}
	s.env.Clock.Advance(2 * time.Hour) // past the refresh TTL
	for _, f := range list(true)[:2] {
		if f.GetStatus() != "expired" {
			t.Fatalf("status %q after the refresh TTL", f.GetStatus())
		}
	}
	_, err := s.client.ListFamilies(ctx, connect.NewRequest(&tokenv1.ListFamiliesRequest{}))
	if code, oauth := oauthCode(t, err); code != connect.CodeInvalidArgument || oauth != "invalid_request" {
		t.Fatalf("no subject: %v %s", code, oauth)
	}
}

// watch opens a WatchRevocations stream and returns its revocations on a
// channel, once the stream is subscribed (its first heartbeat arrived).
func (s *server) watch(ctx context.Context, t *testing.T, after uint64) <-chan *tokenv1.Revocation {
	t.Helper()
	stream, err := s.client.WatchRevocations(ctx, connect.NewRequest(&tokenv1.WatchRevocationsRequest{AfterSequence: after}))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *tokenv1.Revocation, 64)
	subscribed := make(chan struct{})
	go func() {
		defer stream.Close()
		defer close(got)
		var once sync.Once
		for stream.Receive() {
			if hb := stream.Msg().GetHeartbeat(); hb != nil {
				once.Do(func() { close(subscribed) })
				continue
			}
			got <- stream.Msg().GetRevocation()
		}
		if ctx.Err() == nil {
			t.Errorf("stream ended: %v", stream.Err())
		}
	}()
	select {
	case <-subscribed:
	case <-ctx.Done():
		t.Fatal("no heartbeat")
	}
	return got
}

func next(t *testing.T, got <-chan *tokenv1.Revocation) *tokenv1.Revocation {
	t.Helper()
	select {
	case r, ok := <-got:
		if !ok {
			t.Fatal("stream ended")
		}
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no revocation within 10s")
		return nil
	}
}

// TestWatchRevocations streams revocations as they are appended, and
// resumes after a given sequence.
func TestWatchRevocations(t *testing.T) {
	s := newServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := s.watch(ctx, t, 0)
	tok := s.gen(t, "erin")
	if _, err := s.client.RevokeToken(ctx, connect.NewRequest(&tokenv1.RevokeTokenRequest{Target: &tokenv1.RevokeTokenRequest_AccessToken{AccessToken: tok.GetAccessToken()}})); err != nil {
		t.Fatal(err)
	}
	first := next(t, got)
	if first.GetFamilyId() != tok.GetFamilyId() || first.GetFamilySubject() != "erin" || first.GetReason() != "client" || first.GetSequence() == 0 || first.GetAccessExpiresAt() == nil {
		t.Fatalf("revocation %v", first)
	}
	s.gen(t, "erin")
	if _, err := s.client.RevokeToken(ctx, connect.NewRequest(&tokenv1.RevokeTokenRequest{Target: &tokenv1.RevokeTokenRequest_Subject{Subject: "erin"}})); err != nil {
		t.Fatal(err)
	}
	// The subject cut-off, then the revocation of erin's live family.
	if r := next(t, got); r.GetSubject() != "erin" || r.GetReason() != "subject" {
		t.Fatalf("want the subject cut-off, got %v", r)
	}
	if r := next(t, got); r.GetFamilySubject() != "erin" {
		t.Fatalf("want the family revocation, got %v", r)
	}

	resumed := s.watch(ctx, t, first.GetSequence()-1)
	if r := next(t, resumed); r.GetSequence() != first.GetSequence() {
		t.Fatalf("resumed stream starts at seq %d, want %d", r.GetSequence(), first.GetSequence())
	}
}
