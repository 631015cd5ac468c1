package ssf_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/issuer"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	"github.com/auth-platform/tokenservice/rpc/ssf"
)

// TestAudienceRestricted: a receiver whose policy lists audiences (carol:
// crm) hears of the sessions issued for them only, and of a user's
// sessions-revoked only when it added the user; an unrestricted receiver
// (alice) hears of everything.
func TestAudienceRestricted(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	carol := h.createStream("carol", map[string]any{"aud": "crm", "events_requested": ssf.EventTypes()})
	alice := h.createStream("alice", map[string]any{"events_requested": ssf.EventTypes()})
	gen := func(sub, aud string) issuer.Tokens {
		t.Helper()
		tok, err := h.env.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: sub, ClientID: "web", Audience: []string{aud}})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	cutOff := func(sub string) {
		t.Helper()
		if _, err := h.env.Issuer.RevokeSubject(ctx, sub, eventsv1.RevocationReason_REVOCATION_REASON_SUBJECT); err != nil {
			t.Fatal(err)
		}
	}
	crm, wiki := gen("user-a", "crm"), gen("user-a", "wiki")
	h.revoke(wiki.FamilyID)
	h.revoke(crm.FamilyID)
	gen("user-b", "wiki")
	cutOff("user-b") // not added by carol
	h.must(http.StatusOK, "carol", http.MethodPost, ssf.PathAddSubject, map[string]any{"stream_id": carol.StreamID,
		"subject": map[string]any{"format": "iss_sub", "iss": tokenIssuer, "sub": "user-c"}}, nil)
	gen("user-c", "wiki")
	cutOff("user-c")

	// Records are made in log order for every stream: once alice has the
	// last, carol's are queued.
	if got := len(h.pollUntil("alice", alice, 6, 10*time.Second)); got != 6 {
		t.Fatalf("alice: %d SETs, want 6 (every event)", got)
	}
	got := map[string]string{} // type → session or user
	for _, raw := range h.poll("carol", carol, map[string]any{"maxEvents": 100, "returnImmediately": true}).Sets {
		s := h.verify(raw)
		for typ := range s.Claims.Events {
			if _, dup := got[typ]; dup {
				t.Fatalf("carol: two %s SETs", typ)
			}
			switch {
			case s.Claims.SubID.Session != nil:
				got[typ] = s.Claims.SubID.Session.ID
			default:
				got[typ] = s.Claims.SubID.Sub
			}
		}
	}
	if len(got) != 2 || got[ssf.EventSessionRevoked] != crm.FamilyID || got[ssf.EventSessionsRevoked] != "user-c" {
		t.Fatalf("carol got %v, want crm's session %s and user-c's sessions-revoked", got, crm.FamilyID)
	}
}
