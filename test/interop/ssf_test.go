package interop

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
)

// TestNodeSharedSignalsReceiver runs ssf.mjs, a receiver written from the
// SSF, CAEP, RFC 8935 and RFC 8936 texts with npm jose verifying the SETs,
// against tokend: issue 17's "done when", end to end. Once with
// PUBLIC_BASE_URL, once on make run's defaults (the issuer is the
// loopback origin the receiver calls).
func TestNodeSharedSignalsReceiver(t *testing.T) {
	for _, configured := range []bool{true, false} {
		t.Run(fmt.Sprintf("public_base_url=%v", configured), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			env := map[string]string{}
			if configured {
				port := eventlogtest.FreePorts(t, 1)[0]
				env["PORT"], env["PUBLIC_BASE_URL"] = strconv.Itoa(port), fmt.Sprintf("http://127.0.0.1:%d", port)
			}
			m, _ := startTokend(t, ctx, env)
			checks := runNode(t, ctx, "ssf.mjs", "http://"+m.Addr())
			if want := 11; len(checks) != want {
				t.Fatalf("%d checks ran, want %d", len(checks), want)
			}
		})
	}
}
