package eventlog

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestEnsureFeedLeavesTheFeedAlone: the feed as the server reports it is
// the feed EnsureFeed asked for, so a later start does not update it (an
// update waits on the stream's Raft group); a stream of that name with
// other subjects is replaced.
func TestEnsureFeedLeavesTheFeedAlone(t *testing.T) {
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
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := FeedStreamConfig("FEED", "token", 1)
	if err := EnsureFeed(ctx, js, want); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "FEED")
	if err != nil {
		t.Fatal(err)
	}
	if !sameFeed(st.CachedInfo().Config, want) {
		t.Fatalf("the feed as stored %+v is not the feed asked for %+v", st.CachedInfo().Config, want)
	}
	other := want
	other.Subjects = []string{"elsewhere.>"}
	if _, err := js.UpdateStream(ctx, other); err != nil {
		t.Fatal(err)
	}
	if err := EnsureFeed(ctx, js, want); err != nil {
		t.Fatal(err)
	}
	if st, err = js.Stream(ctx, "FEED"); err != nil || !sameFeed(st.CachedInfo().Config, want) {
		t.Fatalf("a stream with other subjects was kept: %v", err)
	}
}
