package family_test

import (
	"crypto/sha256"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/issuer/family"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

func hash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

var t0 = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

func state() *eventsv1.FamilyState {
	spent := hash("gen1")[:family.SpentPrefixLen]
	return &eventsv1.FamilyState{
		FamilyId: "f", ClientId: "web", Generation: 3, Status: eventsv1.FamilyStatus_FAMILY_STATUS_ACTIVE,
		SecretHash: hash("gen3"), PreviousSecretHash: hash("gen2"), SpentSecretPrefixes: spent,
		RotatedAt: timestamppb.New(t0), RefreshExpiresAt: timestamppb.New(t0.Add(time.Hour)), GraceId: "g",
	}
}

func TestMatchSecret(t *testing.T) {
	st := state()
	for _, tc := range []struct {
		secret string
		want   family.Match
	}{
		{"gen3", family.Current}, {"gen2", family.Previous}, {"gen1", family.Spent}, {"guess", family.Unknown},
	} {
		if got := family.MatchSecret(st, hash(tc.secret)); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.secret, got, tc.want)
		}
	}
}

// TestExpiryInstant: one convention for the instant of expiry, the same
// for refresh, introspection, listing and the audit: a family is active
// strictly before RefreshExpiresAt (RFC 7519 §4.1.4).
func TestExpiryInstant(t *testing.T) {
	st := state()
	exp := st.GetRefreshExpiresAt().AsTime()
	for _, tc := range []struct {
		at     time.Time
		active bool
	}{
		{exp.Add(-time.Nanosecond), true},
		{exp, false},
		{exp.Add(time.Nanosecond), false},
	} {
		if got := family.ActiveAt(st, tc.at); got != tc.active {
			t.Errorf("ActiveAt(exp%+v) = %v", tc.at.Sub(exp), got)
		}
		wantStatus, wantDecision := "active", family.DecideRotate
		if !tc.active {
			wantStatus, wantDecision = "expired", family.DecideExpired
		}
		if got := family.Status(st, tc.at); got != wantStatus {
			t.Errorf("Status(exp%+v) = %s, want %s", tc.at.Sub(exp), got, wantStatus)
		}
		if got := family.Decide(st, family.Presented{SecretHash: hash("gen3"), ClientID: "web"}, tc.at, 0, 0); got != wantDecision {
			t.Errorf("Decide(exp%+v) = %v, want %v", tc.at.Sub(exp), got, wantDecision)
		}
	}
}

func TestDecide(t *testing.T) {
	bound := state()
	bound.DpopJkt = "jkt"
	revoked := state()
	revoked.Status = eventsv1.FamilyStatus_FAMILY_STATUS_REVOKED
	grace := 5 * time.Second
	for _, tc := range []struct {
		name     string
		st       *eventsv1.FamilyState
		p        family.Presented
		now      time.Time
		racedGen uint64
		want     family.Decision
	}{
		{"current", state(), family.Presented{SecretHash: hash("gen3"), ClientID: "web"}, t0, 0, family.DecideRotate},
		{"guess", state(), family.Presented{SecretHash: hash("x"), ClientID: "web"}, t0, 0, family.DecideUnknown},
		{"guess from another client", state(), family.Presented{SecretHash: hash("x"), ClientID: "app"}, t0, 0, family.DecideUnknown},
		{"another client", state(), family.Presented{SecretHash: hash("gen3"), ClientID: "app"}, t0, 0, family.DecideClientMismatch},
		{"revoked", revoked, family.Presented{SecretHash: hash("gen3"), ClientID: "web"}, t0, 0, family.DecideRevoked},
		{"bound without its key", bound, family.Presented{SecretHash: hash("gen2"), ClientID: "web"}, t0.Add(time.Hour), 0, family.DecideDPoPMismatch},
		{"bound with its key", bound, family.Presented{SecretHash: hash("gen3"), ClientID: "web", DPoPJKT: "jkt"}, t0, 0, family.DecideRotate},
		{"previous in grace", state(), family.Presented{SecretHash: hash("gen2"), ClientID: "web"}, t0.Add(grace), 0, family.DecideGrace},
		{"previous after grace", state(), family.Presented{SecretHash: hash("gen2"), ClientID: "web"}, t0.Add(grace + time.Nanosecond), 0, family.DecideReuse},
		{"previous, lost the race", state(), family.Presented{SecretHash: hash("gen2"), ClientID: "web"}, t0.Add(time.Minute), 2, family.DecideRotated},
		{"previous, stale race", state(), family.Presented{SecretHash: hash("gen2"), ClientID: "web"}, t0.Add(time.Minute), 1, family.DecideReuse},
		{"spent", state(), family.Presented{SecretHash: hash("gen1"), ClientID: "web"}, t0, 0, family.DecideReuse},
	} {
		if got := family.Decide(tc.st, tc.p, tc.now, grace, tc.racedGen); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestRevokesSameSecond: a subject cut-off revokes every access token of
// the subject issued at or before it, and iat has one-second precision, so
// a token issued in the cut-off's second, even just after it, is revoked:
// the service and the resource servers' library answer alike (both call
// Revokes).
func TestRevokesSameSecond(t *testing.T) {
	cut := t0.Add(500 * time.Millisecond)
	claims := func(iat time.Time) family.AccessClaims {
		return family.AccessClaims{Subject: "alice", FamilyID: "f", IssuedAt: iat.Truncate(time.Second)}
	}
	for _, tc := range []struct {
		name    string
		c       family.AccessClaims
		famRev  bool
		cutoff  time.Time
		revoked bool
	}{
		{"no revocation", claims(t0), false, time.Time{}, false},
		{"family revoked", claims(t0), true, time.Time{}, true},
		{"issued before the cut-off", claims(t0.Add(-time.Second)), false, cut, true},
		{"issued in the cut-off's second, after it", claims(t0.Add(900 * time.Millisecond)), false, cut, true},
		{"issued the next second", claims(t0.Add(time.Second)), false, cut, false},
		{"no family ID", family.AccessClaims{Subject: "alice", IssuedAt: t0.Add(time.Second)}, true, time.Time{}, false},
	} {
		if got := family.Revokes(tc.c, tc.famRev, tc.cutoff); got != tc.revoked {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.revoked)
		}
	}
}

func TestEndsAt(t *testing.T) {
	st := state()
	base := st.GetRefreshExpiresAt().AsTime()
	st.AccessExpiresAt = timestamppb.New(base.Add(-time.Minute))
	if got := family.EndsAt(st); !got.Equal(base) {
		t.Fatalf("access token ends first: EndsAt = %v, want the refresh expiry %v", got, base)
	}
	st.AccessExpiresAt = timestamppb.New(base.Add(time.Minute))
	if got := family.EndsAt(st); !got.Equal(base.Add(time.Minute)) {
		t.Fatalf("access token outlives the refresh token: EndsAt = %v, want %v", got, base.Add(time.Minute))
	}
}
