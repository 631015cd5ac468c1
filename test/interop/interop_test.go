// Package interop checks tokend against independent implementations: DPoP
// proofs made by the npm packages dpop and jose are accepted, and the tokens
// issued to them verify in jose against the served JWKS with the cnf.jkt
// jose computes; oauth4webapi drives the standard OAuth endpoints from
// the metadata alone. The packages are installed by `make test` (npm ci in
// this folder) and run with the machine's Node.js.
package interop

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/cmd/tokend/app"
)

// check is one line of a node client's output.
type check struct {
	Alg, Flow, Check string
	OK               bool
	Detail           any
}

// startTokend starts tokend on loopback with its embedded NATS server;
// env adds to or replaces the defaults.
func startTokend(t *testing.T, ctx context.Context, env map[string]string) (*app.Main, app.Config) {
	t.Helper()
	vars := map[string]string{
		"HOST": "127.0.0.1", "PORT": "0", "DATA_DIR": t.TempDir(), "NATS_LISTEN": "127.0.0.1:0",
		"LOG_LEVEL": "warn", "JWT_ALGORITHM": "ES256", "JWT_ISSUER": "https://issuer.interop.test",
		"ENCRYPTION_KEY": base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)),
	}
	for k, v := range env {
		vars[k] = v
	}
	cfg, err := app.ConfigFromEnv(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	m, err := app.Start(ctx, cfg, app.NewLogger(cfg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	return m, cfg
}

// runNode runs a node script of this folder and returns its checks,
// failing the test for every check that failed.
func runNode(t *testing.T, ctx context.Context, args ...string) []check {
	t.Helper()
	if _, err := os.Stat("node_modules/oauth4webapi"); err != nil {
		t.Fatalf("npm packages missing (run `make interop-deps`, which `make test` does): %v", err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found: %v", err)
	}
	cmd := exec.CommandContext(ctx, node, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var checks []check
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var c check
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("bad output line %q: %v", sc.Text(), err)
		}
		checks = append(checks, c)
		if !c.OK {
			t.Errorf("%s%s: %s: %v", c.Alg, c.Flow, c.Check, c.Detail)
		}
	}
	if err != nil {
		t.Fatalf("node %s failed: %v\n%s", args[0], err, stderr.String())
	}
	return checks
}

func TestNodeDPoPAndJose(t *testing.T) {
	// tokend signs with ES256 (BoringCrypto in the release build), and
	// with RS256 and PS256 by OpenSSL where it loads (signing/local).
	for _, alg := range []string{"ES256", "RS256", "PS256"} {
		t.Run(alg, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			m, cfg := startTokend(t, ctx, map[string]string{"JWT_ALGORITHM": alg, "SIGNING_OPENSSL": signingOpenSSL})
			checks := runNode(t, ctx, "client.mjs", "http://"+m.Addr(), cfg.Issuer)
			// 5 algorithms × 7 checks, plus the dpop package's own thumbprint for
			// the 3 algorithms it makes proofs with.
			if want := 5*7 + 3; len(checks) != want {
				t.Fatalf("%d checks ran, want %d", len(checks), want)
			}
		})
	}
}

// TestOAuth4WebAPI: oauth4webapi, driven by the metadata document alone,
// rotates Bearer and DPoP-bound refresh tokens (nonces required, so it
// answers the use_dpop_nonce challenge), introspects, revokes, and sees
// the revoked family refused; another key's proof is refused.
func TestOAuth4WebAPI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m, _ := startTokend(t, ctx, map[string]string{"DPOP_NONCE_REQUIRED": "true"})
	checks := runNode(t, ctx, "oauth.mjs", "http://"+m.Addr())
	if want := 2 + 2*7 + 1 + 1 + 3 + 3; len(checks) != want {
		t.Fatalf("%d checks ran, want %d", len(checks), want)
	}
}
