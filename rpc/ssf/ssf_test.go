package ssf_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	"github.com/auth-platform/tokenservice/rpc/ssf"
)

// TestDoneWhen follows issue 17's "done when" as a receiver written from
// the specifications would: discover, create a poll and a push stream, see
// a verifiable session-revoked SET within a second of a revocation,
// acknowledge it and not see it again, and verify the stream.
func TestDoneWhen(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	var md ssf.Metadata
	h.must(http.StatusOK, "", http.MethodGet, ssf.PathMetadata, nil, &md)
	if md.SpecVersion != "1_0" || md.Issuer != h.srv.URL || md.JWKSURI != h.srv.URL+"/.well-known/jwks.json" ||
		md.ConfigurationEndpoint != h.srv.URL+ssf.PathStreams || md.VerificationEndpoint != h.srv.URL+ssf.PathVerify ||
		md.StatusEndpoint == "" || md.AddSubjectEndpoint == "" || md.RemoveSubjectEndpoint == "" || md.DefaultSubjects != "ALL" ||
		len(md.DeliveryMethodsSupported) != 2 || len(md.AuthorizationSchemes) == 0 {
		t.Fatalf("metadata: %+v", md)
	}
	rcv := newReceiver(t)
	poll := h.createStream("alice", map[string]any{"delivery": map[string]any{"method": ssf.MethodPoll},
		"events_requested": []string{ssf.EventSessionRevoked}, "aud": "https://rp.example"})
	push := h.createStream("alice", map[string]any{"delivery": map[string]any{"method": ssf.MethodPush, "endpoint_url": rcv.srv.URL + "/events",
		"authorization_header": "Bearer rp-secret"}, "events_requested": []string{ssf.EventSessionRevoked}})
	if poll.Delivery.EndpointURL != h.srv.URL+ssf.PathPoll+"?stream_id="+poll.StreamID || len(poll.EventsDelivered) != 1 || poll.Iss != h.srv.URL {
		t.Fatalf("poll stream: %+v", poll)
	}
	if push.Delivery.AuthorizationHeader != "" {
		t.Fatal("the push authorization header is read back")
	}

	tok := h.generate("user-1")
	start := time.Now()
	if _, err := h.env.Issuer.RevokeFamily(context.Background(), tok.FamilyID, eventsv1.RevocationReason_REVOCATION_REASON_CLIENT); err != nil {
		t.Fatal(err)
	}
	sets := h.pollUntil("alice", poll, 1, time.Second)
	pushed := rcv.next(t, time.Second)
	t.Logf("revocation to poll and push: %s", time.Since(start))
	var jti string
	for j, raw := range sets {
		jti = j
		s := h.verify(raw)
		if s.Claims.Jti != j || len(s.Claims.Aud) != 1 || s.Claims.Aud[0] != "https://rp.example" {
			t.Fatalf("poll SET: %+v", s.Claims)
		}
		ev := s.Claims.Events[ssf.EventSessionRevoked]
		if ev == nil || s.Claims.SubID.Format != "complex" || s.Claims.SubID.User.Sub != "user-1" || s.Claims.SubID.User.Iss != tokenIssuer ||
			s.Claims.SubID.Session.ID != tok.FamilyID || ev["event_timestamp"] == nil || ev["reason_admin"] == nil || ev["reason_user"] == nil {
			t.Fatalf("session-revoked SET: %+v", s.Claims)
		}
	}
	ps := h.verify(pushed)
	if ps.Claims.SubID.Session.ID != tok.FamilyID || ps.Claims.Aud[0] != "apikey:alice" {
		t.Fatalf("pushed SET: %+v", ps.Claims)
	}
	rcv.mu.Lock()
	if rcv.auth[0] != "Bearer rp-secret" {
		t.Fatalf("push Authorization %q", rcv.auth[0])
	}
	rcv.mu.Unlock()

	// Acknowledged, it is not returned again.
	if resp := h.poll("alice", poll, map[string]any{"ack": []string{jti}, "returnImmediately": true}); len(resp.Sets) != 0 {
		t.Fatalf("after the ack: %v", resp.Sets)
	}
	if resp := h.poll("alice", poll, map[string]any{"returnImmediately": true}); len(resp.Sets) != 0 {
		t.Fatalf("after the ack, again: %v", resp.Sets)
	}

	// Verification, with its state.
	h.must(http.StatusNoContent, "alice", http.MethodPost, ssf.PathVerify, map[string]any{"stream_id": poll.StreamID, "state": "xyz-123"}, nil)
	for _, raw := range h.pollUntil("alice", poll, 1, time.Second) {
		s := h.verify(raw)
		ev := s.Claims.Events[ssf.EventVerification]
		if ev == nil || ev["state"] != "xyz-123" || s.Claims.SubID.Format != "opaque" || s.Claims.SubID.ID != poll.StreamID {
			t.Fatalf("verification SET: %+v", s.Claims)
		}
	}
	h.must(http.StatusNoContent, "alice", http.MethodPost, ssf.PathVerify, map[string]any{"stream_id": push.StreamID, "state": "push-state"}, nil)
	if s := h.verify(rcv.next(t, time.Second)); s.Claims.Events[ssf.EventVerification]["state"] != "push-state" {
		t.Fatalf("pushed verification: %+v", s.Claims)
	}
	// Too soon after the previous one.
	h.must(http.StatusTooManyRequests, "alice", http.MethodPost, ssf.PathVerify, map[string]any{"stream_id": poll.StreamID, "state": "again"}, nil)
}
