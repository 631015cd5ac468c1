package family_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/issuer/family"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

func TestRetainUntil(t *testing.T) {
	t.Parallel()
	const r = 400 * 24 * time.Hour
	active := state() // refresh expiry t0+1h, no access token recorded
	withAccess := func(st *eventsv1.FamilyState, exp time.Time) *eventsv1.FamilyState {
		st = proto.Clone(st).(*eventsv1.FamilyState)
		st.AccessExpiresAt = timestamppb.New(exp)
		return st
	}
	revoked := withAccess(active, t0.Add(15*time.Minute))
	revoked.Status = eventsv1.FamilyStatus_FAMILY_STATUS_REVOKED
	for _, tc := range []struct {
		name      string
		st        *eventsv1.FamilyState
		retention time.Duration
		prev      time.Time
		want      time.Time
	}{
		{"retention 0 keeps forever", active, 0, t0.Add(5 * r), time.Time{}},
		{"active: refresh expiry", active, r, time.Time{}, t0.Add(time.Hour + r)},
		{"access token outliving the refresh token", withAccess(active, t0.Add(2*time.Hour)), r, time.Time{}, t0.Add(2*time.Hour + r)},
		// Not its access expiry alone: the revocation must not leave
		// before the rotation it ends, or the family would look alive.
		{"revoked: no earlier than the state it ends", revoked, r, time.Time{}, t0.Add(time.Hour + r)},
		{"revoked with a later access token", withAccess(revoked, t0.Add(3*time.Hour)), time.Second, time.Time{}, t0.Add(3*time.Hour + time.Second)},
		// A rotation after REFRESH_TOKEN_TTL was lowered: it stays as long
		// as the event before it, or that event's spent token would be
		// current again once it left.
		{"no earlier than the event before", active, time.Second, t0.Add(30 * time.Hour), t0.Add(30 * time.Hour)},
		{"later than the event before", active, r, t0.Add(30 * time.Hour), t0.Add(time.Hour + r)},
	} {
		if got := family.RetainUntil(tc.st, tc.retention, tc.prev); !got.Equal(tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestCutoffRetainUntil(t *testing.T) {
	t.Parallel()
	if got := family.CutoffRetainUntil(t0, time.Minute, time.Hour, 0); !got.IsZero() {
		t.Errorf("retention 0: %v, want forever", got)
	}
	// A family rotated just before the cut-off lives a refresh TTL more:
	// the cut-off must still be there when it is presented.
	if got, want := family.CutoffRetainUntil(t0, time.Minute, time.Hour, time.Second), t0.Add(time.Hour+time.Second); !got.Equal(want) {
		t.Errorf("%v, want %v", got, want)
	}
	if got, want := family.CutoffRetainUntil(t0, 2*time.Hour, time.Hour, time.Second), t0.Add(2*time.Hour+time.Second); !got.Equal(want) {
		t.Errorf("access TTL longer: %v, want %v", got, want)
	}
}
