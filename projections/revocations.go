package projections

import (
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/auth-platform/tokenservice/eventlog"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// RevokedFamily is a revoked family whose access tokens may still be live.
type RevokedFamily struct {
	Reason          eventsv1.RevocationReason
	RevokedAt       time.Time
	AccessExpiresAt time.Time
}

// SubjectCutoff is a subject-wide revocation: families issued before Seq
// are revoked, and access tokens issued at or before At are invalid.
type SubjectCutoff struct {
	Seq    uint64
	At     time.Time
	Reason eventsv1.RevocationReason
}

// Revocations is the projection of revocations still relevant to access
// tokens. It is not safe for concurrent use; Set guards it.
type Revocations struct {
	families  map[string]RevokedFamily
	subjects  map[string]SubjectCutoff // by subject
	accessTTL time.Duration
}

// NewRevocations returns an empty projection that forgets a subject
// cut-off accessTTL after it (no access token issued before it is live
// then).
func NewRevocations(accessTTL time.Duration) *Revocations {
	return &Revocations{families: map[string]RevokedFamily{}, subjects: map[string]SubjectCutoff{}, accessTTL: accessTTL}
}

// Apply applies a family or subject event: revocations are recorded.
// Entries are forgotten by Prune.
func (r *Revocations) Apply(rec eventlog.Record, m proto.Message) {
	switch e := m.(type) {
	case *eventsv1.FamilyRevoked:
		st := e.GetState()
		r.families[st.GetFamilyId()] = RevokedFamily{
			Reason:          e.GetReason(),
			RevokedAt:       st.GetRevokedAt().AsTime(),
			AccessExpiresAt: st.GetAccessExpiresAt().AsTime(),
		}
	case *eventsv1.SubjectRevoked:
		r.subjects[e.GetSubject()] = SubjectCutoff{Seq: rec.Seq, At: e.GetRevokedAt().AsTime(), Reason: e.GetReason()}
	}
}

// Prune forgets the entries that no access token live at now can need.
// Replicas prune by event time (Set.Apply), so that replay prunes the
// same way; a subscriber prunes on a timer.
func (r *Revocations) Prune(now time.Time) {
	for fid, f := range r.families {
		if f.AccessExpiresAt.Before(now) {
			delete(r.families, fid)
		}
	}
	for s, c := range r.subjects {
		if c.At.Add(r.accessTTL).Before(now) {
			delete(r.subjects, s)
		}
	}
}

// nextEnd returns when the earliest entry held may be forgotten.
func (r *Revocations) nextEnd() (time.Time, bool) {
	var next time.Time
	for _, f := range r.families {
		if next.IsZero() || f.AccessExpiresAt.Before(next) {
			next = f.AccessExpiresAt
		}
	}
	for _, c := range r.subjects {
		if end := c.At.Add(r.accessTTL); next.IsZero() || end.Before(next) {
			next = end
		}
	}
	return next, !next.IsZero()
}

// Family returns the revocation of family fid, if it is held.
func (r *Revocations) Family(fid string) (RevokedFamily, bool) {
	f, ok := r.families[fid]
	return f, ok
}

// Subject returns the cut-off of subject, if it is held.
func (r *Revocations) Subject(subject string) (SubjectCutoff, bool) {
	c, ok := r.subjects[subject]
	return c, ok
}

// Len returns the number of revoked families and subject cut-offs held.
func (r *Revocations) Len() (families, subjects int) { return len(r.families), len(r.subjects) }
