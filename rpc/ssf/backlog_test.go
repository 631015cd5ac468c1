package ssf_test

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/rpc/ssf"
)

// TestStreamBacklogBounded: a stream whose receiver does not take its
// SETs keeps at most MaxPendingPerStream of them; the others are counted
// as dropped, and another receiver's stream is not affected. Once the
// receiver takes them, its new SETs are queued again.
func TestStreamBacklogBounded(t *testing.T) {
	var skew atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	h := newHarness(t, harnessOptions{maxPending: 2, now: now})
	idle := h.createStream("alice", map[string]any{"events_requested": []string{ssf.EventSessionRevoked}})
	busy := h.createStream("bob", map[string]any{"events_requested": []string{ssf.EventSessionRevoked}})
	seen := map[string]bool{}
	// take polls busy, acknowledging, until it has n SETs in all: every
	// record before them was handled for every stream (log order).
	take := func(n int) {
		t.Helper()
		waitFor(t, "bob's SETs", func() bool {
			resp := h.poll("bob", busy, map[string]any{"maxEvents": 100, "returnImmediately": true})
			var acks []string
			for jti := range resp.Sets {
				seen[jti] = true
				acks = append(acks, jti)
			}
			h.poll("bob", busy, map[string]any{"ack": acks, "maxEvents": 0, "returnImmediately": true})
			return len(seen) >= n
		})
	}
	for i := 1; i <= 4; i++ {
		h.revoke(h.generate("user-backlog").FamilyID)
		take(i)
	}
	resp := h.poll("alice", idle, map[string]any{"maxEvents": 100, "returnImmediately": true})
	if len(resp.Sets) != 2 {
		t.Fatalf("idle stream holds %d SETs, want 2 (the limit)", len(resp.Sets))
	}
	if got := metric(h, "token_service_ssf_dropped_total", "reason", ssf.DroppedStreamBacklog); got != 2 {
		t.Fatalf("dropped %v, want 2", got)
	}
	var acks []string
	for jti := range resp.Sets {
		acks = append(acks, jti)
	}
	h.must(http.StatusOK, "alice", http.MethodPost, idle.Delivery.EndpointURL, map[string]any{"ack": acks, "maxEvents": 0, "returnImmediately": true}, nil)
	skew.Store(int64(time.Minute)) // past the recount interval
	tok := h.generate("user-backlog")
	h.revoke(tok.FamilyID)
	take(5)
	resp = h.poll("alice", idle, map[string]any{"maxEvents": 100, "returnImmediately": true})
	if len(resp.Sets) != 1 {
		t.Fatalf("after the receiver took its SETs: %d queued, want 1", len(resp.Sets))
	}
	for _, raw := range resp.Sets {
		if sessionOf(h, raw) != tok.FamilyID {
			t.Fatal("not the new session's SET")
		}
	}
}
