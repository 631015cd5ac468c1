package issuer_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// TestGraceSuccessorOnce: inside the grace window a spent Bearer token
// gets the successor once; presented again (a stolen copy, say) it is a
// replay that revokes the family, and the successor dies with it.
func TestGraceSuccessorOnce(t *testing.T) {
	env := issuertest.New(t, issuertest.Options{Grace: time.Minute})
	ctx := context.Background()
	first, err := env.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "grace", ClientID: "web", Audience: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	refresh := func(tok string) (issuer.Tokens, error) {
		return env.Issuer.Refresh(ctx, issuer.RefreshRequest{RefreshToken: tok, ClientID: "web"})
	}
	next, err := refresh(first.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	again, err := refresh(first.RefreshToken)
	if err != nil || again.RefreshToken != next.RefreshToken || again.AccessToken != next.AccessToken {
		t.Fatalf("first presentation of the spent token in the window: %v (same successor: %v)", err, again.RefreshToken == next.RefreshToken)
	}
	if _, err := refresh(first.RefreshToken); !errors.Is(err, issuer.ErrTokenReused) {
		t.Fatalf("second presentation of the spent token in the window: %v, want ErrTokenReused", err)
	}
	rec, err := env.Log.LastConsistent(ctx, env.Log.Subjects().FamilyFilter(first.FamilyID))
	if err != nil {
		t.Fatal(err)
	}
	if st := stateOf(t, rec); st.GetStatus() != eventsv1.FamilyStatus_FAMILY_STATUS_REVOKED || st.GetRevokedReason() != eventsv1.RevocationReason_REVOCATION_REASON_REUSE {
		t.Fatalf("family after the replay: %v %v, want revoked for reuse", st.GetStatus(), st.GetRevokedReason())
	}
	if _, err := refresh(next.RefreshToken); !errors.Is(err, issuer.ErrFamilyRevoked) {
		t.Fatalf("the successor after the replay: %v, want ErrFamilyRevoked", err)
	}
}
