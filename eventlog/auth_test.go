package eventlog_test

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
)

// forgeries collects what a Log reports to OnForged.
type forgeries struct {
	mu   sync.Mutex
	seqs []uint64
}

func (f *forgeries) report(rec eventlog.Record, _ error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seqs = append(f.seqs, rec.Seq)
}

func (f *forgeries) count(seq uint64) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, s := range f.seqs {
		if s == seq {
			n++
		}
	}
	return n
}

// republish publishes rec's message again, verbatim (headers and payload),
// as anyone who can publish to the stream's subjects could; with spoof it
// also carries the sequence, subject and time headers of a direct get, as
// if it were the original.
func republish(t *testing.T, l *eventlog.Log, seq uint64, spoof bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := l.JetStream().Stream(ctx, l.Stream())
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(ctx, seq)
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(m.Subject)
	msg.Data = m.Data
	for k, v := range m.Header {
		switch k {
		case "Nats-Expected-Last-Subject-Sequence":
			continue // the original expectation would fail: the attacker's holds (below)
		case "Nats-Sequence", "Nats-Subject", "Nats-Time-Stamp", "Nats-Stream":
			if !spoof {
				continue // added by the direct get, not stored
			}
		}
		msg.Header[k] = v
	}
	// The MAC binds the aggregate's name, which the server accepts only
	// with an expectation: the attacker gives the current one.
	agg := m.Header.Get("Nats-Expected-Last-Subject-Sequence-Subject")
	last, err := s.GetLastMsgForSubject(ctx, agg)
	if err != nil {
		t.Fatal(err)
	}
	msg.Header.Set("Nats-Expected-Last-Subject-Sequence", strconv.FormatUint(last.Sequence, 10))
	// The same Nats-Msg-Id (the MAC binds it) passes once the duplicate
	// window is over.
	for {
		ack, err := l.JetStream().PublishMsg(ctx, msg)
		if err != nil {
			t.Fatal(err)
		}
		if !ack.Duplicate {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatal("still a duplicate")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestForgedAndReplayedEvents: a record without a valid MAC, one under
// another key, and an authentic event published again are refused by
// Last, LastConsistent and the readers, each reported once; authentic
// records before and after are read as usual.
func TestForgedAndReplayedEvents(t *testing.T) {
	t.Parallel()
	n := eventlogtest.SingleNode(t)
	var f forgeries
	l := eventlogtest.OpenLog(t, n.Conn, eventlog.Config{OnForged: f.report, DuplicateWindow: 200 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := l.Subjects()

	issued := eventlogtest.Append(ctx, t, l, eventlog.Event{Subject: s.Family("f1", "issued"), Type: "family.issued", Data: []byte("g1")}, s.FamilyFilter("f1"))
	rotated := eventlogtest.Append(ctx, t, l, eventlog.Event{Subject: s.Family("f1", "rotated"), Type: "family.rotated", Data: []byte("g2")}, s.FamilyFilter("f1"))
	if rec, err := l.Last(ctx, s.FamilyFilter("f1")); err != nil || rec.Seq != rotated || rec.Prev != issued {
		t.Fatalf("last = %d (prev %d), %v; want %d after %d", rec.Seq, rec.Prev, err, rotated, issued)
	}

	// The issued event again: authentic, out of its place.
	republish(t, l, issued, false)
	replayed, _ := l.LastSeq(ctx)
	for _, read := range []func(context.Context, string) (eventlog.Record, error){l.Last, l.LastConsistent} {
		if _, err := read(ctx, s.FamilyFilter("f1")); !errors.Is(err, eventlog.ErrForged) {
			t.Fatalf("replayed issued event read as %v, want ErrForged", err)
		}
	}
	if got := f.count(replayed); got != 1 {
		t.Fatalf("replayed record %d reported %d times, want once (reports %v)", replayed, got, f.seqs)
	}

	// The same, passing itself off as the original with a direct get's
	// headers.
	republish(t, l, rotated, true)
	spoofed, _ := l.LastSeq(ctx)
	if _, err := l.Last(ctx, s.FamilyFilter("f1")); !errors.Is(err, eventlog.ErrForged) {
		t.Fatalf("replayed event with spoofed sequence read as %v, want ErrForged", err)
	}
	if got := f.count(spoofed); got != 1 {
		t.Fatalf("spoofed record %d reported %d times, want once (reports %v)", spoofed, got, f.seqs)
	}

	// No MAC at all, and a MAC under another key.
	bare := nats.NewMsg(s.Family("f2", "issued"))
	bare.Header.Set(eventlog.HeaderEvent, "family.issued")
	bare.Data = []byte("forged")
	if _, err := l.JetStream().PublishMsg(ctx, bare); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Last(ctx, s.FamilyFilter("f2")); !errors.Is(err, eventlog.ErrForged) {
		t.Fatalf("record without MAC read as %v, want ErrForged", err)
	}
	other, err := eventlog.NewAuthenticator([]byte("another key of 32 bytes, exactly"))
	if err != nil {
		t.Fatal(err)
	}
	ol, err := eventlog.Attach(ctx, n.Conn, eventlog.Config{Auth: other})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ol.Append(ctx, eventlog.Event{Subject: s.Family("f3", "issued"), Type: "family.issued", Data: []byte("x")}, eventlog.Expect{Filter: s.FamilyFilter("f3")}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Last(ctx, s.FamilyFilter("f3")); !errors.Is(err, eventlog.ErrForged) {
		t.Fatalf("record under another key read as %v, want ErrForged", err)
	}

	// Readers in stream order deliver only authentic records; the chain
	// of each aggregate is the reader's to check (Follows).
	last := eventlogtest.Append(ctx, t, l, eventlog.Event{Subject: s.Family("f4", "issued"), Type: "family.issued", Data: []byte("ok")}, s.FamilyFilter("f4"))
	var got []eventlog.Record
	if err := l.Replay(ctx, 1, nil, func(r eventlog.Record) { got = append(got, r) }); err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, r := range got {
		seqs = append(seqs, r.Seq)
	}
	// issued, rotated, the replayed copies (authentic MAC), f4.
	want := []uint64{issued, rotated, replayed, spoofed, last}
	if len(seqs) != len(want) {
		t.Fatalf("replay delivered %v, want %v", seqs, want)
	}
	for i := range want {
		if seqs[i] != want[i] {
			t.Fatalf("replay delivered %v, want %v", seqs, want)
		}
	}
	if err := got[2].Follows(rotated); !errors.Is(err, eventlog.ErrForged) {
		t.Fatalf("the replayed copy follows the aggregate: %v", err)
	}
	if err := got[1].Follows(issued); err != nil {
		t.Fatal(err)
	}
}

// TestAuthenticatorRotation: after ENCRYPTION_KEY is rotated, records
// appended under the previous key still verify while it is configured,
// new ones are under the new key, and without the previous key the old
// records are refused, saying why.
func TestAuthenticatorRotation(t *testing.T) {
	t.Parallel()
	n := eventlogtest.SingleNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	oldKey, newKey := []byte("the old encryption key, 32 bytes"), []byte("the new encryption key, 32 bytes")
	oldAuth, _ := eventlog.NewAuthenticator(oldKey)
	rolled, err := eventlog.NewAuthenticator(newKey, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	newOnly, _ := eventlog.NewAuthenticator(newKey)
	l := eventlogtest.OpenLog(t, n.Conn, eventlog.Config{Auth: oldAuth})
	s := l.Subjects()
	first := eventlogtest.Append(ctx, t, l, eventlog.Event{Subject: s.Family("f", "issued"), Type: "family.issued", Data: []byte("1")}, s.FamilyFilter("f"))

	l2 := eventlogtest.OpenLog(t, n.Conn, eventlog.Config{Auth: rolled})
	if _, err := l2.Last(ctx, s.FamilyFilter("f")); err != nil {
		t.Fatalf("a record under the previous key: %v", err)
	}
	second := eventlogtest.Append(ctx, t, l2, eventlog.Event{Subject: s.Family("f", "rotated"), Type: "family.rotated", Data: []byte("2")}, s.FamilyFilter("f"))
	if rec, err := l2.Last(ctx, s.FamilyFilter("f")); err != nil || rec.Seq != second || rec.Prev != first {
		t.Fatalf("last %d (prev %d), %v", rec.Seq, rec.Prev, err)
	}
	if _, err := l.Last(ctx, s.FamilyFilter("f")); !errors.Is(err, eventlog.ErrForged) {
		t.Fatalf("the old key accepted a record under the new one: %v", err)
	}
	l3 := eventlogtest.OpenLog(t, n.Conn, eventlog.Config{Auth: newOnly})
	var delivered []uint64
	if err := l3.Replay(ctx, 1, nil, func(r eventlog.Record) { delivered = append(delivered, r.Seq) }); err != nil {
		t.Fatal(err)
	}
	if len(delivered) != 1 || delivered[0] != second {
		t.Fatalf("without the previous key replay delivered %v, want only %d", delivered, second)
	}
}

// TestProbeOpenServer: a server without authentication lets an anonymous
// client append, and the probe says so without storing anything.
func TestProbeOpenServer(t *testing.T) {
	t.Parallel()
	e, err := eventlog.StartEmbedded(eventlog.EmbeddedConfig{DataDir: filepath.Join(t.TempDir(), "js"), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	nc, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	l := eventlogtest.OpenLog(t, nc, eventlog.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.ProbeAnonymousAppend(ctx, e.ClientURL()); !errors.Is(err, eventlog.ErrOpenLog) {
		t.Fatalf("probe of an open server: %v, want ErrOpenLog", err)
	}
	if seq, err := l.LastSeq(ctx); err != nil || seq != 0 {
		t.Fatalf("the probe stored something: last seq %d, %v", seq, err)
	}
}
