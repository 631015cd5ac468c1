package issuer_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
	"github.com/auth-platform/tokenservice/projections"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// TestReplayEqualsLive runs random workloads (issues, rotations, replays,
// revocations of families and subjects, key changes) and checks that
// projections rebuilt from the log hold exactly the state that live
// updates built.
func TestReplayEqualsLive(t *testing.T) {
	env := issuertest.New(t, issuertest.Options{Grace: 5 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	run := 0
	rapid.Check(t, func(t *rapid.T) {
		run++
		var tokens []issuer.Tokens
		subjects := []string{fmt.Sprintf("s%d-a", run), fmt.Sprintf("s%d-b", run)}
		steps := rapid.IntRange(1, 40).Draw(t, "steps")
		for range steps {
			switch rapid.IntRange(0, 6).Draw(t, "op") {
			case 0, 1:
				tok, err := env.Issuer.Generate(ctx, issuer.GenerateRequest{
					Subject: rapid.SampledFrom(subjects).Draw(t, "subject"), ClientID: "c", Audience: []string{"api"}})
				if err != nil {
					t.Fatal(err)
				}
				tokens = append(tokens, tok)
			case 2, 3:
				if len(tokens) == 0 {
					continue
				}
				i := rapid.IntRange(0, len(tokens)-1).Draw(t, "token")
				// Any outcome is fine here; the point is the events.
				if tok, err := env.Issuer.Refresh(ctx, issuer.RefreshRequest{RefreshToken: tokens[i].RefreshToken, ClientID: "c"}); err == nil {
					tokens = append(tokens, tok)
				}
			case 4:
				if len(tokens) == 0 {
					continue
				}
				i := rapid.IntRange(0, len(tokens)-1).Draw(t, "token")
				if _, err := env.Issuer.RevokeRefreshToken(ctx, tokens[i].RefreshToken, eventsv1.RevocationReason_REVOCATION_REASON_CLIENT); err != nil {
					t.Fatal(err)
				}
			case 5:
				if _, err := env.Issuer.RevokeSubject(ctx, rapid.SampledFrom(subjects).Draw(t, "subject"), eventsv1.RevocationReason_REVOCATION_REASON_ADMIN); err != nil {
					t.Fatal(err)
				}
			case 6:
				env.Clock.Advance(time.Duration(rapid.IntRange(0, 20).Draw(t, "seconds")) * time.Second)
			}
		}
		env.CaughtUp(t)
		rebuilt := projections.NewSet(15 * time.Minute)
		if err := env.Log.Replay(ctx, 1, projections.Filters(env.Log.Subjects()), func(r eventlog.Record) {
			if err := rebuilt.Apply(r); err != nil {
				t.Fatalf("replay %d: %v", r.Seq, err)
			}
		}); err != nil {
			t.Fatal(err)
		}
		if live, got := env.Set.Digest(), rebuilt.Digest(); live != got {
			t.Fatalf("replayed state %s differs from live state %s", got, live)
		}
		if rebuilt.Seq() != env.Set.Seq() {
			t.Fatalf("replay ended at %d, live at %d", rebuilt.Seq(), env.Set.Seq())
		}
	})
	// A digest that cannot tell states apart would pass trivially.
	before := env.Set.Digest()
	if _, err := env.Keyring.Rotate(ctx, false); err != nil {
		t.Fatal(err)
	}
	env.CaughtUp(t)
	if env.Set.Digest() == before {
		t.Fatal("digest did not change with the key set")
	}
}
