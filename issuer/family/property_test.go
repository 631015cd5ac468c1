package family_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
	"pgregory.net/rapid"

	"github.com/auth-platform/tokenservice/issuer/family"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// TestDecideProperties checks the refresh decision without NATS, over
// random families and requests: a family rotates only for its current,
// unexpired token, of its client and key, while active; a guess never
// revokes; a request without the bound family's key never revokes; and a
// revoked family never rotates or revokes again.
func TestDecideProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		gen := rapid.IntRange(1, 5).Draw(t, "generation")
		secrets := []string{"g1", "g2", "g3", "g4", "g5"}
		st := &eventsv1.FamilyState{
			FamilyId: "f", ClientId: "web", Generation: uint64(gen),
			Status:           eventsv1.FamilyStatus_FAMILY_STATUS_ACTIVE,
			SecretHash:       hash(secrets[gen-1]),
			RotatedAt:        timestamppb.New(t0),
			RefreshExpiresAt: timestamppb.New(t0.Add(time.Hour)),
		}
		if gen > 1 {
			st.PreviousSecretHash = hash(secrets[gen-2])
			st.GraceId = rapid.SampledFrom([]string{"", "g"}).Draw(t, "grace record")
		}
		for i := 0; i < gen-2; i++ {
			st.SpentSecretPrefixes = append(st.SpentSecretPrefixes, hash(secrets[i])[:family.SpentPrefixLen]...)
		}
		if rapid.Bool().Draw(t, "revoked") {
			st.Status = eventsv1.FamilyStatus_FAMILY_STATUS_REVOKED
		}
		if rapid.Bool().Draw(t, "bound") {
			st.DpopJkt = "jkt"
		}
		p := family.Presented{
			SecretHash: hash(rapid.SampledFrom(append(secrets, "guess")).Draw(t, "presented")),
			ClientID:   rapid.SampledFrom([]string{"web", "app"}).Draw(t, "client"),
			DPoPJKT:    rapid.SampledFrom([]string{"", "jkt", "other"}).Draw(t, "key"),
		}
		now := t0.Add(time.Duration(rapid.Int64Range(0, int64(2*time.Hour)).Draw(t, "elapsed")))
		grace := time.Duration(rapid.Int64Range(0, int64(10*time.Second)).Draw(t, "grace"))
		raced := uint64(rapid.IntRange(0, 5).Draw(t, "raced generation"))
		d := family.Decide(st, p, now, grace, raced)
		m := family.MatchSecret(st, p.SecretHash)

		if d == family.DecideRotate && (m != family.Current || !family.ActiveAt(st, now) || family.Revoked(st) ||
			p.ClientID != st.GetClientId() || (st.GetDpopJkt() != "" && p.DPoPJKT != st.GetDpopJkt())) {
			t.Fatalf("rotated: match %v, active %v, revoked %v, client %s, key %q", m, family.ActiveAt(st, now), family.Revoked(st), p.ClientID, p.DPoPJKT)
		}
		if m == family.Unknown && d != family.DecideUnknown {
			t.Fatalf("a guess decided %v", d)
		}
		if d == family.DecideReuse && (st.GetDpopJkt() != "" && p.DPoPJKT != st.GetDpopJkt()) {
			t.Fatal("a request without the bound family's key revoked it")
		}
		if family.Revoked(st) && (d == family.DecideRotate || d == family.DecideReuse || d == family.DecideGrace) {
			t.Fatalf("a revoked family decided %v", d)
		}
		if d == family.DecideGrace && (m != family.Previous || !family.InGrace(st, now, grace)) {
			t.Fatalf("grace for match %v", m)
		}
	})
}
