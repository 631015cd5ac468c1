package ssf

import (
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// TestWantsProperty: a stream receives an event exactly when it holds
// events (enabled or paused), the event comes after the stream's start,
// its type was requested, and none of its subjects was removed.
func TestWantsProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		keys := []string{userKey("a"), userKey("b"), sessionKey("s1"), sessionKey("s2")}
		r := &record{
			Status:          rapid.SampledFrom([]string{StatusEnabled, StatusPaused, StatusDisabled}).Draw(t, "status"),
			AfterSeq:        rapid.Uint64Range(0, 10).Draw(t, "after"),
			EventsRequested: rapid.SliceOfDistinct(rapid.SampledFrom(EventTypes()), func(s string) string { return s }).Draw(t, "requested"),
			Excluded:        rapid.SliceOfDistinct(rapid.SampledFrom(keys), func(s string) string { return s }).Draw(t, "excluded"),
		}
		seq := rapid.Uint64Range(0, 20).Draw(t, "seq")
		typ := rapid.SampledFrom(EventTypes()).Draw(t, "type")
		subj := rapid.SliceOfDistinct(rapid.SampledFrom(keys), func(s string) string { return s }).Draw(t, "keys")
		removed := false
		for _, k := range subj {
			removed = removed || slices.Contains(r.Excluded, k)
		}
		want := r.Status != StatusDisabled && seq > r.AfterSeq && slices.Contains(r.EventsRequested, typ) && !removed
		if got := wants(r, seq, typ, subj); got != want {
			t.Fatalf("wants = %v, want %v", got, want)
		}
	})
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
