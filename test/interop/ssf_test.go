package interop

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/cmd/tokend/app"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
)

// TestNodeSharedSignalsReceiver runs ssf.mjs, a receiver written from the
// SSF, CAEP, RFC 8935 and RFC 8936 texts with npm jose verifying the SETs,
// against tokend: issue 17's "done when", end to end.
func TestNodeSharedSignalsReceiver(t *testing.T) {
	if _, err := os.Stat("node_modules/jose"); err != nil {
		t.Fatalf("npm packages missing (run `make interop-deps`, which `make test` does): %v", err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found: %v", err)
	}
	port := eventlogtest.FreePorts(t, 1)[0]
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	env := map[string]string{
		"HOST": "127.0.0.1", "PORT": strconv.Itoa(port), "DATA_DIR": t.TempDir(), "NATS_LISTEN": "127.0.0.1:0",
		"LOG_LEVEL": "warn", "JWT_ALGORITHM": "ES256", "JWT_ISSUER": "https://issuer.interop.test", "PUBLIC_BASE_URL": base,
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

	cmd := exec.CommandContext(ctx, node, "ssf.mjs", base)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	checks := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r struct {
			Check  string
			OK     bool
			Detail any
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("bad output line %q: %v", sc.Text(), err)
		}
		checks++
		t.Logf("%s: ok=%v", r.Check, r.OK)
		if !r.OK {
			t.Errorf("%s: %v", r.Check, r.Detail)
		}
	}
	if err != nil {
		t.Fatalf("node receiver failed: %v\n%s", err, stderr.String())
	}
	if want := 11; checks != want {
		t.Fatalf("%d checks ran, want %d", checks, want)
	}
}
