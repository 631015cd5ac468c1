// Package interop checks tokend against independent implementations: DPoP
// proofs made by the npm packages dpop and jose are accepted, and the tokens
// issued to them verify in jose against the served JWKS with the cnf.jkt
// jose computes. The packages are installed by `make test` (npm ci in this
// folder) and run with the machine's Node.js.
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

func TestNodeDPoPAndJose(t *testing.T) {
	if _, err := os.Stat("node_modules/dpop"); err != nil {
		t.Fatalf("npm packages missing (run `make interop-deps`, which `make test` does): %v", err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found: %v", err)
	}
	env := map[string]string{
		"HOST": "127.0.0.1", "PORT": "0", "DATA_DIR": t.TempDir(), "NATS_LISTEN": "127.0.0.1:0",
		"LOG_LEVEL": "warn", "JWT_ALGORITHM": "ES256", "JWT_ISSUER": "https://issuer.interop.test",
		"ENCRYPTION_KEY": base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)),
	}
	cfg, err := app.ConfigFromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m, err := app.Start(ctx, cfg, app.NewLogger(cfg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close(context.Background()) })

	cmd := exec.CommandContext(ctx, node, "client.mjs", "http://"+m.Addr(), cfg.Issuer)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	checks := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r struct {
			Alg, Check string
			OK         bool
			Detail     any
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("bad output line %q: %v", sc.Text(), err)
		}
		checks++
		if !r.OK {
			t.Errorf("%s: %s: %v", r.Alg, r.Check, r.Detail)
		}
	}
	if err != nil {
		t.Fatalf("node client failed: %v\n%s", err, stderr.String())
	}
	// 5 algorithms × 7 checks, plus the dpop package's own thumbprint for
	// the 3 algorithms it makes proofs with.
	if want := 5*7 + 3; checks != want {
		t.Fatalf("%d checks ran, want %d", checks, want)
	}
}
