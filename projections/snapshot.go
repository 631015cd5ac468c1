package projections

import (
	"errors"
	"fmt"
	"maps"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/events"
	checkpointv1 "github.com/auth-platform/tokenservice/proto/token/checkpoint/v1"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// CheckpointVersion is the version of the checkpoint format this build
// writes and reads; a checkpoint of another version is not read.
const CheckpointVersion = 1

// ErrCheckpoint is returned for a checkpoint that cannot be restored: of
// another version, or not consistent with itself.
var ErrCheckpoint = errors.New("projections: checkpoint cannot be restored")

// snapshot returns the state of the set except its keys, and its
// position, read together.
func (s *Set) snapshot() *checkpointv1.Checkpoint { return s.copyState().checkpoint() }

// stateCopy is the state of a set at one position, except its keys.
type stateCopy struct {
	cp        *checkpointv1.Checkpoint // position and counters
	byID      map[string]held
	bySubject map[string][]string
	keyLists  [][]string
	revoked   map[string]RevokedFamily
	cutoffs   map[string]SubjectCutoff
}

// copyState holds the read lock (which makes appliers wait) only to copy
// the maps: their values are never changed in place (Families.forget
// replaces a subject's list rather than editing it, keyLists only grows),
// so shallow copies are the state at this position. BenchmarkSnapshot
// measures it.
func (s *Set) copyState() stateCopy {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return stateCopy{
		cp:   &checkpointv1.Checkpoint{Version: CheckpointVersion, Seq: s.seq, BadRecords: s.bad, SweptAt: s.sweptAt, SinceSweep: s.sinceSweep},
		byID: maps.Clone(s.families.byID), bySubject: maps.Clone(s.families.bySubject), keyLists: s.families.keyLists,
		revoked: maps.Clone(s.revocations.families), cutoffs: maps.Clone(s.revocations.subjects),
	}
}

// checkpoint builds the checkpoint of c, without any lock.
func (c stateCopy) checkpoint() *checkpointv1.Checkpoint {
	cp := c.cp
	for _, ids := range c.keyLists {
		cp.KeySets = append(cp.KeySets, &checkpointv1.KeySet{KeyIds: ids})
	}
	cp.Families = make([]*checkpointv1.Family, 0, len(c.byID))
	for _, sub := range sortedKeys(c.bySubject) {
		for _, id := range c.bySubject[sub] {
			h := c.byID[id]
			cp.Families = append(cp.Families, &checkpointv1.Family{Id: id, Subject: sub, KeySet: h.keys,
				LastSeq: h.last, EndsAt: h.endsAt, Revoked: h.revoked})
		}
	}
	for _, id := range sortedKeys(c.revoked) {
		f := c.revoked[id]
		cp.RevokedFamilies = append(cp.RevokedFamilies, &checkpointv1.RevokedFamily{FamilyId: id, Reason: int32(f.Reason),
			RevokedAtUnixNano: f.RevokedAt.UnixNano(), AccessExpiresAtUnixNano: f.AccessExpiresAt.UnixNano()})
	}
	for _, sub := range sortedKeys(c.cutoffs) {
		k := c.cutoffs[sub]
		cp.SubjectCutoffs = append(cp.SubjectCutoffs, &checkpointv1.SubjectCutoff{Subject: sub, Seq: k.Seq,
			AtUnixNano: k.At.UnixNano(), Reason: int32(k.Reason)})
	}
	return cp
}

// restore replaces the state of an empty set with cp, and applies keys,
// the records of the key aggregate (Subjects.Keys) in stream order, up to
// cp's position (later ones are the runner's to apply, in order). It returns
// ErrCheckpoint, and leaves the set empty, for a checkpoint it cannot
// restore.
func (s *Set) restore(cp *checkpointv1.Checkpoint, keys []eventlog.Record) error {
	if cp.GetVersion() != CheckpointVersion {
		return fmt.Errorf("%w: version %d, this build reads %d", ErrCheckpoint, cp.GetVersion(), CheckpointVersion)
	}
	fresh := NewSet(s.revocations.accessTTL)
	fams := fresh.families
	for _, f := range cp.GetFamilies() {
		if int(f.GetKeySet()) >= len(cp.GetKeySets()) || f.GetId() == "" || f.GetLastSeq() > cp.GetSeq() {
			return fmt.Errorf("%w: family %q", ErrCheckpoint, f.GetId())
		}
		if _, dup := fams.byID[f.GetId()]; dup {
			return fmt.Errorf("%w: family %q twice", ErrCheckpoint, f.GetId())
		}
		fams.put(f.GetId(), held{subject: f.GetSubject(), keys: fams.intern(cp.GetKeySets()[f.GetKeySet()].GetKeyIds()),
			last: f.GetLastSeq(), endsAt: f.GetEndsAt(), revoked: f.GetRevoked()})
	}
	for _, f := range cp.GetRevokedFamilies() {
		fresh.revocations.families[f.GetFamilyId()] = RevokedFamily{Reason: eventsv1.RevocationReason(f.GetReason()),
			RevokedAt: time.Unix(0, f.GetRevokedAtUnixNano()).UTC(), AccessExpiresAt: time.Unix(0, f.GetAccessExpiresAtUnixNano()).UTC()}
	}
	for _, c := range cp.GetSubjectCutoffs() {
		fresh.revocations.subjects[c.GetSubject()] = SubjectCutoff{Seq: c.GetSeq(), At: time.Unix(0, c.GetAtUnixNano()).UTC(),
			Reason: eventsv1.RevocationReason(c.GetReason())}
	}
	for _, rec := range keys {
		if rec.Seq > cp.GetSeq() {
			break
		}
		m, err := events.Decode(rec)
		if err != nil {
			continue // counted in cp's bad records when it was applied
		}
		if err := rec.Follows(fresh.keys.Seq()); err != nil {
			return fmt.Errorf("%w: key event %d: %v", ErrCheckpoint, rec.Seq, err)
		}
		fresh.keys.Apply(rec, m)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seq != 0 {
		return fmt.Errorf("%w: the set is not empty", ErrCheckpoint)
	}
	s.keys, s.revocations, s.families = fresh.keys, fresh.revocations, fresh.families
	s.seq, s.bad, s.sweptAt, s.sinceSweep = cp.GetSeq(), cp.GetBadRecords(), cp.GetSweptAt(), cp.GetSinceSweep()
	return nil
}

// marshalCheckpoint encodes cp deterministically.
func marshalCheckpoint(cp *checkpointv1.Checkpoint) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(cp)
}
