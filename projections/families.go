package projections

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/events"
	"github.com/auth-platform/tokenservice/issuer/family"
)

// Family is what a replica holds of one token family while it can be
// used: what the family index (a subject's families, the families a key
// signed for) and the chain check read. The rest of a family's state is in
// the log, which the issuer decides from, and in the families KV read
// model, which lists sessions.
type Family struct {
	ID      string
	Subject string
	// KeyIDs are the keys that signed the family's access tokens.
	KeyIDs    []string
	IssuedSeq uint64
	// LastSeq is the sequence of the family's last event.
	LastSeq uint64
	// EndsAt is family.EndsAt rounded up to the second: from then on
	// nothing can use the family, and the replica forgets it.
	EndsAt  time.Time
	Revoked bool
}

// held is the in-memory form of a Family, kept small: the map's key is
// the ID, the subject's bytes are shared with the bySubject key, and
// families signed by the same keys share one interned slice.
type held struct {
	subject string
	keys    []string
	issued  uint64
	last    uint64
	endsAt  int64 // Unix seconds
	revoked bool
}

// Families is the projection of the families that can still be used, by
// ID and by subject. It is not safe for concurrent use; Set guards it.
type Families struct {
	byID      map[string]held
	bySubject map[string][]string // family IDs by subject, in stream order
	keySets   map[string][]string // interned key lists, by their joined IDs
}

// NewFamilies returns an empty Families projection.
func NewFamilies() *Families {
	return &Families{byID: map[string]held{}, bySubject: map[string][]string{}, keySets: map[string][]string{}}
}

// Apply applies a family event.
func (f *Families) Apply(rec eventlog.Record, m proto.Message) {
	st := events.FamilyStateOf(m)
	if st == nil || st.GetFamilyId() == "" {
		return
	}
	end := family.EndsAt(st)
	f.put(st.GetFamilyId(), held{
		subject: st.GetSubject(),
		keys:    st.GetKeyIds(),
		issued:  orSeq(st.GetIssuedSeq(), rec.Seq),
		last:    rec.Seq,
		endsAt:  ceilUnix(end),
		revoked: family.Revoked(st),
	})
}

// orSeq returns a if it is set, else b.
func orSeq(a, b uint64) uint64 {
	if a != 0 {
		return a
	}
	return b
}

// ceilUnix is t in Unix seconds, rounded up.
func ceilUnix(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return s
}

// put stores h as family id. A family's subject and first sequence are set
// by its first event held; its keys are interned.
func (f *Families) put(id string, h held) {
	old, ok := f.byID[id]
	if ok {
		h.subject, h.issued = old.subject, old.issued
		if slices.Equal(old.keys, h.keys) {
			h.keys = old.keys
		} else {
			h.keys = f.intern(h.keys)
		}
	} else {
		h.subject = f.subjectKey(h.subject)
		f.bySubject[h.subject] = append(f.bySubject[h.subject], id)
		h.keys = f.intern(h.keys)
	}
	f.byID[id] = h
}

// subjectKey returns subject as stored in bySubject when it is there, so
// that every family of a subject shares one copy of its bytes.
func (f *Families) subjectKey(subject string) string {
	ids := f.bySubject[subject]
	if len(ids) > 0 {
		if h, ok := f.byID[ids[0]]; ok {
			return h.subject
		}
	}
	return strings.Clone(subject)
}

// intern returns the one shared copy of the key list ids.
func (f *Families) intern(ids []string) []string {
	if len(ids) == 0 {
		return nil
	}
	k := strings.Join(ids, "\x00")
	if s, ok := f.keySets[k]; ok {
		return s
	}
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strings.Clone(id)
	}
	f.keySets[k] = s
	return s
}

// sweep forgets the families that ended before now (Unix seconds).
func (f *Families) sweep(now int64) {
	for id, h := range f.byID {
		if h.endsAt < now {
			f.forget(id, h.subject)
		}
	}
}

func (f *Families) forget(id, subject string) {
	delete(f.byID, id)
	ids := f.bySubject[subject]
	if i := slices.Index(ids, id); i >= 0 {
		ids = slices.Delete(ids, i, i+1)
	}
	if len(ids) == 0 {
		delete(f.bySubject, subject)
	} else {
		f.bySubject[subject] = ids
	}
}

func (f *Families) get(id string) (Family, bool) {
	h, ok := f.byID[id]
	if !ok {
		return Family{}, false
	}
	return Family{ID: id, Subject: h.subject, KeyIDs: slices.Clone(h.keys), IssuedSeq: h.issued, LastSeq: h.last,
		EndsAt: time.Unix(h.endsAt, 0), Revoked: h.revoked}, true
}

// SignedBy returns the families that hold access tokens signed by key
// kid, oldest first. It scans every family: it serves rare operations
// (a key compromise).
func (f *Families) SignedBy(kid string) []Family {
	var out []Family
	for id, h := range f.byID {
		if slices.Contains(h.keys, kid) {
			fam, _ := f.get(id)
			out = append(out, fam)
		}
	}
	slices.SortFunc(out, func(a, b Family) int { return cmp.Compare(a.IssuedSeq, b.IssuedSeq) })
	return out
}

// Get returns family id.
func (f *Families) Get(id string) (Family, bool) { return f.get(id) }

// OfSubject returns the families of subject, oldest first.
func (f *Families) OfSubject(subject string) []Family {
	ids := f.bySubject[subject]
	out := make([]Family, 0, len(ids))
	for _, id := range ids {
		fam, _ := f.get(id)
		out = append(out, fam)
	}
	slices.SortFunc(out, func(a, b Family) int { return cmp.Compare(a.IssuedSeq, b.IssuedSeq) })
	return out
}

// Len returns the number of families held.
func (f *Families) Len() int { return len(f.byID) }
