package projections

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/eventlog"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// TestPendingIntents: every requested key no generated key fulfils is
// pending, oldest first; the oldest is PendingIntent's.
func TestPendingIntents(t *testing.T) {
	k := NewKeys()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	seq := uint64(0)
	for i, id := range []string{"b", "a", "c"} {
		seq++
		k.Apply(eventlog.Record{Seq: seq}, &eventsv1.KeyRequested{IntentId: id, Algorithm: "ES256", Backend: "pkcs11", At: timestamppb.New(t0.Add(time.Duration(i) * time.Second))})
	}
	seq++
	k.Apply(eventlog.Record{Seq: seq}, &eventsv1.KeyGenerated{KeyId: "kid-a", IntentId: "a", Algorithm: "ES256", Backend: "pkcs11",
		PublicKey: &eventsv1.PublicKey{Kty: "EC"}, At: timestamppb.New(t0)})
	var got []string
	for _, in := range k.PendingIntents() {
		got = append(got, in.ID)
	}
	if len(got) != 2 || got[0] != "b" || got[1] != "c" {
		t.Fatalf("pending %v, want [b c]", got)
	}
	if in, ok := k.PendingIntent(); !ok || in.ID != "b" {
		t.Fatalf("oldest pending %v", in)
	}
}
