package eventlog_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestFeedProvisioned: the feed is a stream of its own subjects, sourced
// from nothing (tokend writes it), that the subscriber reads; nothing
// appended to the log reaches it by itself.
func TestFeedProvisioned(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n := startSecured(t, t.TempDir(), nil)
	appendAll(ctx, t, n.log, "f1")
	sc, _ := n.subscriber(t)
	js, err := jetstream.New(sc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, n.acc.FeedStream())
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	if len(cfg.Sources) != 0 || len(cfg.Subjects) != 1 || cfg.Subjects[0] != n.acc.FeedSubjects() || !cfg.DenyDelete || !cfg.DenyPurge {
		t.Fatalf("feed config: sources %v, subjects %v, deny delete %v, deny purge %v", cfg.Sources, cfg.Subjects, cfg.DenyDelete, cfg.DenyPurge)
	}
	if got := st.CachedInfo().State.Msgs; got != 0 {
		t.Fatalf("the log's events reached the feed by themselves: %d messages", got)
	}
	writeFeed(ctx, t, n, "tokenfeed.key.k1.published")
	got := readFeed(ctx, t, js, n.acc.FeedStream(), publicKey(t, n.seedFile), 1)
	if got[0].Subject() != "tokenfeed.key.k1.published" {
		t.Fatalf("feed message on %s", got[0].Subject())
	}
}

// TestProvisionFeedReplacesSourcedFeed: a feed of the earlier layout,
// sourced from the log (sealed keys and family states in it), is deleted
// and made again empty, even while the server still removes the files of
// an earlier delete of the same name.
func TestProvisionFeedReplacesSourcedFeed(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n := startSecured(t, t.TempDir(), nil)
	js := n.feedJS(t)
	if err := js.DeleteStream(ctx, n.acc.FeedStream()); err != nil {
		t.Fatal(err)
	}
	old := jetstream.StreamConfig{Name: n.acc.FeedStream(), Subjects: []string{"old.>"}, Sources: []*jetstream.StreamSource{{Name: "OTHER"}}}
	// Just deleted: the server may still be removing its files ("error
	// creating store"), as ProvisionFeed knows too.
	for attempt := 0; ; attempt++ {
		_, err := js.CreateStream(ctx, old)
		if err == nil {
			break
		}
		var apiErr *jetstream.APIError
		if attempt == 100 || !errors.As(err, &apiErr) || apiErr.ErrorCode != 10049 {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := js.Publish(ctx, "old.family.f1.revoked", []byte("family state with secret hashes")); err != nil {
		t.Fatal(err)
	}
	// The first delete's files are still being removed when the feed is
	// deleted again (nats-server removes a deleted stream's directory in
	// the background, under a "." name): the second delete cannot rename
	// its directory, ignores that, and leaves the old messages where the
	// new stream finds them. Made certain here: the "." directory is held
	// for 300 ms.
	dirs, err := filepath.Glob(filepath.Join(n.dir, "jetstream", "*", "*", "streams", n.acc.FeedStream()))
	if err != nil || len(dirs) != 1 {
		t.Fatalf("the feed's directory: %v (%v)", dirs, err)
	}
	removing := filepath.Join(filepath.Dir(dirs[0]), "."+n.acc.FeedStream())
	for _, err := os.Stat(removing); err == nil; _, err = os.Stat(removing) {
		time.Sleep(10 * time.Millisecond) // the test's own delete, above
	}
	if err := os.MkdirAll(filepath.Join(removing, "msgs"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(removing, "msgs", "1.blk"), []byte("being removed"), 0o600); err != nil {
		t.Fatal(err)
	}
	removed := make(chan error, 1)
	time.AfterFunc(300*time.Millisecond, func() { removed <- os.RemoveAll(removing) })
	if err := n.acc.ProvisionFeed(ctx, n.e); err != nil {
		t.Fatal(err)
	}
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, n.acc.FeedStream())
	if err != nil {
		t.Fatal(err)
	}
	if info := st.CachedInfo(); len(info.Config.Sources) != 0 || info.State.Msgs != 0 {
		t.Fatalf("feed after provisioning: sources %v, %d messages", info.Config.Sources, info.State.Msgs)
	}
}
