package projections

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"pgregory.net/rapid"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/events"
	checkpointv1 "github.com/auth-platform/tokenservice/proto/token/checkpoint/v1"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

const (
	propAccessTTL  = 5 * time.Minute
	propRefreshTTL = 30 * time.Minute
)

// workload draws a log: families issued, rotated (by keys that change)
// and revoked, subject cut-offs, key events, ticks, records that are no
// projection's and records that do not decode, at event times that jump
// across access and refresh expiries. Each record names the previous
// event of its aggregate, as the log's authenticator does.
func workload(t *rapid.T) []eventlog.Record {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0
	var recs []eventlog.Record
	last := map[string]uint64{} // aggregate → sequence of its last event
	states := map[string]*eventsv1.FamilyState{}
	var fids []string
	keyID := "k0"
	add := func(agg, typ string, m proto.Message) {
		data, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		seq := uint64(len(recs) + 1)
		subject := "token." + agg
		recs = append(recs, eventlog.Record{Seq: seq, Time: now, Type: typ, Subject: subject, Data: data, Prev: last[agg]})
		last[agg] = seq
	}
	n := rapid.IntRange(1, 120).Draw(t, "events")
	for i := range n {
		switch rapid.IntRange(0, 9).Draw(t, "jump") {
		case 0:
			now = now.Add(time.Duration(rapid.IntRange(0, 7200).Draw(t, "hours")) * time.Second)
		default:
			now = now.Add(time.Duration(rapid.IntRange(0, 90).Draw(t, "seconds")) * time.Second)
		}
		switch rapid.IntRange(0, 10).Draw(t, "action") {
		case 0, 1, 2:
			fid := fmt.Sprintf("f%d", i)
			st := &eventsv1.FamilyState{FamilyId: fid, Subject: fmt.Sprintf("user-%d", rapid.IntRange(0, 3).Draw(t, "subject")),
				Generation: 1, Status: eventsv1.FamilyStatus_FAMILY_STATUS_ACTIVE, KeyIds: []string{keyID},
				CreatedAt: timestamppb.New(now), RefreshExpiresAt: timestamppb.New(now.Add(propRefreshTTL)),
				AccessExpiresAt: timestamppb.New(now.Add(propAccessTTL)), IssuedSeq: uint64(len(recs) + 1)}
			states[fid] = st
			fids = append(fids, fid)
			add("family."+fid, events.TypeFamilyIssued, &eventsv1.FamilyIssued{State: st})
		case 3, 4:
			if len(fids) == 0 {
				continue
			}
			fid := rapid.SampledFrom(fids).Draw(t, "rotate")
			st := proto.Clone(states[fid]).(*eventsv1.FamilyState)
			st.Generation++
			st.RefreshExpiresAt = timestamppb.New(now.Add(propRefreshTTL))
			st.AccessExpiresAt = timestamppb.New(now.Add(propAccessTTL))
			if !strings.Contains(strings.Join(st.KeyIds, ","), keyID) {
				st.KeyIds = append(st.KeyIds, keyID)
			}
			states[fid] = st
			add("family."+fid, events.TypeFamilyRotated, &eventsv1.FamilyRotated{State: st, KeyId: keyID})
		case 5:
			if len(fids) == 0 {
				continue
			}
			fid := rapid.SampledFrom(fids).Draw(t, "revoke")
			st := proto.Clone(states[fid]).(*eventsv1.FamilyState)
			st.Status = eventsv1.FamilyStatus_FAMILY_STATUS_REVOKED
			st.RevokedAt = timestamppb.New(now)
			states[fid] = st
			add("family."+fid, events.TypeFamilyRevoked, &eventsv1.FamilyRevoked{State: st, Reason: eventsv1.RevocationReason_REVOCATION_REASON_ADMIN})
		case 6:
			sub := fmt.Sprintf("user-%d", rapid.IntRange(0, 3).Draw(t, "cut"))
			add("subject."+sub, events.TypeSubjectRevoked, &eventsv1.SubjectRevoked{Subject: sub, RevokedAt: timestamppb.New(now),
				Reason: eventsv1.RevocationReason_REVOCATION_REASON_SUBJECT})
		case 7:
			keyID = fmt.Sprintf("k%d", i)
			add("key", events.TypeKeyGenerated, &eventsv1.KeyGenerated{KeyId: keyID, Algorithm: "ES256", Backend: "local", At: timestamppb.New(now)})
			add("key", events.TypeKeyActivated, &eventsv1.KeyActivated{KeyId: keyID, At: timestamppb.New(now)})
		case 8:
			add("log.tick", events.TypeLogTick, &eventsv1.LogTick{At: timestamppb.New(now)})
		case 9:
			add("dpop.x", events.TypeDPoPProofUsed, &eventsv1.DPoPProofUsed{Jkt: "x"})
		case 10:
			seq := uint64(len(recs) + 1)
			recs = append(recs, eventlog.Record{Seq: seq, Time: now, Type: events.TypeFamilyIssued, Subject: "token.family.bad", Data: []byte{0xff}})
		}
	}
	return recs
}

func applyAll(t *rapid.T, s *Set, recs []eventlog.Record) {
	for _, rec := range recs {
		if err := s.Apply(rec); err != nil && !strings.Contains(err.Error(), "bad record") {
			t.Fatalf("apply %d %s: %v", rec.Seq, rec.Type, err)
		}
	}
}

// TestCheckpointPlusTailEqualsReplay: a set restored from a checkpoint
// taken at any position, fed the rest of the log, holds exactly what a
// set fed the whole log holds (pruning included), and so does the
// checkpoint itself against the set it was taken from.
func TestCheckpointPlusTailEqualsReplay(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		recs := workload(t)
		full := NewSet(propAccessTTL)
		applyAll(t, full, recs)

		cut := rapid.IntRange(0, len(recs)).Draw(t, "checkpoint after")
		part := NewSet(propAccessTTL)
		applyAll(t, part, recs[:cut])
		data, err := marshalCheckpoint(part.snapshot())
		if err != nil {
			t.Fatal(err)
		}
		cp := &checkpointv1.Checkpoint{}
		if err := proto.Unmarshal(data, cp); err != nil {
			t.Fatal(err)
		}
		var keys []eventlog.Record
		for _, rec := range recs {
			if strings.HasPrefix(rec.Subject, "token.key") {
				keys = append(keys, rec)
			}
		}
		restored := NewSet(propAccessTTL)
		if err := restored.restore(cp, keys); err != nil {
			t.Fatal(err)
		}
		if restored.Digest() != part.Digest() || restored.Seq() != part.Seq() {
			t.Fatalf("restored at %d differs from the set checkpointed at %d", restored.Seq(), part.Seq())
		}
		applyAll(t, restored, recs[cut:])
		if restored.Digest() != full.Digest() || restored.Seq() != full.Seq() || restored.BadRecords() != full.BadRecords() {
			t.Fatalf("checkpoint at %d plus tail differs from a full replay (seq %d/%d, bad %d/%d)",
				cut, restored.Seq(), full.Seq(), restored.BadRecords(), full.BadRecords())
		}
	})
}

// TestForgetsWhatEnded: a family is held until nothing can use it (refresh
// expiry, or its last access token's expiry if later), a revoked one too,
// and a tick lets a quiet log forget; the chain check of a forgotten
// family's later event is skipped, not failed.
func TestForgetsWhatEnded(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := NewSet(propAccessTTL)
	seq := uint64(0)
	apply := func(at time.Time, typ string, m proto.Message, prev uint64) uint64 {
		t.Helper()
		data, _ := proto.Marshal(m)
		seq++
		if err := s.Apply(eventlog.Record{Seq: seq, Time: at, Type: typ, Data: data, Prev: prev}); err != nil {
			t.Fatal(err)
		}
		return seq
	}
	st := func(fid string, refresh, access time.Duration, revoked bool) *eventsv1.FamilyState {
		f := &eventsv1.FamilyState{FamilyId: fid, Subject: "alice", KeyIds: []string{"k1"},
			RefreshExpiresAt: timestamppb.New(t0.Add(refresh)), AccessExpiresAt: timestamppb.New(t0.Add(access))}
		if revoked {
			f.Status = eventsv1.FamilyStatus_FAMILY_STATUS_REVOKED
		}
		return f
	}
	apply(t0, events.TypeFamilyIssued, &eventsv1.FamilyIssued{State: st("active", 30*time.Minute, 5*time.Minute, false)}, 0)
	late := apply(t0, events.TypeFamilyIssued, &eventsv1.FamilyIssued{State: st("late-access", 30*time.Minute, 32*time.Minute, false)}, 0)
	apply(t0, events.TypeFamilyRevoked, &eventsv1.FamilyRevoked{State: st("revoked", 30*time.Minute, 5*time.Minute, true)}, 0)
	tick := func(at time.Time) { apply(at, events.TypeLogTick, &eventsv1.LogTick{At: timestamppb.New(at)}, 0) }

	tick(t0.Add(29 * time.Minute))
	if s.families.Len() != 3 {
		t.Fatalf("%d families held before any ended, want 3", s.families.Len())
	}
	if _, ok := s.RevokedFamily("revoked"); ok {
		t.Fatal("a revocation is held after its family's last access token expired")
	}
	if next, ok := s.NextEnd(); !ok || !next.Equal(t0.Add(30*time.Minute)) {
		t.Fatalf("NextEnd = %v, %v; want the first refresh expiry", next, ok)
	}
	tick(t0.Add(31 * time.Minute))
	if _, ok := s.Family("active"); ok {
		t.Fatal("a family whose refresh token expired is held")
	}
	if _, ok := s.Family("revoked"); ok {
		t.Fatal("a revoked family is held after its refresh expiry and its access tokens'")
	}
	if _, ok := s.Family("late-access"); !ok {
		t.Fatal("a family whose last access token is still valid was forgotten")
	}
	tick(t0.Add(33 * time.Minute))
	if s.families.Len() != 0 || len(s.families.bySubject) != 0 || len(s.revocations.families) != 0 {
		t.Fatalf("held after everything ended: %d families, %d subjects, %d revocations",
			s.families.Len(), len(s.families.bySubject), len(s.revocations.families))
	}
	// A later event of a forgotten family (an admin revoking it) is applied.
	apply(t0.Add(34*time.Minute), events.TypeFamilyRevoked, &eventsv1.FamilyRevoked{State: st("late-access", 30*time.Minute, 32*time.Minute, true)}, late)
}

// BenchmarkSnapshot measures how long a checkpoint holds the set's read
// lock (appliers wait meanwhile; readers do not): the snapshot of a set
// of 1,000,000 families, and its encoding, which runs after the lock is
// released.
//
//	lock_ms       the copy under the read lock
//	build_ms      building the checkpoint, outside the lock
//	marshal_ms    encoding, outside the lock
//	sweep_ms      a sweep that forgets nothing (under the write lock)
func BenchmarkSnapshot(b *testing.B) {
	s := NewSet(propAccessTTL)
	at := time.Now()
	for i := range 1_000_000 {
		st := &eventsv1.FamilyState{FamilyId: fmt.Sprintf("%022d", i), Subject: fmt.Sprintf("user-%d@example.com", i%50_000),
			KeyIds: []string{"key-1"}, RefreshExpiresAt: timestamppb.New(at.Add(time.Hour)), AccessExpiresAt: timestamppb.New(at.Add(time.Minute))}
		data, _ := proto.Marshal(&eventsv1.FamilyIssued{State: st})
		if err := s.Apply(eventlog.Record{Seq: uint64(i + 1), Time: at, Type: events.TypeFamilyIssued, Data: data}); err != nil {
			b.Fatal(err)
		}
	}
	var lock, build, enc, sweep time.Duration
	for range b.N {
		t0 := time.Now()
		c := s.copyState()
		lock += time.Since(t0)
		t0 = time.Now()
		cp := c.checkpoint()
		build += time.Since(t0)
		t0 = time.Now()
		if _, err := marshalCheckpoint(cp); err != nil {
			b.Fatal(err)
		}
		enc += time.Since(t0)
		t0 = time.Now()
		s.mu.Lock()
		s.sweepLocked(at.Unix())
		s.mu.Unlock()
		sweep += time.Since(t0)
	}
	b.ReportMetric(float64(lock.Milliseconds())/float64(b.N), "lock_ms")
	b.ReportMetric(float64(build.Milliseconds())/float64(b.N), "build_ms")
	b.ReportMetric(float64(enc.Milliseconds())/float64(b.N), "marshal_ms")
	b.ReportMetric(float64(sweep.Milliseconds())/float64(b.N), "sweep_ms")
}
