package eventlog_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
)

// TestOpenUpdatesOnlyAChangedStream: opening an existing stream with the
// same settings leaves it alone; with other settings it is updated.
func TestOpenUpdatesOnlyAChangedStream(t *testing.T) {
	n := eventlogtest.SingleNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(n.Conn)
	if err != nil {
		t.Fatal(err)
	}
	maxMsgSize := func() int32 {
		s, err := js.Stream(ctx, "TOKENS")
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().Config.MaxMsgSize
	}
	created := func() time.Time {
		s, err := js.Stream(ctx, "TOKENS")
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().Created
	}
	eventlogtest.OpenLog(t, n.Conn, eventlog.Config{MaxPayload: 1000})
	first, size := created(), maxMsgSize()
	eventlogtest.OpenLog(t, n.Conn, eventlog.Config{MaxPayload: 1000})
	if created() != first || maxMsgSize() != size {
		t.Fatal("reopening with the same settings changed the stream")
	}
	eventlogtest.OpenLog(t, n.Conn, eventlog.Config{MaxPayload: 2000})
	if got := maxMsgSize(); got == size {
		t.Fatalf("max message size still %d after opening with a larger payload", got)
	}
}
