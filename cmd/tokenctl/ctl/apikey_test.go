package ctl_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/auth-platform/tokenservice/cmd/tokenctl/ctl"
	"github.com/auth-platform/tokenservice/rpc/auth"
)

// TestAPIKeyNew: apikey new works offline (no NATS, no tokend) and prints
// a key and the policy entry that admits exactly it.
func TestAPIKeyNew(t *testing.T) {
	run := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		// An unreachable NATS: apikey new must not try it.
		getenv := func(k string) string { return map[string]string{"NATS_URL": "nats://127.0.0.1:1"}[k] }
		code := ctl.Run(context.Background(), args, getenv, &out, &errOut)
		return code, out.String(), errOut.String()
	}
	code, out, stderr := run("--json", "apikey", "new", "--name", "login-frontend", "--role", "issuer", "--role", "admin", "--client-id", "web,ios", "--expires", "2030-01-01T00:00:00Z")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var got struct {
		Key   string           `json:"key"`
		Entry auth.APIKeyEntry `json:"entry"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(got.Key))
	if !strings.HasPrefix(got.Key, auth.APIKeyPrefix) || got.Entry.SHA256 != hex.EncodeToString(sum[:]) ||
		got.Entry.Name != "login-frontend" || len(got.Entry.Roles) != 2 || strings.Join(got.Entry.ClientIDs, ",") != "web,ios" || got.Entry.Expires != "2030-01-01T00:00:00Z" {
		t.Fatalf("key %q entry %+v", got.Key, got.Entry)
	}
	// The readable form: the key, then a line for the policy file.
	code, out, _ = run("apikey", "new", "--name", "orders-api", "--role", "resource-server", "--audience", "orders", "--extra-claim", "roles")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(out, "above its last line \""+auth.EndMarker+"\"") {
		t.Fatalf("the output does not say where the entry goes:\n%s", out)
	}
	var key, line string
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(l, auth.APIKeyPrefix):
			key = l
		case strings.HasPrefix(l, "- {"):
			line = l
		}
	}
	f, err := auth.ParsePolicy([]byte("api_keys:\n" + line + "\n" + auth.EndMarker + "\n"))
	if err != nil || len(f.APIKeys) != 1 || f.APIKeys[0].SHA256 != auth.HashAPIKey(key) ||
		strings.Join(f.APIKeys[0].Audiences, ",") != "orders" || strings.Join(f.APIKeys[0].ExtraClaims, ",") != "roles" {
		t.Fatalf("printed entry %q for key %q: %v", line, key, err)
	}
	for _, bad := range [][]string{
		{"apikey", "new", "--role", "issuer"},
		{"apikey", "new", "--name", "x"},
		{"apikey", "old"},
	} {
		if code, _, _ := run(bad...); code != 2 {
			t.Errorf("%q: exit %d, want 2", bad, code)
		}
	}
	for _, bad := range [][]string{
		{"apikey", "new", "--name", "x", "--role", "root"},
		{"apikey", "new", "--name", "two words", "--role", "admin"},
		{"apikey", "new", "--name", "x", "--role", "admin", "--expires", "tomorrow"},
	} {
		if code, _, _ := run(bad...); code != 1 {
			t.Errorf("%q: exit %d, want 1", bad, code)
		}
	}
}
