package projections

import (
	"github.com/auth-platform/tokenservice/eventlog/events"
	"slices"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/auth-platform/tokenservice/eventlog"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// Family is the read model of one token family (one session).
type Family struct {
	ID               string
	Subject          string
	ClientID         string
	Generation       uint64
	Status           eventsv1.FamilyStatus
	Reason           eventsv1.RevocationReason
	DPoPJKT          string
	CreatedAt        time.Time
	RotatedAt        time.Time
	RevokedAt        time.Time
	RefreshExpiresAt time.Time
	AccessExpiresAt  time.Time
	IssuedSeq        uint64
	LastSeq          uint64
	// KeyIDs are the keys that signed the family's access tokens.
	KeyIDs []string
}

// Families is the projection of families by subject. It is not safe for
// concurrent use; Set guards it.
type Families struct {
	byID      map[string]*Family
	bySubject map[string][]string // family IDs by subject, in stream order
}

// NewFamilies returns an empty Families projection.
func NewFamilies() *Families {
	return &Families{byID: map[string]*Family{}, bySubject: map[string][]string{}}
}

// Apply applies a family event.
func (f *Families) Apply(rec eventlog.Record, m proto.Message) {
	st := events.FamilyStateOf(m)
	if st == nil || st.GetFamilyId() == "" {
		return
	}
	fam := f.byID[st.GetFamilyId()]
	if fam == nil {
		fam = &Family{ID: st.GetFamilyId(), Subject: st.GetSubject(), ClientID: st.GetClientId(), IssuedSeq: rec.Seq}
		f.byID[fam.ID] = fam
		// A family is created once, by its first event: a slice per
		// subject is a fraction of the memory of a set per subject.
		f.bySubject[fam.Subject] = append(f.bySubject[fam.Subject], fam.ID)
	}
	fam.Generation = st.GetGeneration()
	fam.Status = st.GetStatus()
	fam.Reason = st.GetRevokedReason()
	fam.DPoPJKT = st.GetDpopJkt()
	fam.CreatedAt = st.GetCreatedAt().AsTime()
	fam.RotatedAt = st.GetRotatedAt().AsTime()
	if st.GetRevokedAt() != nil {
		fam.RevokedAt = st.GetRevokedAt().AsTime()
	}
	fam.RefreshExpiresAt = st.GetRefreshExpiresAt().AsTime()
	fam.AccessExpiresAt = st.GetAccessExpiresAt().AsTime()
	if st.GetIssuedSeq() != 0 {
		fam.IssuedSeq = st.GetIssuedSeq()
	}
	fam.LastSeq = rec.Seq
	if !slices.Equal(fam.KeyIDs, st.GetKeyIds()) { // they change once per signing key
		fam.KeyIDs = slices.Clone(st.GetKeyIds()) // copies handed out share no array
	}
}

// SignedBy returns the families that hold access tokens signed by key
// kid, oldest first. It scans every family: it serves rare operations
// (a key compromise).
func (f *Families) SignedBy(kid string) []Family {
	var out []Family
	for _, fam := range f.byID {
		for _, k := range fam.KeyIDs {
			if k == kid {
				out = append(out, *fam)
				break
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IssuedSeq < out[j].IssuedSeq })
	return out
}

// Get returns family id.
func (f *Families) Get(id string) (Family, bool) {
	fam := f.byID[id]
	if fam == nil {
		return Family{}, false
	}
	return *fam, true
}

// OfSubject returns the families of subject, oldest first.
func (f *Families) OfSubject(subject string) []Family {
	ids := f.bySubject[subject]
	out := make([]Family, 0, len(ids))
	for _, id := range ids {
		out = append(out, *f.byID[id])
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IssuedSeq < out[j].IssuedSeq })
	return out
}

// Len returns the number of families.
func (f *Families) Len() int { return len(f.byID) }
