package ssf

import (
	"errors"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// TestWantsProperty: a stream receives an event exactly when it holds
// events (enabled or paused), the event comes after the stream's start,
// its type was requested, none of its subjects was removed, and, for a
// stream restricted to audiences, a session's revocation names one of
// them, or a subject-wide event is about a subject the stream added.
func TestWantsProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		keys := []string{userKey("a"), userKey("b"), sessionKey("s1"), sessionKey("s2")}
		auds := []string{"crm", "wiki", "mail"}
		distinct := func(from []string, label string) []string {
			return rapid.SliceOfDistinct(rapid.SampledFrom(from), func(s string) string { return s }).Draw(t, label)
		}
		r := &record{
			Status:          rapid.SampledFrom([]string{StatusEnabled, StatusPaused, StatusDisabled}).Draw(t, "status"),
			AfterSeq:        rapid.Uint64Range(0, 10).Draw(t, "after"),
			EventsRequested: distinct(EventTypes(), "requested"),
			Excluded:        distinct(keys, "excluded"),
			Added:           distinct(keys, "added"),
			Restrict:        distinct(auds, "restrict"),
		}
		sig := &signal{Seq: rapid.Uint64Range(0, 20).Draw(t, "seq"), Type: rapid.SampledFrom(EventTypes()).Draw(t, "type"),
			Keys: distinct(keys, "keys"), Aud: distinct(auds, "aud")}
		removed, added, forUs := false, false, false
		for _, k := range sig.Keys {
			removed = removed || slices.Contains(r.Excluded, k)
			added = added || slices.Contains(r.Added, k)
		}
		for _, a := range sig.Aud {
			forUs = forUs || slices.Contains(r.Restrict, a)
		}
		entitled := len(r.Restrict) == 0 || (sig.Type == EventSessionRevoked && forUs) || (sig.Type != EventSessionRevoked && added)
		want := r.Status != StatusDisabled && sig.Seq > r.AfterSeq && slices.Contains(r.EventsRequested, sig.Type) && !removed && entitled
		if got := wants(r, sig); got != want {
			t.Fatalf("wants = %v, want %v", got, want)
		}
	})
}

// TestApplyKeepsRestriction: updates and replacements keep the audiences
// recorded at creation, whoever makes them.
func TestApplyKeepsRestriction(t *testing.T) {
	base := record{Restrict: []string{"crm"}, Added: []string{userKey("a")}, Delivery: Delivery{Method: MethodPoll}}
	for _, replace := range []bool{false, true} {
		for _, c := range []Caller{{Owner: "apikey:a", Audiences: []string{"crm"}}, {Owner: "apikey:ops", Admin: true}} {
			r, err := PushURLPolicy{}.apply(base, StreamRequest{Aud: Audience{"crm"}}, c, replace)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(r.Restrict, []string{"crm"}) || !slices.Equal(r.Added, []string{userKey("a")}) {
				t.Fatalf("replace %v by %+v: %+v", replace, c, r)
			}
		}
	}
}

// TestVisibleProperty: only the owner, or an admin, sees a stream.
func TestVisibleProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		owners := []string{"", "apikey:a", "apikey:b", "mtls:spiffe://x"}
		r := &record{Owner: rapid.SampledFrom(owners).Draw(t, "owner")}
		c := Caller{Owner: rapid.SampledFrom(owners).Draw(t, "caller"), Admin: rapid.Bool().Draw(t, "admin")}
		if got, want := visibleTo(r, c), c.Admin || c.Owner == r.Owner; got != want {
			t.Fatalf("visibleTo(%q, %+v) = %v", r.Owner, c, got)
		}
	})
}

// TestApplyPatchKeeps: a PATCH changes only what it names; a PUT resets
// what it does not name; the push secret survives a PATCH of the URL.
func TestApplyPatchKeeps(t *testing.T) {
	c := Caller{Owner: "apikey:a"}
	base, err := PushURLPolicy{}.apply(record{}, StreamRequest{Aud: Audience{"x"}, EventsRequested: []string{EventSessionRevoked},
		Delivery: &Delivery{Method: MethodPush, EndpointURL: "https://rp.example/a", AuthorizationHeader: "Bearer s"}}, c, true)
	if err != nil {
		t.Fatal(err)
	}
	desc := "d"
	patched, err := PushURLPolicy{}.apply(base, StreamRequest{Description: &desc,
		Delivery: &Delivery{Method: MethodPush, EndpointURL: "https://rp.example/b"}}, c, false)
	if err != nil {
		t.Fatal(err)
	}
	if patched.Aud[0] != "x" || len(patched.EventsRequested) != 1 || patched.Description != "d" ||
		patched.Delivery.EndpointURL != "https://rp.example/b" || patched.Delivery.AuthorizationHeader != "Bearer s" {
		t.Fatalf("patch: %+v", patched)
	}
	replaced, err := PushURLPolicy{}.apply(patched, StreamRequest{}, c, true)
	if err != nil {
		t.Fatal(err)
	}
	if replaced.Aud[0] != "apikey:a" || len(replaced.EventsRequested) != 0 || replaced.Description != "" || replaced.Delivery.Method != MethodPoll {
		t.Fatalf("replace: %+v", replaced)
	}
	if _, err := (PushURLPolicy{}).apply(base, StreamRequest{Aud: Audience{"y"}}, Caller{Owner: "apikey:a", Audiences: []string{"x"}}, false); err == nil {
		t.Fatal("an audience outside the caller's was accepted")
	}
}

// TestApplyOriginKeepsSecret: a PATCH of the push URL alone keeps the
// authorization header within the URL's origin only; moved to another
// origin, the header must be given again, or the secret would be sent
// to a host of the caller's choice.
func TestApplyOriginKeepsSecret(t *testing.T) {
	t.Parallel()
	c := Caller{Owner: "apikey:a"}
	base := record{Delivery: Delivery{Method: MethodPush, EndpointURL: "https://rp.example/a", AuthorizationHeader: "Bearer s"}}
	for _, tc := range []struct {
		name, url, header string
		wantErr           error
		wantHeader        string
	}{
		{"same origin", "https://rp.example/b", "", nil, "Bearer s"},
		{"same origin, explicit port", "https://RP.example:443/b", "", nil, "Bearer s"},
		{"other host", "https://attacker.example/a", "", ErrInvalidRequest, ""},
		{"other port", "https://rp.example:8443/a", "", ErrInvalidRequest, ""},
		{"other host, header given", "https://attacker.example/a", "Bearer t", nil, "Bearer t"},
	} {
		r, err := PushURLPolicy{}.apply(base, StreamRequest{Delivery: &Delivery{Method: MethodPush, EndpointURL: tc.url, AuthorizationHeader: tc.header}}, c, false)
		if !errors.Is(err, tc.wantErr) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.wantErr)
			continue
		}
		if err == nil && r.Delivery.AuthorizationHeader != tc.wantHeader {
			t.Errorf("%s: header %q, want %q", tc.name, r.Delivery.AuthorizationHeader, tc.wantHeader)
		}
	}
}
