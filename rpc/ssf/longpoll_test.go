package ssf_test

import (
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/rpc/ssf"
)

// TestLongPollWakes: a long poll waiting on an empty stream returns as
// soon as a SET is queued, every time.
func TestLongPollWakes(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	poll := h.createStream("alice", map[string]any{"events_requested": []string{ssf.EventSessionRevoked}})
	for i := range 30 {
		tok := h.generate("user-1")
		done := make(chan time.Duration, 1)
		go func() {
			t0 := time.Now()
			h.revoke(tok.FamilyID)
			done <- time.Since(t0)
		}()
		t0 := time.Now()
		resp := h.poll("alice", poll, map[string]any{"maxEvents": 10})
		<-done
		if len(resp.Sets) == 0 {
			resp = h.poll("alice", poll, map[string]any{"maxEvents": 10})
		}
		if took := time.Since(t0); took > 2*time.Second || len(resp.Sets) != 1 {
			t.Fatalf("round %d: %d SETs after %s", i, len(resp.Sets), took)
		}
		for jti := range resp.Sets {
			h.poll("alice", poll, map[string]any{"ack": []string{jti}, "maxEvents": 0})
		}
	}
}
