package eventlog

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestResolve: after an ambiguous append, the outcome is read from the
// message that followed the expectation, not from the last one: our
// append is recognised even after another writer followed it.
func TestResolve(t *testing.T) {
	e, err := StartEmbedded(EmbeddedConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	nc, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	auth, err := NewAuthenticator([]byte("resolve test key, 32 bytes long!"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := Open(ctx, nc, Config{Auth: auth})
	if err != nil {
		t.Fatal(err)
	}
	s := l.Subjects()
	f := s.FamilyFilter("resolve")
	ours := Event{Subject: s.Family("resolve", "issued"), ID: "ours"}
	seq1, err := l.Append(ctx, ours, Expect{Filter: f})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(ctx, Event{Subject: s.Family("resolve", "rotated"), ID: "theirs"}, Expect{Filter: f, Seq: seq1}); err != nil {
		t.Fatal(err)
	}
	if got, err := l.resolve(ctx, ours, Expect{Filter: f}); err != nil || got != seq1 {
		t.Fatalf("resolve of a stored append that was followed: %d, %v; want %d", got, err, seq1)
	}
	if _, err := l.resolve(ctx, Event{Subject: ours.Subject, ID: "lost"}, Expect{Filter: f}); !errors.Is(err, ErrConflict) {
		t.Fatalf("resolve of an append that lost: %v, want ErrConflict", err)
	}
	if _, err := l.resolve(ctx, Event{Subject: ours.Subject, ID: "never"}, Expect{Filter: s.FamilyFilter("empty")}); !errors.Is(err, ErrConflict) {
		t.Fatalf("resolve on an empty aggregate: %v, want ErrConflict", err)
	}
}
