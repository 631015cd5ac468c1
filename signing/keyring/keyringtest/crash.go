package keyringtest

import (
	"context"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	"github.com/auth-platform/tokenservice/eventlog/events"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// keyringCrash runs the crash through the keyring and the event log: a
// replica records an intent, the backend makes its key, and the replica
// dies before key.generated. The next replica, with its own backend
// instance, finishes the intent with that key: exactly one active key, no
// key more in the store, and a token it signs verifies.
func (s suite) keyringCrash(t *testing.T) {
	crashed := s.newBackend(t)
	if !crashed.Remote() {
		t.Skip("a local key lives in the log: the keyring records no intent for it")
	}
	ctx := context.Background()
	node := eventlogtest.SingleNode(t)
	first := issuertest.New(t, issuertest.Options{Conn: node.Conn, Algorithm: s.alg, Backend: crashed})
	intent := s.intent("crashed")
	data, err := proto.Marshal(&eventsv1.KeyRequested{IntentId: intent, Algorithm: string(s.alg), Backend: crashed.Name(), At: timestamppb.New(first.Clock.Now())})
	if err != nil {
		t.Fatal(err)
	}
	head, err := first.Log.LastConsistent(ctx, first.Log.Subjects().Keys())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Log.Append(ctx, eventlog.Event{Subject: first.Log.Subjects().Key(intent, "requested"), Type: events.TypeKeyRequested, Data: data},
		eventlog.Expect{Filter: first.Log.Subjects().Keys(), Seq: head.Seq}); err != nil {
		t.Fatal(err)
	}
	made := s.create(t, crashed, s.alg, intent) // the crash: no key.generated follows
	before, counted := s.keys(t)

	nc, err := node.Embedded.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	backend := s.newBackend(t)
	next := issuertest.New(t, issuertest.Options{Conn: nc, Clock: first.Clock, Algorithm: s.alg, Backend: backend})
	if err := next.Keyring.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.keys(t); counted && n != before {
		t.Fatalf("%d keys in the store after the restart, %d before: an orphan", n, before)
	}
	k, ok := next.Set.Key(made.ID)
	if !ok || k.IntentID != intent || k.Ref != made.Ref {
		t.Fatalf("the key made before the crash was not adopted: %+v", k)
	}
	if _, ok := next.Set.PendingKeyIntent(); ok {
		t.Fatal("an intent is still pending")
	}
	keys, _ := next.Set.Keys()
	active := 0
	for _, k := range keys {
		if k.Status == eventsv1.KeyStatus_KEY_STATUS_ACTIVE {
			active++
		}
	}
	if active != 1 {
		t.Fatalf("%d active keys, want exactly 1", active)
	}
	tok, err := next.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "k", ClientID: "c", Audience: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := next.Issuer.VerifyAccessToken(tok.AccessToken, true); err != nil {
		t.Fatalf("a token signed after the recovery: %v", err)
	}
	if s.o.Recovered != nil {
		s.o.Recovered(t, next, backend)
	}
}
