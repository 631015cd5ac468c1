package keyring_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/awskms"
	"github.com/auth-platform/tokenservice/signing/awskms/kmstest"
	"github.com/auth-platform/tokenservice/signing/breaker"
)

// TestFallbackRecordFailureIsReported: when KMS is down and the event log
// unreachable too, the fallback key still signs, and the fallback_engaged
// event that cannot be appended is reported to Config.OnError rather than
// lost.
func TestFallbackRecordFailureIsReported(t *testing.T) {
	e := kmstest.Start(t)
	node := eventlogtest.SingleNode(t)
	nc, err := node.Embedded.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	reported := make(chan error, 4)
	env := issuertest.New(t, issuertest.Options{Conn: nc, Algorithm: signing.ES256, Backend: awskms.Backend{API: e.Client}, Fallback: true,
		Breaker: breaker.Config{Failures: 2, OpenFor: time.Minute, Timeout: time.Second},
		KeyringOnError: func(err error) {
			select {
			case reported <- err:
			default:
			}
		}})
	ctx := context.Background()
	if err := env.Keyring.Tick(ctx); err != nil { // publishes the fallback key
		t.Fatal(err)
	}
	fb, ok := env.Keyring.Fallback()
	if !ok {
		t.Fatal("no fallback key")
	}
	e.Stop()
	nc.Close()
	for range 3 { // two failures open the breaker
		s, err := env.Keyring.Active(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Sign(ctx, []byte("x.y"))
		if s.KeyID() == fb.KeyID() {
			if err != nil {
				t.Fatalf("the fallback key does not sign: %v", err)
			}
			break
		}
	}
	select {
	case err := <-reported:
		if !errors.Is(err, nats.ErrConnectionClosed) || !strings.Contains(err.Error(), "fallback_engaged") {
			t.Errorf("reported %v, want the failed append of fallback_engaged", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the failed append was not reported")
	}
}
