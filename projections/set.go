package projections

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/events"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	"github.com/auth-platform/tokenservice/signing"
)

// Set is the group of in-memory projections of one replica. It is safe for
// concurrent use: Apply takes a write lock, readers a read lock.
type Set struct {
	mu          sync.RWMutex
	keys        *Keys
	revocations *Revocations
	families    *Families
	seq         uint64
	bad         uint64
	// Pruning (see sweep): the event time of the last sweep (Unix
	// seconds) and the projected events applied since.
	sweptAt    int64
	sinceSweep uint64
}

// NewSet returns empty projections. accessTTL bounds how long revocations
// are held (see NewRevocations).
func NewSet(accessTTL time.Duration) *Set {
	return &Set{keys: NewKeys(), revocations: NewRevocations(accessTTL), families: NewFamilies()}
}

// Apply decodes rec and applies it to every projection it concerns. It
// returns events.ErrBadRecord (and changes nothing but the position) for a record
// that does not decode. A record that is no projection's event (a grace
// record, a DPoP claim) only moves the position, and a record at or before
// the position is ignored.
func (s *Set) Apply(rec eventlog.Record) error {
	var m proto.Message
	var err error
	if Projected(rec) {
		m, err = events.Decode(rec)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if rec.Seq != 0 && rec.Seq <= s.seq {
		return nil // applied already: a reader that delivers a record twice changes nothing
	}
	s.seq = max(s.seq, rec.Seq)
	if !Projected(rec) {
		return nil
	}
	if err != nil {
		s.bad++
		return err
	}
	if err := s.followsLocked(rec, m); err != nil {
		return err
	}
	switch rec.Type {
	case events.TypeFamilyIssued, events.TypeFamilyRotated, events.TypeFamilyRevoked:
		s.families.Apply(rec, m)
		s.revocations.Apply(rec, m)
	case events.TypeSubjectRevoked:
		s.revocations.Apply(rec, m)
	case events.TypeLogTick:
	default:
		s.keys.Apply(rec, m)
	}
	s.sinceSweep++
	if now := rec.Time.Unix(); rec.Type == events.TypeLogTick || (now/60 > s.sweptAt/60 && s.sinceSweep >= s.sweepAfterLocked()) {
		s.sweepLocked(now)
	}
	return nil
}

// Pruning follows event time, never the replica's clock, so that a replay
// (or a checkpoint and the tail after it) forgets exactly what live
// updates forgot. A sweep forgets every family that ended and every
// revocation no access token can need any more; it runs at a tick, or at
// the first event of a new minute once the events applied since the last
// sweep number an eighth of the entries held, so that its cost, a scan of
// what is held, stays a small constant per event even during a replay.
func (s *Set) sweepAfterLocked() uint64 {
	fams, subs := s.revocations.Len()
	return uint64(s.families.Len()+fams+subs) / 8
}

func (s *Set) sweepLocked(now int64) {
	s.families.sweep(now)
	s.revocations.Prune(time.Unix(now, 0))
	s.sweptAt, s.sinceSweep = now, 0
}

// NextEnd returns the earliest time at which something held ends (a
// family, or a revocation no access token needs any more), and false if
// nothing is held. Once it has passed, a tick lets the replicas forget it.
func (s *Set) NextEnd() (time.Time, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var next int64
	for _, h := range s.families.byID {
		if next == 0 || h.endsAt < next {
			next = h.endsAt
		}
	}
	if t, ok := s.revocations.nextEnd(); ok && (next == 0 || t.Unix() < next) {
		next = t.Unix()
	}
	return time.Unix(next, 0), next != 0
}

// followsLocked checks that rec follows the last event of its aggregate
// that the set holds (eventlog.Record.Follows): an authentic event
// published again does not. A subject whose cut-off was pruned is not
// checked (its previous sequence is forgotten); the issuer, which decides,
// checks every record it reads against the log itself.
func (s *Set) followsLocked(rec eventlog.Record, m proto.Message) error {
	var prev uint64
	switch rec.Type {
	case events.TypeFamilyIssued, events.TypeFamilyRotated, events.TypeFamilyRevoked:
		f, ok := s.families.byID[events.FamilyStateOf(m).GetFamilyId()]
		if !ok {
			return nil // a family that ended and was forgotten, or a new one
		}
		prev = f.last
	case events.TypeLogTick:
		return nil // ticks carry no fact
	case events.TypeSubjectRevoked:
		c, ok := s.revocations.subjects[m.(*eventsv1.SubjectRevoked).GetSubject()]
		if !ok {
			return nil
		}
		prev = c.Seq
	default:
		prev = s.keys.Seq()
	}
	return rec.Follows(prev)
}

// Seq returns the sequence of the last record applied.
func (s *Set) Seq() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.seq
}

// Len returns how many entries the set holds: families, revoked families
// and subject cut-offs (keys are few and not counted).
func (s *Set) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	fams, subs := s.revocations.Len()
	return s.families.Len() + fams + subs
}

// BadRecords returns how many records failed to decode.
func (s *Set) BadRecords() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.bad
}

// ActiveKey returns the active signing key.
func (s *Set) ActiveKey() (Key, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.keys.Active()
}

// PendingKeyIntent returns the oldest key creation not finished yet.
func (s *Set) PendingKeyIntent() (Intent, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.keys.PendingIntent()
}

// PendingKeyIntents returns every key creation not finished yet, oldest
// first.
func (s *Set) PendingKeyIntents() []Intent {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.keys.PendingIntents()
}

// PendingCompromises returns every declared key compromise not resolved
// yet, oldest first.
func (s *Set) PendingCompromises() []Compromise {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.keys.PendingCompromises()
}

// Key returns key id.
func (s *Set) Key(id string) (Key, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.keys.Get(id)
}

// Keys returns every key, oldest first, and the sequence of the last key
// event.
func (s *Set) Keys() ([]Key, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.keys.All(), s.keys.Seq()
}

// JWKS returns the published keys, newest first.
func (s *Set) JWKS() []signing.JWK {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.keys.JWKS()
}

// RevokedFamily returns the revocation of family fid, if held.
func (s *Set) RevokedFamily(fid string) (RevokedFamily, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.revocations.Family(fid)
}

// IsFamilyRevoked reports whether family fid's revocation is held
// (issuer.RevocationView).
func (s *Set) IsFamilyRevoked(fid string) bool {
	_, ok := s.RevokedFamily(fid)
	return ok
}

// CutoffOf returns the time of subject's cut-off if held, else the zero
// time (issuer.RevocationView).
func (s *Set) CutoffOf(subject string) time.Time {
	c, _ := s.SubjectCutoff(subject)
	return c.At
}

// SubjectCutoff returns the cut-off of subject, if held.
func (s *Set) SubjectCutoff(subject string) (SubjectCutoff, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.revocations.Subject(subject)
}

// Family returns family id.
func (s *Set) Family(id string) (Family, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.families.Get(id)
}

// FamiliesOf returns the families of subject, oldest first.
func (s *Set) FamiliesOf(subject string) []Family {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.families.OfSubject(subject)
}

// Snapshot returns the position and the digest of the state at that
// position, read together.
func (s *Set) Snapshot() (seq uint64, digest string) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.seq, s.digestLocked()
}

// ActiveFamiliesOf returns the IDs of the families of subject that are not
// revoked, oldest first (issuer.FamilyIndex).
func (s *Set) ActiveFamiliesOf(subject string) []string { return activeIDs(s.FamiliesOf(subject)) }

// ActiveFamiliesSignedBy returns the IDs of the families, not revoked,
// whose access tokens key kid signed (issuer.FamilyIndex).
func (s *Set) ActiveFamiliesSignedBy(kid string) []string { return activeIDs(s.FamiliesSignedBy(kid)) }

func activeIDs(fams []Family) []string {
	ids := make([]string, 0, len(fams))
	for _, f := range fams {
		if !f.Revoked {
			ids = append(ids, f.ID)
		}
	}
	return ids
}

// FamiliesSignedBy returns the families whose access tokens key kid signed.
func (s *Set) FamiliesSignedBy(kid string) []Family {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.families.SignedBy(kid)
}

// Digest returns a hash of the whole state (not of the position), equal
// for two sets that hold the same state. It is how replay is compared with
// live updates and one replica with another.
func (s *Set) Digest() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.digestLocked()
}

func (s *Set) digestLocked() string {
	h := sha256.New()
	for _, k := range s.keys.All() {
		fmt.Fprintf(h, "key|%s|%s|%s|%s|%x|%s|%d|%d|%d|%d|%d|%d|%s|%v|%d\n", k.ID, k.Algorithm, k.Backend, k.JWK.Thumbprint(), k.Sealed, k.Ref,
			k.Status, k.GeneratedAt.UnixNano(), k.PublishedAt.UnixNano(), k.ActivatedAt.UnixNano(), k.RetiredAt.UnixNano(), k.RetainUntil.UnixNano(),
			k.IntentID, k.Fallback, k.FallbackEngaged)
		if k.MaterialDeleted {
			fmt.Fprintf(h, "deleted|%s\n", k.ID)
		}
		if k.Provisioned {
			fmt.Fprintf(h, "provisioned|%s\n", k.ID)
		}
	}
	fmt.Fprintf(h, "active|%s|%d\n", s.keys.active, s.keys.seq)
	for _, id := range sortedKeys(s.keys.intents) {
		in := s.keys.intents[id]
		fmt.Fprintf(h, "intent|%s|%s|%s|%d|%s\n", in.ID, in.Algorithm, in.Backend, in.At.UnixNano(), in.KeyID)
	}
	for _, id := range sortedKeys(s.keys.compromises) {
		c := s.keys.compromises[id]
		fmt.Fprintf(h, "compromise|%s|%d|%d|%v|%v|%s\n", c.KeyID, c.Seq, c.At.UnixNano(), c.RevokeFamilies, c.Resolved, c.NewKeyID)
	}
	for _, id := range sortedKeys(s.revocations.families) {
		f := s.revocations.families[id]
		fmt.Fprintf(h, "revf|%s|%d|%d|%d\n", id, f.Reason, f.RevokedAt.UnixNano(), f.AccessExpiresAt.UnixNano())
	}
	for _, sub := range sortedKeys(s.revocations.subjects) {
		c := s.revocations.subjects[sub]
		writeString(h, "revs|"+sub)
		fmt.Fprintf(h, "|%d|%d|%d\n", c.Seq, c.At.UnixNano(), c.Reason)
	}
	for _, id := range sortedKeys(s.families.byID) {
		f := s.families.byID[id]
		writeString(h, "fam|"+id+"|"+f.subject)
		fmt.Fprintf(h, "|%q|%d|%d|%v\n", s.families.keyLists[f.keys], f.last, f.endsAt, f.revoked)
	}
	for _, sub := range sortedKeys(s.families.bySubject) {
		writeString(h, "sub|"+sub)
		fmt.Fprintf(h, "|%q\n", s.families.bySubject[sub])
	}
	fmt.Fprintf(h, "sweep|%d|%d\n", s.sweptAt, s.sinceSweep)
	return hex.EncodeToString(h.Sum(nil))
}

// writeString writes s length-prefixed, so values holding separators
// cannot make two states collide.
func writeString(h hash.Hash, s string) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(s)))
	h.Write(n[:])
	h.Write([]byte(s))
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
