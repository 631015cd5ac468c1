package bench

import (
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/events"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// legacyFamilies is the families projection as every replica held it
// before issue 13 (projections/families.go at c2238a1): every family ever
// issued, with every field of its state. It is kept only as the baseline
// of BenchmarkFamilyMemory.
type legacyFamilies struct {
	byID      map[string]*legacyFamily
	bySubject map[string][]string
}

type legacyFamily struct {
	ID, Subject, ClientID                                              string
	Generation                                                         uint64
	Status                                                             eventsv1.FamilyStatus
	Reason                                                             eventsv1.RevocationReason
	DPoPJKT                                                            string
	CreatedAt, RotatedAt, RevokedAt, RefreshExpiresAt, AccessExpiresAt time.Time
	IssuedSeq, LastSeq                                                 uint64
	KeyIDs                                                             []string
}

func newLegacyFamilies() *legacyFamilies {
	return &legacyFamilies{byID: map[string]*legacyFamily{}, bySubject: map[string][]string{}}
}

func (f *legacyFamilies) apply(rec eventlog.Record, m proto.Message) {
	st := events.FamilyStateOf(m)
	fam := f.byID[st.GetFamilyId()]
	if fam == nil {
		fam = &legacyFamily{ID: st.GetFamilyId(), Subject: st.GetSubject(), ClientID: st.GetClientId(), IssuedSeq: rec.Seq}
		f.byID[fam.ID] = fam
		f.bySubject[fam.Subject] = append(f.bySubject[fam.Subject], fam.ID)
	}
	fam.Generation, fam.Status, fam.Reason, fam.DPoPJKT = st.GetGeneration(), st.GetStatus(), st.GetRevokedReason(), st.GetDpopJkt()
	fam.CreatedAt, fam.RotatedAt = st.GetCreatedAt().AsTime(), st.GetRotatedAt().AsTime()
	fam.RefreshExpiresAt, fam.AccessExpiresAt = st.GetRefreshExpiresAt().AsTime(), st.GetAccessExpiresAt().AsTime()
	fam.LastSeq = rec.Seq
	if !slices.Equal(fam.KeyIDs, st.GetKeyIds()) {
		fam.KeyIDs = slices.Clone(st.GetKeyIds())
	}
}
