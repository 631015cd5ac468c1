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
	KeyIDs []string
	// LastSeq is the sequence of the family's last event.
	LastSeq uint64
	// EndsAt is family.EndsAt rounded up to the second: from then on
	// nothing can use the family, and the replica forgets it.
	EndsAt  time.Time
	Revoked bool
}

// held is the in-memory form of a Family, kept small (40 bytes, and the
// map's key is the ID): the subject's bytes are shared with the bySubject
// key, and families signed by the same keys name one interned list.
type held struct {
	subject string
	last    uint64
	endsAt  int64  // Unix seconds
	keys    uint32 // index in keyLists
	revoked bool
}

// Families is the projection of the families that can still be used, by
// ID and by subject. It is not safe for concurrent use; Set guards it.
type Families struct {
	byID      map[string]held
	bySubject map[string][]string // family IDs by subject, in stream order
	keyLists  [][]string          // interned key lists; 0 is none
	keySets   map[string]uint32   // index in keyLists, by the joined IDs
}

// NewFamilies returns an empty Families projection.
func NewFamilies() *Families {
	return &Families{byID: map[string]held{}, bySubject: map[string][]string{}, keyLists: [][]string{nil}, keySets: map[string]uint32{"": 0}}
}

// Apply applies a family event.
func (f *Families) Apply(rec eventlog.Record, m proto.Message) {
	st := events.FamilyStateOf(m)
	if st == nil || st.GetFamilyId() == "" {
		return
	}
	f.put(st.GetFamilyId(), held{
		subject: st.GetSubject(),
		keys:    f.intern(st.GetKeyIds()),
		last:    rec.Seq,
		endsAt:  ceilUnix(family.EndsAt(st)),
		revoked: family.Revoked(st),
	})
}

// ceilUnix is t in Unix seconds, rounded up.
func ceilUnix(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return s
}

// put stores h as family id; a family's subject is set by its first
// event held.
func (f *Families) put(id string, h held) {
	if old, ok := f.byID[id]; ok {
		h.subject = old.subject
	} else {
		h.subject = f.subjectKey(h.subject)
		f.bySubject[h.subject] = append(f.bySubject[h.subject], id)
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

// intern returns the index of the key list ids in keyLists, adding it
// if it is new. Lists are few (one per combination of signing keys) and
// never removed.
func (f *Families) intern(ids []string) uint32 {
	k := strings.Join(ids, "\x00")
	if ix, ok := f.keySets[k]; ok {
		return ix
	}
	ix := uint32(len(f.keyLists))
	f.keyLists = append(f.keyLists, slices.Clone(ids))
	f.keySets[k] = ix
	return ix
}

// sweep forgets the families that ended before now (Unix seconds).
func (f *Families) sweep(now int64) {
	for id, h := range f.byID {
		if h.endsAt < now {
			f.forget(id, h.subject)
		}
	}
}

// forget removes family id. The subject's list is replaced, never edited
// in place: a snapshot may share it (Set.snapshot).
func (f *Families) forget(id, subject string) {
	delete(f.byID, id)
	ids := f.bySubject[subject]
	if i := slices.Index(ids, id); i >= 0 {
		ids = slices.Concat(ids[:i], ids[i+1:])
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
	return Family{ID: id, Subject: h.subject, KeyIDs: slices.Clone(f.keyLists[h.keys]), LastSeq: h.last,
		EndsAt: time.Unix(h.endsAt, 0), Revoked: h.revoked}, true
}

// SignedBy returns the families that hold access tokens signed by key
// kid, in the order of their last events. It scans every family: it
// serves rare operations (a key compromise).
func (f *Families) SignedBy(kid string) []Family {
	var out []Family
	for id, h := range f.byID {
		if slices.Contains(f.keyLists[h.keys], kid) {
			fam, _ := f.get(id)
			out = append(out, fam)
		}
	}
	slices.SortFunc(out, func(a, b Family) int { return cmp.Compare(a.LastSeq, b.LastSeq) })
	return out
}

// Get returns family id.
func (f *Families) Get(id string) (Family, bool) { return f.get(id) }

// OfSubject returns the families of subject, oldest first.
func (f *Families) OfSubject(subject string) []Family {
	ids := f.bySubject[subject]
	out := make([]Family, 0, len(ids))
	for _, id := range ids { // in the order they were issued
		fam, _ := f.get(id)
		out = append(out, fam)
	}
	return out
}

// Len returns the number of families held.
func (f *Families) Len() int { return len(f.byID) }
