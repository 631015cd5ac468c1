package eventlog_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
)

// TestLogContract runs one suite against a single node and an R3 stream on
// a 3-node cluster: the two deployments must behave the same.
func TestLogContract(t *testing.T) {
	t.Run("single", func(t *testing.T) {
		n := eventlogtest.SingleNode(t)
		runContract(t, []*eventlog.Log{eventlogtest.OpenLog(t, n.Conn, eventlog.Config{})})
	})
	t.Run("cluster", func(t *testing.T) {
		if testing.Short() {
			t.Skip("cluster in -short")
		}
		nodes := eventlogtest.Cluster(t, 3)
		var logs []*eventlog.Log
		for _, nd := range nodes {
			logs = append(logs, eventlogtest.OpenLog(t, nd.Conn, eventlog.Config{Replicas: 3}))
		}
		runContract(t, logs)
	})
}

func runContract(t *testing.T, logs []*eventlog.Log) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l := logs[0]
	s := l.Subjects()

	t.Run("cas", func(t *testing.T) {
		f := s.FamilyFilter("fam1")
		seq1, err := l.Append(ctx, eventlog.Event{Subject: s.Family("fam1", "issued"), Type: "family.issued", Data: []byte("a")}, eventlog.Expect{Filter: f})
		if err != nil {
			t.Fatal(err)
		}
		// Expecting "no message" again must fail.
		_, err = l.Append(ctx, eventlog.Event{Subject: s.Family("fam1", "issued"), Data: []byte("b")}, eventlog.Expect{Filter: f})
		if !errors.Is(err, eventlog.ErrConflict) {
			t.Fatalf("second create: got %v, want ErrConflict", err)
		}
		seq2, err := l.Append(ctx, eventlog.Event{Subject: s.Family("fam1", "rotated"), Data: []byte("c")}, eventlog.Expect{Filter: f, Seq: seq1})
		if err != nil {
			t.Fatal(err)
		}
		// A stale expectation fails even though the subject differs.
		_, err = l.Append(ctx, eventlog.Event{Subject: s.Family("fam1", "revoked"), Data: []byte("d")}, eventlog.Expect{Filter: f, Seq: seq1})
		if !errors.Is(err, eventlog.ErrConflict) {
			t.Fatalf("stale append: got %v, want ErrConflict", err)
		}
		// Other aggregates do not interfere.
		if _, err := l.Append(ctx, eventlog.Event{Subject: s.Family("fam2", "issued"), Data: []byte("e")}, eventlog.Expect{Filter: s.FamilyFilter("fam2")}); err != nil {
			t.Fatal(err)
		}
		for _, read := range []func(context.Context, string) (eventlog.Record, error){l.Last, l.LastConsistent} {
			rec, err := read(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Seq != seq2 || string(rec.Data) != "c" || rec.Subject != s.Family("fam1", "rotated") {
				t.Fatalf("last = %+v, want seq %d data c", rec, seq2)
			}
			if _, err := read(ctx, s.FamilyFilter("nope")); !errors.Is(err, eventlog.ErrNotFound) {
				t.Fatalf("missing aggregate: got %v, want ErrNotFound", err)
			}
		}
	})

	t.Run("headers", func(t *testing.T) {
		cctx := eventlog.WithActor(eventlog.WithCorrelationID(ctx, "corr-1"), "admin")
		_, err := l.Append(cctx, eventlog.Event{Subject: s.Family("fam3", "issued"), Type: "family.issued", ID: "id-fam3", Data: []byte("x")}, eventlog.Expect{Filter: s.FamilyFilter("fam3")})
		if err != nil {
			t.Fatal(err)
		}
		rec, err := l.LastConsistent(ctx, s.FamilyFilter("fam3"))
		if err != nil {
			t.Fatal(err)
		}
		if rec.ID != "id-fam3" || rec.CorrelationID != "corr-1" || rec.Actor != "admin" || rec.Type != "family.issued" {
			t.Fatalf("headers not kept: %+v", rec)
		}
	})

	t.Run("invalid", func(t *testing.T) {
		for _, ev := range []eventlog.Event{
			{Subject: "other.x"},
			{Subject: s.Family("*", "issued")},
			{Subject: s.Family("a", "issued"), Data: make([]byte, 300<<10)},
		} {
			if _, err := l.Append(ctx, ev, eventlog.Expect{}); !errors.Is(err, eventlog.ErrInvalidEvent) {
				t.Errorf("append %q: got %v, want ErrInvalidEvent", ev.Subject, err)
			}
		}
	})

	t.Run("race", func(t *testing.T) {
		// N writers on every connection race for one expectation: exactly
		// one wins.
		f := s.FamilyFilter("race")
		base, err := l.Append(ctx, eventlog.Event{Subject: s.Family("race", "issued")}, eventlog.Expect{Filter: f})
		if err != nil {
			t.Fatal(err)
		}
		var wins, conflicts atomic.Int32
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				lg := logs[i%len(logs)]
				_, err := lg.Append(ctx, eventlog.Event{Subject: s.Family("race", "rotated"), Data: []byte(fmt.Sprint(i))}, eventlog.Expect{Filter: f, Seq: base})
				switch {
				case err == nil:
					wins.Add(1)
				case errors.Is(err, eventlog.ErrConflict):
					conflicts.Add(1)
				default:
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if wins.Load() != 1 || conflicts.Load() != 15 {
			t.Fatalf("wins %d conflicts %d, want 1 and 15", wins.Load(), conflicts.Load())
		}
	})

	t.Run("duplicate id", func(t *testing.T) {
		// A retried append with the same ID is stored once.
		ev := eventlog.Event{Subject: s.SubjectRevoked("sid1"), ID: "dup-1", Data: []byte("x")}
		exp := eventlog.Expect{Filter: ev.Subject}
		a, err := l.Append(ctx, ev, exp)
		if err != nil {
			t.Fatal(err)
		}
		// A single node answers the retry "conflict", a cluster
		// "duplicate", which Append resolves to the original.
		b, err := l.Append(ctx, ev, exp)
		if err != nil && !errors.Is(err, eventlog.ErrConflict) {
			t.Fatal(err)
		}
		if err == nil && a != b {
			t.Fatalf("duplicate stored twice: %d and %d", a, b)
		}
		if last, err := l.LastConsistent(ctx, ev.Subject); err != nil || last.Seq != a {
			t.Fatalf("last message on %s: %d, %v; want %d", ev.Subject, last.Seq, err, a)
		}
	})

	t.Run("replay and follow", func(t *testing.T) {
		last, err := l.LastSeq(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var replayed []uint64
		if err := logs[len(logs)-1].Replay(ctx, 1, nil, func(r eventlog.Record) { replayed = append(replayed, r.Seq) }); err != nil {
			t.Fatal(err)
		}
		if len(replayed) == 0 || replayed[len(replayed)-1] != last {
			t.Fatalf("replay ended at %v, want last %d", replayed, last)
		}
		for i := 1; i < len(replayed); i++ {
			if replayed[i] <= replayed[i-1] {
				t.Fatalf("replay out of order: %v", replayed)
			}
		}
		// Follow only family events; it sees a new one after catching up.
		fctx, fcancel := context.WithCancel(ctx)
		defer fcancel()
		got := make(chan eventlog.Record, 100)
		caught := make(chan struct{})
		go func() {
			_ = l.Follow(fctx, 1, []string{s.Families()}, func(r eventlog.Record) { got <- r }, func() { close(caught) })
		}()
		select {
		case <-caught:
		case <-ctx.Done():
			t.Fatal("follow never caught up")
		}
		seq, err := l.Append(ctx, eventlog.Event{Subject: s.Family("late", "issued")}, eventlog.Expect{Filter: s.FamilyFilter("late")})
		if err != nil {
			t.Fatal(err)
		}
		for {
			select {
			case r := <-got:
				if s.Kind(r.Subject) != "family" {
					t.Fatalf("filter leaked %s", r.Subject)
				}
				if r.Seq == seq {
					return
				}
			case <-ctx.Done():
				t.Fatal("follow did not deliver the new event")
			}
		}
	})

	t.Run("ttl", func(t *testing.T) {
		subj := s.Grace("fam-ttl", "g1")
		if _, err := l.Append(ctx, eventlog.Event{Subject: subj, Data: []byte("sealed"), TTL: time.Second}, eventlog.Expect{Filter: subj}); err != nil {
			t.Fatal(err)
		}
		if _, err := l.LastConsistent(ctx, subj); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, err := l.LastConsistent(ctx, subj)
			if errors.Is(err, eventlog.ErrNotFound) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("message with 1s TTL still there after 10s: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// TestReplayEndsAtTheEndWhileRecordsExpire: a replay delivers every record
// that exists when it starts, up to the last, also while records with a
// TTL (grace records, DPoP claims) leave the stream under it. (The case
// that made a replay stop one family event short, an ordered consumer
// reset under load, is not reproduced here: issuer's TestReplayEqualsLive
// met it about once in four runs beside another package's tests.)
func TestReplayEndsAtTheEndWhileRecordsExpire(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l := eventlogtest.OpenLog(t, eventlogtest.SingleNode(t).Conn, eventlog.Config{})
	s := l.Subjects()
	var last uint64
	for i := range 300 {
		fid := fmt.Sprintf("fam%d", i)
		seq, err := l.Append(ctx, eventlog.Event{Subject: s.Family(fid, "issued"), Type: "family.issued", Data: []byte("f")}, eventlog.Expect{Filter: s.FamilyFilter(fid)})
		if err != nil {
			t.Fatal(err)
		}
		last = seq
		g := s.Grace(fid, "g")
		if _, err := l.Append(ctx, eventlog.Event{Subject: g, Data: []byte("sealed"), TTL: time.Second}, eventlog.Expect{Filter: g}); err != nil {
			t.Fatal(err)
		}
	}
	// Replay again and again while the grace records reach their TTL.
	for until := time.Now().Add(3 * time.Second); time.Now().Before(until); {
		for _, filters := range [][]string{{s.All()}, {s.Families()}} {
			var got uint64
			if err := l.Replay(ctx, 1, filters, func(r eventlog.Record) {
				if s.Kind(r.Subject) == "family" {
					got = max(got, r.Seq)
				}
			}); err != nil {
				t.Fatal(err)
			}
			if got != last {
				t.Fatalf("replay of %v ended at %d, the last family event is %d", filters, got, last)
			}
		}
	}
}
