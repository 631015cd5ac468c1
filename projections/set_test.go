package projections_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/events"
	"github.com/auth-platform/tokenservice/projections"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

func record(t *testing.T, seq uint64, at time.Time, typ string, m proto.Message) eventlog.Record {
	t.Helper()
	data, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return eventlog.Record{Seq: seq, Time: at, Type: typ, Data: data}
}

// TestBadRecordsAreSkipped: garbage from the log is counted and skipped;
// it never changes state, and the position still advances.
func TestBadRecordsAreSkipped(t *testing.T) {
	s := projections.NewSet(time.Minute)
	before := s.Digest()
	for i, rec := range []eventlog.Record{
		{Seq: 1, Type: "family.exploded", Data: []byte("x")},
		{Seq: 2, Type: events.TypeFamilyIssued, Data: []byte{0xff, 0xff, 0xff}},
		{Seq: 3, Type: "", Data: nil},
	} {
		if err := s.Apply(rec); !errors.Is(err, events.ErrBadRecord) {
			t.Fatalf("record %d: got %v, want events.ErrBadRecord", i, err)
		}
	}
	if s.BadRecords() != 3 || s.Seq() != 3 || s.Digest() != before {
		t.Fatalf("bad %d seq %d, state changed %v", s.BadRecords(), s.Seq(), s.Digest() != before)
	}
}

// TestRevocationsPruneByEventTime: a revoked family is forgotten once its
// access tokens expired, judged by the time of the events applied (never
// the wall clock), so live and replayed sets prune alike.
func TestRevocationsPruneByEventTime(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := projections.NewSet(15 * time.Minute)
	st := &eventsv1.FamilyState{FamilyId: "f1", Subject: "alice", Status: eventsv1.FamilyStatus_FAMILY_STATUS_REVOKED,
		AccessExpiresAt: timestamppb.New(t0.Add(15 * time.Minute)), RevokedAt: timestamppb.New(t0)}
	if err := s.Apply(record(t, 1, t0, events.TypeFamilyRevoked, &eventsv1.FamilyRevoked{State: st})); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.RevokedFamily("f1"); !ok {
		t.Fatal("revocation not held")
	}
	// Many later events, all before expiry: still held.
	seq := uint64(2)
	apply := func(at time.Time, n int) {
		for range n {
			other := &eventsv1.FamilyState{FamilyId: fmt.Sprintf("g%d", seq), Subject: "bob", Status: eventsv1.FamilyStatus_FAMILY_STATUS_ACTIVE}
			if err := s.Apply(record(t, seq, at, events.TypeFamilyIssued, &eventsv1.FamilyIssued{State: other})); err != nil {
				t.Fatal(err)
			}
			seq++
		}
	}
	apply(t0.Add(10*time.Minute), 5000)
	if _, ok := s.RevokedFamily("f1"); !ok {
		t.Fatal("revocation dropped while its access tokens live")
	}
	apply(t0.Add(20*time.Minute), 5000)
	if _, ok := s.RevokedFamily("f1"); ok {
		t.Fatal("revocation kept after every access token expired")
	}
}

// TestReplayedEventRefused: an authentic event that does not follow the
// last event of its aggregate the set holds (published again) is refused
// with ErrForged and changes no state; the next event in its place is
// applied.
func TestReplayedEventRefused(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := projections.NewSet(15 * time.Minute)
	st := &eventsv1.FamilyState{FamilyId: "f1", Subject: "alice", Generation: 1, Status: eventsv1.FamilyStatus_FAMILY_STATUS_ACTIVE}
	issued := record(t, 1, t0, events.TypeFamilyIssued, &eventsv1.FamilyIssued{State: st})
	if err := s.Apply(issued); err != nil {
		t.Fatal(err)
	}
	st2 := proto.Clone(st).(*eventsv1.FamilyState)
	st2.Generation = 2
	rotated := record(t, 2, t0, events.TypeFamilyRotated, &eventsv1.FamilyRotated{State: st2})
	rotated.Prev = 1
	if err := s.Apply(rotated); err != nil {
		t.Fatal(err)
	}
	before := s.Digest()
	again := issued
	again.Seq = 3 // the issued event, appended again: it states Prev 0
	if err := s.Apply(again); !errors.Is(err, eventlog.ErrForged) {
		t.Fatalf("replayed event: %v, want ErrForged", err)
	}
	if f, _ := s.Family("f1"); f.LastSeq != 2 || s.Digest() != before {
		t.Fatalf("the replayed event changed state: last event %d", f.LastSeq)
	}
	st3 := proto.Clone(st2).(*eventsv1.FamilyState)
	st3.Status = eventsv1.FamilyStatus_FAMILY_STATUS_REVOKED
	revoked := record(t, 4, t0, events.TypeFamilyRevoked, &eventsv1.FamilyRevoked{State: st3})
	revoked.Prev = 2
	if err := s.Apply(revoked); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.RevokedFamily("f1"); !ok {
		t.Fatal("the revocation that follows was not applied")
	}
}

// TestUnprojectedRecords: grace records and DPoP claims, which the runner
// reads since it reads the whole stream, change nothing but the position
// and are not bad records.
func TestUnprojectedRecords(t *testing.T) {
	s := projections.NewSet(time.Minute)
	before := s.Digest()
	for _, typ := range []string{events.TypeGrace, events.TypeDPoPProofUsed} {
		if err := s.Apply(eventlog.Record{Seq: 7, Type: typ, Data: []byte{0xff}}); err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
	}
	if s.BadRecords() != 0 || s.Seq() != 7 || s.Digest() != before {
		t.Fatalf("bad %d seq %d, state changed %v", s.BadRecords(), s.Seq(), s.Digest() != before)
	}
}
