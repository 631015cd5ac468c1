package ssf_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/issuer"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	"github.com/auth-platform/tokenservice/rpc/ssf"
)

// TestEveryEventType makes each event from the log and checks its SET:
// reuse detection and a client revocation (session-revoked), a subject
// cut-off (sessions-revoked, and session-revoked for its family), a key
// compromise (signing-key-compromised declared and resolved, and
// session-revoked with reason key_compromise).
func TestEveryEventType(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	poll := h.createStream("alice", map[string]any{"events_requested": ssf.EventTypes()})
	type seen struct {
		typ, sub, session, reason, who string
		body                           map[string]any
	}
	collect := func(n int) []seen {
		t.Helper()
		var out []seen
		for len(out) < n {
			resp := h.poll("alice", poll, map[string]any{"maxEvents": 100})
			var acks []string
			for jti, raw := range resp.Sets {
				s := h.verify(raw)
				for typ, body := range s.Claims.Events {
					e := seen{typ: typ, body: body}
					if u := s.Claims.SubID.User; u != nil {
						e.sub = u.Sub
					}
					if s.Claims.SubID.Format == "iss_sub" {
						e.sub = s.Claims.SubID.Sub
					}
					if ss := s.Claims.SubID.Session; ss != nil {
						e.session = ss.ID
					}
					if ra, ok := body["reason_admin"].(map[string]any); ok {
						e.reason, _ = ra["en"].(string)
					}
					e.who, _ = body["initiating_entity"].(string)
					out = append(out, e)
				}
				acks = append(acks, jti)
			}
			h.poll("alice", poll, map[string]any{"ack": acks, "maxEvents": 0})
		}
		if len(out) != n {
			t.Fatalf("%d events, want %d: %+v", len(out), n, out)
		}
		return out
	}

	// Reuse detection.
	tok := h.generate("user-reuse")
	if _, err := h.env.Issuer.Refresh(ctx, issuer.RefreshRequest{RefreshToken: tok.RefreshToken, ClientID: "web"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.env.Issuer.Refresh(ctx, issuer.RefreshRequest{RefreshToken: tok.RefreshToken, ClientID: "web"}); err == nil {
		t.Fatal("a replayed refresh token was accepted")
	}
	ev := collect(1)[0]
	if ev.typ != ssf.EventSessionRevoked || ev.sub != "user-reuse" || ev.session != tok.FamilyID || !strings.HasPrefix(ev.reason, "reuse") || ev.who != "policy" {
		t.Fatalf("reuse: %+v", ev)
	}

	// A client's revocation in its own words: the reason's label, never
	// the words (they may name a user or an incident).
	tok = h.generate("user-client")
	if _, err := h.env.Issuer.Revoke(ctx, issuer.RevokeRequest{Target: issuer.TargetRefreshToken, Value: tok.RefreshToken, Reason: "logout after ticket 4711 by jane"}); err != nil {
		t.Fatal(err)
	}
	ev = collect(1)[0]
	user, _ := ev.body["reason_user"].(map[string]any)
	if ev.typ != ssf.EventSessionRevoked || ev.session != tok.FamilyID || ev.reason != "other" || user["en"] != "other" || ev.body["event_timestamp"] == nil {
		t.Fatalf("client revocation: %+v", ev)
	}

	// A subject cut-off: RISC sessions-revoked, and the family's own.
	tok = h.generate("user-subject")
	if _, err := h.env.Issuer.RevokeSubject(ctx, "user-subject", eventsv1.RevocationReason_REVOCATION_REASON_SUBJECT); err != nil {
		t.Fatal(err)
	}
	evs := collect(2)
	types := map[string]seen{}
	for _, e := range evs {
		types[e.typ] = e
	}
	if e := types[ssf.EventSessionsRevoked]; e.sub != "user-subject" || e.who != "admin" {
		t.Fatalf("sessions-revoked: %+v", evs)
	}
	if e := types[ssf.EventSessionRevoked]; e.session != tok.FamilyID {
		t.Fatalf("session-revoked of the cut-off: %+v", evs)
	}

	// A key compromise, with the families it signed revoked.
	tok = h.generate("user-key")
	if _, err := h.env.Responder.Compromise(ctx, true); err != nil {
		t.Fatal(err)
	}
	evs = collect(3)
	var phases []string
	var revoked bool
	for _, e := range evs {
		switch e.typ {
		case ssf.EventKeyCompromised:
			phases = append(phases, e.body["phase"].(string))
			if e.body["key_id"] != tok.KeyID {
				t.Fatalf("compromise of key %v, want %s", e.body["key_id"], tok.KeyID)
			}
			if e.body["phase"] == "resolved" && (e.body["replaced_by"] == "" || e.body["revoked_sessions"] != float64(1)) {
				t.Fatalf("resolved: %+v", e.body)
			}
		case ssf.EventSessionRevoked:
			revoked = e.session == tok.FamilyID && e.reason == "key_compromise" && e.who == "system"
		}
	}
	if !revoked || len(phases) != 2 {
		t.Fatalf("key compromise: %+v", evs)
	}
}

// TestSubjectsAndEventsFilter: a removed subject's events are not sent,
// until it is added back; an event type not requested is not sent.
func TestSubjectsAndEventsFilter(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	only := h.createStream("alice", map[string]any{"events_requested": []string{ssf.EventSessionsRevoked}})
	poll := h.createStream("alice", map[string]any{"events_requested": []string{ssf.EventSessionRevoked}})
	user := map[string]any{"format": "iss_sub", "iss": tokenIssuer, "sub": "user-x"}
	h.must(http.StatusNoContent, "alice", http.MethodPost, ssf.PathRemoveSubject, map[string]any{"stream_id": poll.StreamID, "subject": user}, nil)
	tx := h.generate("user-x")
	h.revoke(tx.FamilyID)
	ty := h.generate("user-y")
	h.revoke(ty.FamilyID)
	for _, raw := range h.pollUntil("alice", poll, 1, time.Second) {
		if sessionOf(h, raw) != ty.FamilyID {
			t.Fatal("a removed subject's event was sent")
		}
	}
	if resp := h.poll("alice", only, map[string]any{"returnImmediately": true}); len(resp.Sets) != 0 {
		t.Fatal("an event type not requested was sent")
	}
	h.must(http.StatusOK, "alice", http.MethodPost, ssf.PathAddSubject, map[string]any{"stream_id": poll.StreamID, "subject": user}, nil)
	// One session of an added user removed, as a complex subject.
	tz := h.generate("user-x")
	tw := h.generate("user-x")
	h.must(http.StatusNoContent, "alice", http.MethodPost, ssf.PathRemoveSubject, map[string]any{"stream_id": poll.StreamID,
		"subject": map[string]any{"format": "complex", "session": map[string]any{"format": "opaque", "id": tz.FamilyID}}}, nil)
	h.revoke(tz.FamilyID)
	h.revoke(tw.FamilyID)
	got := map[string]bool{}
	waitFor(t, "the added subject's event", func() bool {
		for _, raw := range h.poll("alice", poll, map[string]any{"returnImmediately": true}).Sets {
			got[sessionOf(h, raw)] = true
		}
		return got[tw.FamilyID]
	})
	if got[tz.FamilyID] || got[tx.FamilyID] {
		t.Fatalf("a removed session was sent: %v", got)
	}
}

// TestManagementBadInput: every refusal of the management API.
func TestManagementBadInput(t *testing.T) {
	h := newHarness(t, harnessOptions{maxStreams: 3})
	mine := h.createStream("alice", map[string]any{})
	unknown := "AAAAAAAAAAAAAAAAAAAAAA"
	push := func(url string) map[string]any {
		return map[string]any{"delivery": map[string]any{"method": ssf.MethodPush, "endpoint_url": url}}
	}
	tests := []struct {
		name         string
		caller       string
		method, path string
		body         any
		want         int
	}{
		{"no credential", "", http.MethodGet, ssf.PathStreams, nil, http.StatusUnauthorized},
		{"issuer role", "login", http.MethodGet, ssf.PathStreams, nil, http.StatusForbidden},
		{"unknown stream", "alice", http.MethodGet, ssf.PathStreams + "?stream_id=" + unknown, nil, http.StatusNotFound},
		{"malformed stream id", "alice", http.MethodGet, ssf.PathStreams + "?stream_id=../x", nil, http.StatusNotFound},
		{"foreign stream read", "bob", http.MethodGet, ssf.PathStreams + "?stream_id=" + mine.StreamID, nil, http.StatusNotFound},
		{"foreign stream update", "bob", http.MethodPatch, ssf.PathStreams, map[string]any{"stream_id": mine.StreamID, "description": "x"}, http.StatusNotFound},
		{"foreign stream delete", "bob", http.MethodDelete, ssf.PathStreams + "?stream_id=" + mine.StreamID, nil, http.StatusNotFound},
		{"foreign stream status", "bob", http.MethodPost, ssf.PathStatus, map[string]any{"stream_id": mine.StreamID, "status": "paused"}, http.StatusNotFound},
		{"foreign stream poll", "bob", http.MethodPost, ssf.PathPoll + "?stream_id=" + mine.StreamID, map[string]any{}, http.StatusNotFound},
		{"foreign stream verify", "bob", http.MethodPost, ssf.PathVerify, map[string]any{"stream_id": mine.StreamID}, http.StatusNotFound},
		{"foreign stream subject", "bob", http.MethodPost, ssf.PathRemoveSubject, map[string]any{"stream_id": mine.StreamID,
			"subject": map[string]any{"format": "opaque", "id": "s"}}, http.StatusNotFound},
		{"http push off loopback", "alice", http.MethodPost, ssf.PathStreams, push("http://rp.example/events"), http.StatusBadRequest},
		{"push not http", "alice", http.MethodPost, ssf.PathStreams, push("ftp://rp.example/events"), http.StatusBadRequest},
		{"push relative", "alice", http.MethodPost, ssf.PathStreams, push("/events"), http.StatusBadRequest},
		{"push user info", "alice", http.MethodPost, ssf.PathStreams, push("https://u:p@rp.example/events"), http.StatusBadRequest},
		{"push without URL", "alice", http.MethodPost, ssf.PathStreams, push(""), http.StatusBadRequest},
		{"push URL too long", "alice", http.MethodPost, ssf.PathStreams, push("https://rp.example/" + strings.Repeat("a", 3000)), http.StatusBadRequest},
		{"unknown method", "alice", http.MethodPost, ssf.PathStreams, map[string]any{"delivery": map[string]any{"method": "urn:x"}}, http.StatusBadRequest},
		{"not JSON", "alice", http.MethodPost, ssf.PathStreams, "{", http.StatusBadRequest},
		{"oversized body", "alice", http.MethodPost, ssf.PathStreams, map[string]any{"description": strings.Repeat("a", 40<<10)}, http.StatusRequestEntityTooLarge},
		{"description too long", "alice", http.MethodPost, ssf.PathStreams, map[string]any{"description": strings.Repeat("a", 300)}, http.StatusBadRequest},
		{"control character", "alice", http.MethodPost, ssf.PathStreams, map[string]any{"description": "a\x00b"}, http.StatusBadRequest},
		{"bad status", "alice", http.MethodPost, ssf.PathStatus, map[string]any{"stream_id": mine.StreamID, "status": "on"}, http.StatusBadRequest},
		{"bad subject format", "alice", http.MethodPost, ssf.PathAddSubject, map[string]any{"stream_id": mine.StreamID,
			"subject": map[string]any{"format": "email", "email": "a@b"}}, http.StatusBadRequest},
		{"foreign issuer subject", "alice", http.MethodPost, ssf.PathAddSubject, map[string]any{"stream_id": mine.StreamID,
			"subject": map[string]any{"format": "iss_sub", "iss": "https://other", "sub": "u"}}, http.StatusBadRequest},
		{"no subject", "alice", http.MethodPost, ssf.PathAddSubject, map[string]any{"stream_id": mine.StreamID}, http.StatusBadRequest},
		{"maxEvents too large", "alice", http.MethodPost, ssf.PathPoll + "?stream_id=" + mine.StreamID, map[string]any{"maxEvents": 100000}, http.StatusBadRequest},
		{"state too long", "alice", http.MethodPost, ssf.PathVerify, map[string]any{"stream_id": mine.StreamID, "state": strings.Repeat("s", 300)}, http.StatusBadRequest},
		{"method not allowed", "alice", http.MethodHead, ssf.PathStreams, nil, http.StatusMethodNotAllowed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := h.call(tc.caller, tc.method, tc.path, tc.body)
			if code != tc.want {
				t.Fatalf("status %d, want %d: %s", code, tc.want, body)
			}
		})
	}
	// The owner still has its stream, unchanged, and an admin sees it.
	var got ssf.StreamConfig
	h.must(http.StatusOK, "alice", http.MethodGet, ssf.PathStreams+"?stream_id="+mine.StreamID, nil, &got)
	if got.Description != "" {
		t.Fatalf("a foreign caller changed the stream: %+v", got)
	}
	var all []ssf.StreamConfig
	h.must(http.StatusOK, "ops", http.MethodGet, ssf.PathStreams, nil, &all)
	if len(all) != 1 {
		t.Fatalf("admin sees %d streams", len(all))
	}
	var bobs []ssf.StreamConfig
	h.must(http.StatusOK, "bob", http.MethodGet, ssf.PathStreams, nil, &bobs)
	if len(bobs) != 0 {
		t.Fatalf("bob sees %d streams", len(bobs))
	}
	// At most 3 streams per receiver.
	h.createStream("alice", map[string]any{})
	h.createStream("alice", map[string]any{})
	h.must(http.StatusConflict, "alice", http.MethodPost, ssf.PathStreams, map[string]any{}, nil)
	// Concurrent creates never leave more than the limit.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { h.call("bob", http.MethodPost, ssf.PathStreams, map[string]any{}) })
	}
	wg.Wait()
	var bobs2 []ssf.StreamConfig
	h.must(http.StatusOK, "bob", http.MethodGet, ssf.PathStreams, nil, &bobs2)
	if len(bobs2) > 3 {
		t.Fatalf("concurrent creates left %d streams, limit 3", len(bobs2))
	}
	// Replace resets what it does not name; delete removes.
	var rep ssf.StreamConfig
	h.must(http.StatusOK, "alice", http.MethodPut, ssf.PathStreams, map[string]any{"stream_id": mine.StreamID, "description": "replaced"}, &rep)
	if rep.Description != "replaced" || rep.Delivery.Method != ssf.MethodPoll || len(rep.EventsRequested) != 0 {
		t.Fatalf("replace: %+v", rep)
	}
	h.must(http.StatusNoContent, "alice", http.MethodDelete, ssf.PathStreams+"?stream_id="+mine.StreamID, nil, nil)
	h.must(http.StatusNotFound, "alice", http.MethodGet, ssf.PathStreams+"?stream_id="+mine.StreamID, nil, nil)
	if !errors.Is(ssf.ErrStreamNotFound, ssf.ErrStreamNotFound) {
		t.Fatal("unreachable")
	}
}

// TestGuardCoversPaths: the guard's rules name every path of the
// transmitter: the metadata is public, every other path needs a receiver
// (a path the rules forgot would be refused to everyone, or served).
func TestGuardCoversPaths(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	for _, p := range ssf.Paths() {
		method := http.MethodPost
		if p == ssf.PathMetadata {
			method = http.MethodGet
		}
		code, body := h.call("", method, p, map[string]any{})
		want := http.StatusUnauthorized
		if p == ssf.PathMetadata {
			want = http.StatusOK
		}
		if code != want {
			t.Errorf("%s %s without credential: %d, want %d: %s", method, p, code, want, body)
		}
		if p == ssf.PathMetadata {
			continue
		}
		if code, body := h.call("login", method, p, map[string]any{}); code != http.StatusForbidden {
			t.Errorf("%s %s as an issuer: %d, want 403: %s", method, p, code, body)
		}
	}
	// A receiver, outside the platform, reaches nothing else.
	for _, p := range []string{"/token.v1.TokenService/GenerateTokens", "/token.v1.TokenService/RevokeToken",
		"/token.v1.TokenService/IntrospectToken", "/token.v1.TokenService/ListFamilies",
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "/metrics"} {
		if code, body := h.call("alice", http.MethodPost, p, map[string]any{}); code != http.StatusForbidden {
			t.Errorf("POST %s as a receiver: %d, want 403: %s", p, code, body)
		}
	}
}
