package auth_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/rpc/auth"
)

const hashA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
const hashB = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"

func TestParsePolicy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		file    string
		wantErr error
	}{
		{"empty", "", nil},
		{"comments only", "# nothing yet\n", nil},
		{"full", `
default_rate_limit: {per_second: 10, burst: 20}
api_keys:
  - name: login
    sha256: ` + hashA + `
    roles: [issuer]
    client_ids: [web]
    expires: "2027-01-01T00:00:00Z"
    rate_limit: {per_second: 1.5, burst: 3}
mtls:
  - identity: spiffe://example.org/ns/a/sa/b
    name: b
    roles: [resource-server, admin]
  - identity: Ops Team Admin
    name: ops
    roles: [admin]
`, nil},
		{"JSON", `{"api_keys": [{"name": "k", "sha256": "` + hashA + `", "roles": ["admin"]}]}`, nil},
		{"unknown field", "api_keys:\n  - name: k\n    sha256: " + hashA + "\n    roles: [admin]\n    role: admin\n", auth.ErrInvalidPolicy},
		{"unknown top-level field", "keys: []\n", auth.ErrInvalidPolicy},
		{"bad hash", "api_keys:\n  - name: k\n    sha256: abc\n    roles: [admin]\n", auth.ErrInvalidPolicy},
		{"no roles", "api_keys:\n  - name: k\n    sha256: " + hashA + "\n", auth.ErrInvalidPolicy},
		{"unknown role", "api_keys:\n  - name: k\n    sha256: " + hashA + "\n    roles: [root]\n", auth.ErrInvalidPolicy},
		{"bad name", "api_keys:\n  - name: \"k k\"\n    sha256: " + hashA + "\n    roles: [admin]\n", auth.ErrInvalidPolicy},
		{"duplicate name", "api_keys:\n  - {name: k, sha256: " + hashA + ", roles: [admin]}\n  - {name: k, sha256: " + hashB + ", roles: [admin]}\n", auth.ErrInvalidPolicy},
		{"duplicate key", "api_keys:\n  - {name: k, sha256: " + hashA + ", roles: [admin]}\n  - {name: l, sha256: " + strings.ToUpper(hashA) + ", roles: [admin]}\n", auth.ErrInvalidPolicy},
		{"bad expiry", "api_keys:\n  - {name: k, sha256: " + hashA + ", roles: [admin], expires: tomorrow}\n", auth.ErrInvalidPolicy},
		{"zero rate", "api_keys:\n  - {name: k, sha256: " + hashA + ", roles: [admin], rate_limit: {per_second: 0, burst: 1}}\n", auth.ErrInvalidPolicy},
		{"zero burst", "default_rate_limit: {per_second: 1, burst: 0}\n", auth.ErrInvalidPolicy},
		{"extra_claims", "api_keys:\n  - {name: k, sha256: " + hashA + ", roles: [issuer], extra_claims: [roles, groups]}\n", nil},
		{"empty extra claim", "api_keys:\n  - {name: k, sha256: " + hashA + ", roles: [issuer], extra_claims: [\"\"]}\n", auth.ErrInvalidPolicy},
		{"audiences", "api_keys:\n  - {name: k, sha256: " + hashA + ", roles: [resource-server], audiences: [orders, billing]}\n", nil},
		{"empty audience", "mtls:\n  - {identity: a, name: a, roles: [resource-server], audiences: [\"\"]}\n", auth.ErrInvalidPolicy},
		{"empty client_id", "api_keys:\n  - {name: k, sha256: " + hashA + ", roles: [issuer], client_ids: [\"\"]}\n", auth.ErrInvalidPolicy},
		{"duplicate identity", "mtls:\n  - {identity: a, name: a, roles: [admin]}\n  - {identity: a, name: b, roles: [admin]}\n", auth.ErrInvalidPolicy},
		{"identity with control character", "mtls:\n  - {identity: \"a\\nb\", name: a, roles: [admin]}\n", auth.ErrInvalidPolicy},
		{"identity with spaces around", "mtls:\n  - {identity: \" a\", name: a, roles: [admin]}\n", auth.ErrInvalidPolicy},
		{"not YAML", "api_keys: [", auth.ErrInvalidPolicy},
		{"too large", "# " + strings.Repeat("x", 1<<20) + "\n", auth.ErrInvalidPolicy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := auth.ParsePolicy([]byte(tc.file + "\n" + auth.EndMarker + "\n"))
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

// TestPolicyEndMarker: no proper prefix of a policy file parses, whatever
// byte it is cut at: the marker line is what makes a file whole. Without
// it, the file cut before "client_ids" and "expires" admitted its key for
// any client, forever.
func TestPolicyEndMarker(t *testing.T) {
	t.Parallel()
	whole := "default_rate_limit: {per_second: 10, burst: 20}\n" +
		"api_keys:\n" +
		"  - name: login\n" +
		"    sha256: " + hashA + "\n" +
		"    roles: [issuer]\n" +
		"    client_ids: [web]\n" +
		"    expires: \"2027-01-01T00:00:00Z\"\n" +
		"  - {\"name\":\"ops\",\"sha256\":\"" + hashB + "\",\"roles\":[\"admin\"]}\n" +
		auth.EndMarker + "\n"
	f, err := auth.ParsePolicy([]byte(whole))
	if err != nil || len(f.APIKeys) != 2 {
		t.Fatalf("the whole file: %v, %+v", err, f)
	}
	complete := strings.TrimRight(whole, "\n")
	for n := range len(whole) {
		if n >= len(complete) {
			continue // cut in the trailing newline only: the file is whole
		}
		if _, err := auth.ParsePolicy([]byte(whole[:n])); !errors.Is(err, auth.ErrIncompletePolicy) || !errors.Is(err, auth.ErrInvalidPolicy) {
			t.Fatalf("cut at byte %d (%q…): %v, want ErrIncompletePolicy", n, whole[max(0, n-20):n], err)
		}
	}
	for _, tc := range []struct {
		name, file string
		wantErr    error
	}{
		{"marker only: no callers", auth.EndMarker + "\n", nil},
		{"no final newline, trailing spaces", "api_keys: []\n" + auth.EndMarker + "  ", nil},
		{"CRLF", "api_keys: []\r\n" + auth.EndMarker + "\r\n", nil},
		{"JSON then the marker", `{"api_keys": [{"name": "k", "sha256": "` + hashA + `", "roles": ["admin"]}]}` + "\n" + auth.EndMarker + "\n", nil},
		{"empty", "", auth.ErrIncompletePolicy},
		{"no marker", "api_keys: []\n", auth.ErrIncompletePolicy},
		{"marker not last", auth.EndMarker + "\napi_keys: []\n", auth.ErrIncompletePolicy},
		{"marker twice", "api_keys: []\n" + auth.EndMarker + "\n" + auth.EndMarker + "\n", auth.ErrIncompletePolicy},
		{"marker cut", "api_keys: []\n# en", auth.ErrIncompletePolicy},
		{"marker indented", "api_keys: []\n  " + auth.EndMarker + "\n", auth.ErrIncompletePolicy},
	} {
		if _, err := auth.ParsePolicy([]byte(tc.file)); !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.wantErr)
		}
	}
}

// TestGeneratedKeyLine: the line GenerateAPIKey's entry prints is a valid
// entry that admits exactly its key.
func TestGeneratedKeyLine(t *testing.T) {
	t.Parallel()
	key, entry, err := auth.GenerateAPIKey(rand.Reader, "svc.login-1", auth.RoleIssuer, auth.RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(key, auth.APIKeyPrefix) || len(key) != len(auth.APIKeyPrefix)+43 {
		t.Fatalf("key %q", key)
	}
	if entry.SHA256 != auth.HashAPIKey(key) || strings.Contains(entry.Line(), key) {
		t.Fatal("entry holds the key, or not its hash")
	}
	f, err := auth.ParsePolicy([]byte("api_keys:\n" + entry.Line() + "\n" + auth.EndMarker + "\n"))
	if err != nil {
		t.Fatalf("%s: %v", entry.Line(), err)
	}
	if len(f.APIKeys) != 1 || f.APIKeys[0].Name != "svc.login-1" || len(f.APIKeys[0].Roles) != 2 {
		t.Fatalf("parsed %+v", f.APIKeys)
	}
	for _, tc := range []struct {
		name  string
		roles []auth.Role
	}{{"bad name!", []auth.Role{auth.RoleAdmin}}, {"ok", nil}, {"ok", []auth.Role{"root"}}} {
		if _, _, err := auth.GenerateAPIKey(rand.Reader, tc.name, tc.roles...); err == nil {
			t.Errorf("GenerateAPIKey(%q, %v) accepted", tc.name, tc.roles)
		}
	}
	if _, _, err := auth.GenerateAPIKey(bytes.NewReader(nil), "ok", auth.RoleAdmin); err == nil {
		t.Error("a failing random source was not reported")
	}
}

// errorLog counts the error records of a logger.
type errorLog struct {
	mu sync.Mutex
	n  int
}

func (l *errorLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *errorLog) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		l.mu.Lock()
		l.n++
		l.mu.Unlock()
	}
	return nil
}
func (l *errorLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *errorLog) WithGroup(string) slog.Handler      { return l }
func (l *errorLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// TestPolicyWatch: Watch picks up a new file, reports a bad one once and
// keeps the previous policy.
func TestPolicyWatch(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	keys := writePolicy(t, path, map[string]string{"one": "    roles: [admin]\n"}, "")
	logs := &errorLog{}
	p, err := auth.LoadPolicy(path, slog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	guard, err := auth.New(auth.Config{Policy: p, Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Watch(ctx, 5*time.Millisecond) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Watch returned %v", err)
		}
	}()
	admits := func(key string) bool {
		_, err := auth.AuthenticateKey(guard, key)
		return err == nil
	}
	if !admits(keys["one"]) {
		t.Fatal("initial key refused")
	}
	// Replace the file by renaming, as editors and secret mounts do.
	tmp := filepath.Join(dir, "next.yaml")
	next := writePolicy(t, tmp, map[string]string{"two": "    roles: [admin]\n"}, "")
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return admits(next["two"]) && !admits(keys["one"]) })

	if err := os.WriteFile(path, []byte("api_keys: [\n"+auth.EndMarker+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return logs.count() >= 1 })
	if !admits(next["two"]) {
		t.Fatal("a bad file replaced the policy")
	}
}

// waitFor polls cond until it holds, for up to 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestExpiry(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "p.yaml")
	keys := writePolicy(t, path, map[string]string{"k": "    roles: [admin]\n    expires: \"2026-06-01T12:00:00Z\"\n"}, "")
	p, err := auth.LoadPolicy(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	expiry := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		now     time.Time
		wantErr error
	}{
		{expiry.Add(-time.Nanosecond), nil},
		{expiry, auth.ErrExpiredCredential},
		{expiry.Add(time.Hour), auth.ErrExpiredCredential},
	} {
		g, err := auth.New(auth.Config{Policy: p, Now: func() time.Time { return tc.now }})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := auth.AuthenticateKey(g, keys["k"]); !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
			t.Errorf("at %v: %v, want %v", tc.now, err, tc.wantErr)
		}
	}
}
