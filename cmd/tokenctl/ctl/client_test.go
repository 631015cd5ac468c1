package ctl_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/auth-platform/tokenservice/cmd/tokenctl/ctl"
	"github.com/auth-platform/tokenservice/rpc/auth"
)

// TestClientNew: client new works offline and prints entries the policy
// accepts: a secret whose hash is in the entry, a public client, a
// private_key_jwt client with its keys; bad combinations are refused.
func TestClientNew(t *testing.T) {
	run := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		getenv := func(k string) string { return map[string]string{"NATS_URL": "nats://127.0.0.1:1"}[k] }
		code := ctl.Run(context.Background(), args, getenv, &out, &errOut)
		return code, out.String(), errOut.String()
	}
	code, out, stderr := run("--json", "client", "new", "--client-id", "backend", "--role", "resource-server", "--audience", "orders")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var got struct {
		Secret string           `json:"client_secret"`
		Entry  auth.ClientEntry `json:"entry"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Secret) < 43 || got.Entry.SecretSHA256 != auth.HashAPIKey(got.Secret) || got.Entry.Auth != auth.ClientAuthSecretBasic {
		t.Fatalf("secret %q entry %+v", got.Secret, got.Entry)
	}
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(jwks, []byte(`{"keys":[{"kty":"EC","crv":"P-256","alg":"ES256","kid":"k1","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"client", "new", "--client-id", "web", "--auth", "none"},
		{"client", "new", "--client-id", "gateway", "--auth", "private_key_jwt", "--jwks-file", jwks},
		{"client", "new", "--client-id", "mesh", "--auth", "tls_client_auth", "--identity", "spiffe://example.org/mesh"},
	} {
		code, out, stderr := run(args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
		var line string
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "- {") {
				line = l
			}
		}
		if f, err := auth.ParsePolicy([]byte("clients:\n" + line + "\n" + auth.EndMarker + "\n")); err != nil || len(f.Clients) != 1 || f.Clients[0].ClientID != args[3] {
			t.Fatalf("%v: entry %q: %v", args, line, err)
		}
	}
	for _, args := range [][]string{
		{"client", "new"},
		{"client", "new", "--client-id", "web", "--auth", "none", "--role", "resource-server"},
		{"client", "new", "--client-id", "gw", "--auth", "private_key_jwt"},
		{"client", "new", "--client-id", "m", "--auth", "tls_client_auth"},
		{"client", "new", "--client-id", "x", "--auth", "client_secret_post"},
		{"client", "old"},
	} {
		if code, _, _ := run(args...); code == 0 {
			t.Errorf("%v accepted", args)
		}
	}
}
