package ctl_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/cmd/tokenctl/ctl"
	"github.com/auth-platform/tokenservice/cmd/tokend/app"
	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/events"
	"github.com/auth-platform/tokenservice/issuer"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/proto/token/v1/tokenv1connect"
)

type env struct {
	m      *app.Main
	client tokenv1connect.TokenServiceClient
	key    string // tokend's ENCRYPTION_KEY: tokenctl reads the log as the service, checking MACs
}

func start(t *testing.T) *env { return startWith(t, nil) }

// startWith starts tokend with the test's variables, and extra over them.
func startWith(t *testing.T, extra map[string]string) *env {
	t.Helper()
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{3}, 32))
	vars := map[string]string{
		"HOST": "127.0.0.1", "PORT": "0", "DATA_DIR": t.TempDir(), "NATS_LISTEN": "127.0.0.1:0",
		"LOG_LEVEL": "error", "JWT_ALGORITHM": "ES256", "REFRESH_REUSE_GRACE": "0",
		"ENCRYPTION_KEY": key,
	}
	maps.Copy(vars, extra)
	cfg, err := app.ConfigFromEnv(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := app.Start(ctx, cfg, app.NewLogger(cfg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	return &env{m: m, client: tokenv1connect.NewTokenServiceClient(httpClient(), "http://"+m.Addr()), key: key}
}

// run runs tokenctl against e and returns its exit code and output.
func (e *env) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	getenv := func(k string) string {
		return map[string]string{"NATS_URL": e.m.SubscriberURL(), "TOKEND_URL": "http://" + e.m.Addr(), "ENCRYPTION_KEY": e.key}[k]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := ctl.Run(ctx, args, getenv, &out, &errOut)
	return code, out.String(), errOut.String()
}

func withCorr[T any](msg *T, corr string) *connect.Request[T] {
	r := connect.NewRequest(msg)
	r.Header().Set("X-Correlation-ID", corr)
	return r
}

// scenario: family A is issued, refreshed three times, then its first
// token is replayed (the family is revoked for reuse); family B is issued
// and revoked by the client. Both belong to "auditee".
func scenario(t *testing.T, e *env) (a, b *tokenv1.TokenResponse, first string) {
	ctx := context.Background()
	gen := func(corr string) *tokenv1.TokenResponse {
		r, err := e.client.GenerateTokens(ctx, withCorr(&tokenv1.GenerateTokensRequest{Subject: "auditee", ClientId: "web", Audience: []string{"api"}}, corr))
		if err != nil {
			t.Fatal(err)
		}
		return r.Msg
	}
	a = gen("corr-issue-a")
	first = a.GetRefreshToken()
	for i := 1; i <= 3; i++ {
		r, err := e.client.RefreshTokens(ctx, withCorr(&tokenv1.RefreshTokensRequest{RefreshToken: a.GetRefreshToken(), ClientId: "web"}, fmt.Sprintf("corr-rotate-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		a = r.Msg
	}
	if _, err := e.client.RefreshTokens(ctx, withCorr(&tokenv1.RefreshTokensRequest{RefreshToken: first, ClientId: "web"}, "corr-replay")); err == nil {
		t.Fatal("replay accepted")
	}
	b = gen("corr-issue-b")
	if _, err := e.client.RevokeToken(ctx, withCorr(&tokenv1.RevokeTokenRequest{Target: &tokenv1.RevokeTokenRequest_RefreshToken{RefreshToken: b.GetRefreshToken()}}, "corr-revoke-b")); err != nil {
		t.Fatal(err)
	}
	return a, b, first
}

func lines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var res []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not a JSON line: %q", sc.Text())
		}
		res = append(res, m)
	}
	return res
}

func TestAuditLineage(t *testing.T) {
	e := start(t)
	a, b, _ := scenario(t, e)

	code, out, stderr := e.run(t, "--json", "audit", "family", a.GetFamilyId())
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	type step struct {
		typ, corr, reason string
		gen               float64
	}
	want := []step{
		{"family.issued", "corr-issue-a", "", 1},
		{"family.rotated", "corr-rotate-1", "", 2},
		{"family.rotated", "corr-rotate-2", "", 3},
		{"family.rotated", "corr-rotate-3", "", 4},
		{"family.revoked", "corr-replay", "reuse", 4},
	}
	got := lines(t, out)
	if len(got) != len(want) {
		t.Fatalf("lineage has %d steps, want %d:\n%s", len(got), len(want), out)
	}
	for i, w := range want {
		g := got[i]
		if g["type"] != w.typ || g["correlation_id"] != w.corr || g["generation"] != w.gen || (w.reason != "" && g["reason"] != w.reason) ||
			g["client_id"] != "web" || g["family_id"] != a.GetFamilyId() {
			t.Fatalf("step %d = %v, want %+v", i, g, w)
		}
		if w.typ == "family.rotated" && g["key_id"] == "" {
			t.Fatalf("rotation without its key: %v", g)
		}
	}
	// The readable form names the same events.
	code, out, _ = e.run(t, "audit", "family", a.GetFamilyId())
	if code != 0 || strings.Count(out, "family.rotated") != 3 || !strings.Contains(out, "reason reuse") || !strings.Contains(out, "corr-replay") {
		t.Fatalf("readable audit:\n%s", out)
	}
	// audit subject shows both families.
	code, out, _ = e.run(t, "--json", "audit", "subject", "auditee")
	got = lines(t, out)
	if code != 0 || len(got) != 5+2 || got[6]["reason"] != "client" || got[6]["correlation_id"] != "corr-revoke-b" || got[5]["family_id"] != b.GetFamilyId() {
		t.Fatalf("audit subject (exit %d):\n%s", code, out)
	}
	if code, _, _ := e.run(t, "audit", "subject", "nobody"); code != 1 {
		t.Fatalf("unknown subject: exit %d, want 1", code)
	}
}

func TestAuditAt(t *testing.T) {
	e := start(t)
	a, b, first := scenario(t, e)
	ctx := context.Background()
	revoked, err := e.m.Log.LastConsistent(ctx, e.m.Log.Subjects().FamilyFilter(b.GetFamilyId()))
	if err != nil {
		t.Fatal(err)
	}
	issued, err := e.m.Log.LastConsistent(ctx, e.m.Log.Subjects().Family(b.GetFamilyId(), "issued"))
	if err != nil {
		t.Fatal(err)
	}
	at := func(d time.Duration, ref time.Time) string { return ref.Add(d).UTC().Format(time.RFC3339Nano) }
	tests := []struct {
		name   string
		when   string
		target string
		valid  bool
		reason string
	}{
		{"family B before issue", at(-time.Millisecond, issued.Time), b.GetFamilyId(), false, "not issued"},
		{"family B just before revocation", at(-time.Microsecond, revoked.Time), b.GetFamilyId(), true, "active"},
		{"family B just after revocation", at(time.Microsecond, revoked.Time), b.GetFamilyId(), false, "reason client"},
		{"refresh token B before revocation", at(-time.Microsecond, revoked.Time), b.GetRefreshToken(), true, "generation 1"},
		{"refresh token B after revocation", at(time.Microsecond, revoked.Time), b.GetRefreshToken(), false, "revoked"},
		{"access token B before revocation", at(-time.Microsecond, revoked.Time), b.GetAccessToken(), true, "active"},
		{"access token B after revocation", at(time.Microsecond, revoked.Time), b.GetAccessToken(), false, "revoked"},
		{"first token of A now (spent)", at(0, time.Now()), first, false, "revoked"},
		{"forged access token", at(0, time.Now()), a.GetAccessToken()[:len(a.GetAccessToken())-4] + "AAAA", false, "does not verify"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, stderr := e.run(t, "audit", "at", tc.when, tc.target)
			wantCode := 1
			if tc.valid {
				wantCode = 0
			}
			if code != wantCode || !strings.Contains(out, tc.reason) {
				t.Fatalf("exit %d (want %d), output %q (want it to mention %q) %s", code, wantCode, out, tc.reason, stderr)
			}
		})
	}
	// A spent token of A, at an instant when a later generation was
	// current but before the family was revoked.
	rotated3, err := e.m.Log.LastConsistent(ctx, e.m.Log.Subjects().Family(a.GetFamilyId(), "rotated"))
	if err != nil {
		t.Fatal(err)
	}
	code, out, _ := e.run(t, "audit", "at", at(time.Microsecond, rotated3.Time), first)
	if code != 1 || !strings.Contains(out, "generation 1 was spent") {
		t.Fatalf("spent token: exit %d %q", code, out)
	}
}

func TestReplayVerify(t *testing.T) {
	e := start(t)
	scenario(t, e)
	code, out, stderr := e.run(t, "replay", "--verify")
	if code != 0 || !strings.HasPrefix(out, "OK") {
		t.Fatalf("verify of an intact service: exit %d\n%s%s", code, out, stderr)
	}
	// Corrupt the live projection on purpose: a revocation that is not in
	// the log, applied without a position (a record at or before the
	// position would be ignored), so the position stays where it was.
	st := &eventsv1.FamilyState{FamilyId: "forged-family-0000000000", Subject: "victim", Status: eventsv1.FamilyStatus_FAMILY_STATUS_REVOKED,
		RevokedAt: timestamppb.Now(), AccessExpiresAt: timestamppb.New(time.Now().Add(time.Hour))}
	data, _ := proto.Marshal(&eventsv1.FamilyRevoked{State: st, Reason: eventsv1.RevocationReason_REVOCATION_REASON_ADMIN})
	if err := e.m.Set.Apply(eventlog.Record{Type: events.TypeFamilyRevoked, Data: data}); err != nil {
		t.Fatal(err)
	}
	code, out, _ = e.run(t, "--json", "replay", "--verify")
	var res map[string]any
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%q: %v", out, err)
	}
	if code != 1 || res["ok"] != false || res["live_digest"] == res["replayed_digest"] {
		t.Fatalf("corrupted projection passed verification: exit %d %v", code, res)
	}
}

func TestTailExportKeys(t *testing.T) {
	e := start(t)
	// Tail in the background, filtered to one type, from the next event.
	last, err := e.m.Log.LastSeq(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var tailOut bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	getenv := func(k string) string {
		return map[string]string{"NATS_URL": e.m.SubscriberURL(), "ENCRYPTION_KEY": e.key}[k]
	}
	go func() {
		done <- ctl.Run(ctx, []string{"events", "tail", "--type", "family.revoked", "--from-seq", fmt.Sprint(last + 1)}, getenv, lockedWriter{&mu, &tailOut}, &bytes.Buffer{})
	}()
	a, b, _ := scenario(t, e)
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		got := tailOut.String()
		mu.Unlock()
		if strings.Count(got, "\n") >= 2 {
			ls := lines(t, got)
			if ls[0]["family_id"] != a.GetFamilyId() || ls[0]["reason"] != "reuse" || ls[1]["family_id"] != b.GetFamilyId() {
				t.Fatalf("tail: %s", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tail saw %q", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("tail exit %d", code)
	}

	code, out, _ := e.run(t, "export")
	ls := lines(t, out)
	// 3 key events, family A (issued, 3 rotated, revoked), family B
	// (issued, revoked); nothing sealed or hashed leaks.
	if code != 0 || len(ls) != 3+5+2 {
		t.Fatalf("export (exit %d): %d lines\n%s", code, len(ls), out)
	}
	for _, banned := range []string{"sealed", "secret", a.GetRefreshToken()[23:], a.GetAccessToken()} {
		if strings.Contains(out, banned) {
			t.Fatalf("export contains %q", banned)
		}
	}
	code, out, _ = e.run(t, "keys", "list")
	if code != 0 || !strings.Contains(out, "ES256") || !strings.Contains(out, "active") {
		t.Fatalf("keys list: %s", out)
	}
	if code, _, _ := e.run(t, "frobnicate"); code != 2 {
		t.Fatalf("unknown command: exit %d, want 2", code)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// TestKeysRotate: tokenctl asks tokend to rotate; a plain rotation stages a
// key, an immediate one replaces the active key and revokes its families.
func TestKeysRotate(t *testing.T) {
	e := start(t)
	scenario(t, e)
	code, out, stderr := e.run(t, "--json", "keys", "rotate")
	if code != 0 {
		t.Fatalf("rotate: exit %d %s", code, stderr)
	}
	var staged map[string]any
	if err := json.Unmarshal([]byte(out), &staged); err != nil || staged["key_id"] == staged["previous_key_id"] {
		t.Fatalf("rotate: %q %v", out, err)
	}
	fresh, err := e.client.GenerateTokens(context.Background(), connect.NewRequest(&tokenv1.GenerateTokensRequest{Subject: "z", ClientId: "web", Audience: []string{"api"}}))
	if err != nil {
		t.Fatal(err)
	}
	code, out, stderr = e.run(t, "--json", "keys", "rotate", "--immediate", "--revoke-families")
	var r map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil {
		t.Fatalf("immediate rotate: exit %d %q %s", code, out, stderr)
	}
	// Family B was already revoked and A too (reuse); the fresh one is
	// the only active family the old key signed for.
	if r["revoked_families"] != float64(1) || r["previous_key_id"] != staged["previous_key_id"] {
		t.Fatalf("immediate rotate: %v", r)
	}
	_, err = e.client.RefreshTokens(context.Background(), connect.NewRequest(&tokenv1.RefreshTokensRequest{RefreshToken: fresh.Msg.GetRefreshToken(), ClientId: "web"}))
	if err == nil {
		t.Fatal("a family of the compromised key still refreshes")
	}
	code, out, _ = e.run(t, "keys", "list")
	// The compromised key and the key staged before the incident are
	// destroyed; the emergency key is active.
	if code != 0 || strings.Count(out, "destroyed") != 2 || strings.Count(out, "active") != 1 {
		t.Fatalf("keys list after rotations:\n%s", out)
	}
}

// TestRevocationsWatchAndRebuild: revocations watch --since prints the
// scenario's revocations; projections rebuild drops the families read
// model and the running tokend rebuilds it to the same listing.
func TestRevocationsWatchAndRebuild(t *testing.T) {
	e := start(t)
	a, b, _ := scenario(t, e)

	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var out bytes.Buffer
	done := make(chan int)
	getenv := func(k string) string {
		return map[string]string{"NATS_URL": e.m.SubscriberURL(), "ENCRYPTION_KEY": e.key}[k]
	}
	go func() {
		done <- ctl.Run(ctx, []string{"--json", "revocations", "watch", "--since", "1h"}, getenv, lockedWriter{&mu, &out}, &bytes.Buffer{})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		got := out.String()
		mu.Unlock()
		if strings.Count(got, "\n") >= 2 {
			ls := lines(t, got)
			if ls[0]["family_id"] != a.GetFamilyId() || ls[0]["reason"] != "reuse" || ls[1]["family_id"] != b.GetFamilyId() ||
				ls[1]["subject"] != "auditee" || ls[1]["kind"] != "family" {
				t.Fatalf("watch: %s", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("watch printed %q", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("watch exit %d", code)
	}

	list := func() []*tokenv1.Family {
		resp, err := e.client.ListFamilies(context.Background(), connect.NewRequest(&tokenv1.ListFamiliesRequest{Subject: "auditee", IncludeInactive: true}))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Msg.GetFamilies()
	}
	for deadline := time.Now().Add(10 * time.Second); len(list()) != 2; {
		if time.Now().After(deadline) {
			t.Fatalf("read model before the rebuild: %v", list())
		}
		time.Sleep(20 * time.Millisecond)
	}
	before := list()
	code, stdout, stderr := e.run(t, "projections", "rebuild", "--wait", "20s")
	if code != 0 || !strings.Contains(stdout, "rebuilt up to seq") {
		t.Fatalf("rebuild (exit %d): %s %s", code, stdout, stderr)
	}
	after := list()
	if len(after) != len(before) {
		t.Fatalf("after the rebuild: %v, before: %v", after, before)
	}
	for i := range after {
		if !proto.Equal(after[i], before[i]) {
			t.Fatalf("family %d after the rebuild: %v, before: %v", i, after[i], before[i])
		}
	}
}

// TestServiceKey: tokenctl prints the public nkey tokend derives from its
// ENCRYPTION_KEY (what a cluster's configuration lists), offline; and
// without credentials it cannot read the log of tokend's embedded server.
func TestServiceKey(t *testing.T) {
	e := start(t)
	key, err := base64.StdEncoding.DecodeString(e.key)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := eventlog.ServiceKey(key)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := kp.PublicKey()
	var out, errOut bytes.Buffer
	if code := ctl.Run(context.Background(), []string{"nats", "service-key"}, func(k string) string {
		return map[string]string{"ENCRYPTION_KEY": e.key}[k]
	}, &out, &errOut); code != 0 || strings.TrimSpace(out.String()) != want {
		t.Fatalf("nats service-key: exit %d, %q (%s); want %s", code, out.String(), errOut.String(), want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out.Reset()
	errOut.Reset()
	if code := ctl.Run(ctx, []string{"export"}, func(k string) string {
		return map[string]string{"NATS_URL": e.m.SubscriberURL()}[k]
	}, &out, &errOut); code == 0 {
		t.Fatalf("an anonymous tokenctl exported the log: %s", out.String())
	}
}

// TestAuditKeyCompromise: the audit of a family revoked because its key
// was compromised shows the key's compromise, declared and resolved,
// around the revocation; export shows what the declaration asked for.
func TestAuditKeyCompromise(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	tok, err := e.m.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "leaked", ClientID: "web", Audience: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := e.m.Responder.Compromise(ctx, true)
	if err != nil || c.RevokedFamilies != 1 {
		t.Fatalf("compromise: %+v, %v", c, err)
	}
	code, out, stderr := e.run(t, "--json", "audit", "family", tok.FamilyID)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	got := lines(t, out)
	want := []struct{ typ, key, newKey, reason string }{
		{"family.issued", tok.KeyID, "", ""},
		{"key.compromise_declared", tok.KeyID, "", "key_compromise"},
		{"family.revoked", "", "", "key_compromise"},
		{"key.compromise_resolved", tok.KeyID, c.KeyID, ""},
	}
	if len(got) != len(want) {
		t.Fatalf("lineage has %d steps, want %d:\n%s", len(got), len(want), out)
	}
	for i, w := range want {
		g := got[i]
		if g["type"] != w.typ || (w.key != "" && g["key_id"] != w.key) || (w.newKey != "" && g["new_key_id"] != w.newKey) || (w.reason != "" && g["reason"] != w.reason) {
			t.Fatalf("step %d = %v, want %+v", i, g, w)
		}
	}
	code, out, _ = e.run(t, "audit", "family", tok.FamilyID)
	if code != 0 || !strings.Contains(out, "key.compromise_declared") || !strings.Contains(out, "replaced by "+c.KeyID[:12]) ||
		!strings.Contains(out, "family "+tok.FamilyID) {
		t.Fatalf("readable audit:\n%s", out)
	}
	// The key steps leave the verdict to the family's own events.
	now := time.Now().UTC().Format(time.RFC3339Nano)
	if code, out, _ := e.run(t, "audit", "at", now, tok.RefreshToken); code != 1 || !strings.Contains(out, "reason key_compromise") {
		t.Fatalf("audit at of the refresh token: exit %d %q", code, out)
	}
	code, out, _ = e.run(t, "export")
	declared := 0
	for _, l := range lines(t, out) {
		if l["type"] == "key.compromise_declared" && l["key_id"] == tok.KeyID && l["revoke_families"] == true {
			declared++
		}
		if l["type"] == "key.compromise_resolved" && (l["new_key_id"] != c.KeyID || l["revoked_families"] != float64(1)) {
			t.Fatalf("export of the resolution: %v", l)
		}
	}
	if code != 0 || declared != 1 {
		t.Fatalf("export (exit %d) holds %d declarations:\n%s", code, declared, out)
	}
}
