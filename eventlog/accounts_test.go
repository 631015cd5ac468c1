package eventlog_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
)

// securedNode is an embedded server with accounts, the service's log on an
// in-process connection, and the subscriber's seed file.
type securedNode struct {
	e        *eventlog.Embedded
	acc      *eventlog.Accounts
	log      *eventlog.Log
	seedFile string
	dir      string
}

func startSecured(t *testing.T, dir string, key []byte) *securedNode {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pub, seedFile, err := eventlog.SubscriberSeed(dir)
	if err != nil {
		t.Fatal(err)
	}
	acc, err := eventlog.NewAccounts(eventlog.AccountsConfig{SubscriberKeys: []string{pub}})
	if err != nil {
		t.Fatal(err)
	}
	e, err := eventlog.StartEmbedded(eventlog.EmbeddedConfig{DataDir: filepath.Join(dir, "jetstream"), Listen: "127.0.0.1:0", Accounts: acc, EncryptionKey: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	nc, err := e.Connect(acc.ServiceOption())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	l, err := eventlog.Open(ctx, nc, eventlog.Config{Auth: eventlogtest.Auth(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := acc.ProvisionFeed(ctx, e); err != nil {
		t.Fatal(err)
	}
	return &securedNode{e: e, acc: acc, log: l, seedFile: seedFile, dir: dir}
}

// subscriber connects over TCP as the subscriber user; errs receives the
// asynchronous errors (permission violations) of the connection.
func (n *securedNode) subscriber(t *testing.T) (*nats.Conn, <-chan error) {
	t.Helper()
	opt, err := nats.NkeyOptionFromSeed(n.seedFile)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 16)
	nc, err := nats.Connect(n.e.ClientURL(), opt, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

// appendAll appends one event of every kind and returns the subjects a
// subscriber may see, in order.
func appendAll(ctx context.Context, t *testing.T, l *eventlog.Log, fid string) (visible []string) {
	t.Helper()
	s := l.Subjects()
	events := []struct {
		ev      eventlog.Event
		filter  string
		visible bool
	}{
		{eventlog.Event{Subject: s.Family(fid, "issued"), Type: "family.issued", Data: []byte("issued")}, s.FamilyFilter(fid), false},
		{eventlog.Event{Subject: s.Grace(fid, "g1"), Type: "grace", Data: []byte("sealed successor")}, s.Grace(fid, "g1"), false},
		{eventlog.Event{Subject: s.Family(fid, "rotated"), Type: "family.rotated", Data: []byte("rotated")}, s.FamilyFilter(fid), false},
		{eventlog.Event{Subject: s.DPoP("jkt1", "h"+fid), Type: "dpop.proof_used", Data: []byte("proof")}, s.DPoP("jkt1", "h"+fid), false},
		{eventlog.Event{Subject: s.Key("kid-"+fid, "activated"), Type: "key.activated", Data: []byte("key")}, s.Keys(), true},
		{eventlog.Event{Subject: s.Family(fid, "revoked"), Type: "family.revoked", Data: []byte("revoked")}, s.FamilyFilter(fid), true},
		{eventlog.Event{Subject: s.SubjectRevoked("sid-" + fid), Type: "subject.revoked", Data: []byte("cut-off")}, s.SubjectRevoked("sid-" + fid), true},
	}
	ctx = eventlog.WithActor(ctx, "apikey:test")
	for _, e := range events {
		eventlogtest.Append(ctx, t, l, e.ev, e.filter)
		if e.visible {
			visible = append(visible, e.ev.Subject)
		}
	}
	return visible
}

// readFeed reads want records from the feed through the consumer named
// consumer (a subscriber's public key), and then checks that nothing else
// is pending.
func readFeed(ctx context.Context, t *testing.T, js jetstream.JetStream, feed, consumer string, want int) []jetstream.Msg {
	t.Helper()
	cons, err := js.CreateOrUpdateConsumer(ctx, feed, jetstream.ConsumerConfig{Name: consumer, AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: 10 * time.Second})
	if err != nil {
		t.Fatalf("consumer %s: %v", consumer, err)
	}
	defer func() { _ = js.DeleteConsumer(ctx, feed, consumer) }()
	var got []jetstream.Msg
	for len(got) < want {
		msgs, err := cons.Fetch(want-len(got), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range msgs.Messages() {
			got = append(got, m)
		}
		if msgs.Error() != nil && !errors.Is(msgs.Error(), nats.ErrTimeout) {
			t.Fatal(msgs.Error())
		}
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records", len(got), want)
		}
	}
	if info, err := cons.Info(ctx); err != nil {
		t.Fatal(err)
	} else if info.NumPending != 0 {
		t.Fatalf("%d more records than the %d expected", info.NumPending, want)
	}
	return got
}

// publicKey returns the public key of the nkey seed in file.
func publicKey(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := nkeys.ParseDecoratedNKey(b)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// writeFeed publishes one message to the feed as the admin user, as
// tokend's feed writer does.
func writeFeed(ctx context.Context, t *testing.T, n *securedNode, subject string) {
	t.Helper()
	nc, err := n.acc.ConnectFeed(n.e)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, subject, []byte("public")); err != nil {
		t.Fatalf("publish %s to the feed: %v", subject, err)
	}
}

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
	nc, err := n.acc.ConnectFeed(n.e)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
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

// TestSubscribersOwnConsumers: each subscriber user manages only the
// consumer named after its key; it can neither delete, pause nor replace
// another's, nor make a consumer that delivers into the feed.
func TestSubscribersOwnConsumers(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	aPub, aSeed, err := eventlog.SubscriberSeed(filepath.Join(dir, "a"))
	if err != nil {
		t.Fatal(err)
	}
	bPub, bSeed, err := eventlog.SubscriberSeed(filepath.Join(dir, "b"))
	if err != nil {
		t.Fatal(err)
	}
	acc, err := eventlog.NewAccounts(eventlog.AccountsConfig{SubscriberKeys: []string{aPub, bPub}})
	if err != nil {
		t.Fatal(err)
	}
	e, err := eventlog.StartEmbedded(eventlog.EmbeddedConfig{DataDir: filepath.Join(dir, "jetstream"), Listen: "127.0.0.1:0", Accounts: acc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	svc, err := e.Connect(acc.ServiceOption())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	if _, err := eventlog.Open(ctx, svc, eventlog.Config{Auth: eventlogtest.Auth(t)}); err != nil {
		t.Fatal(err)
	}
	if err := acc.ProvisionFeed(ctx, e); err != nil {
		t.Fatal(err)
	}
	n := &securedNode{e: e, acc: acc, seedFile: aSeed}
	a, aErrs := n.subscriber(t)
	n.seedFile = bSeed
	b, _ := n.subscriber(t)
	ajs, _ := jetstream.New(a)
	bjs, _ := jetstream.New(b)
	feed := acc.FeedStream()
	cc := jetstream.ConsumerConfig{Name: bPub, AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: time.Minute}
	if _, err := bjs.CreateConsumer(ctx, feed, cc); err != nil {
		t.Fatalf("b creates its own consumer: %v", err)
	}
	own := cc
	own.Name = aPub
	if _, err := ajs.CreateConsumer(ctx, feed, own); err != nil {
		t.Fatalf("a creates its own consumer: %v", err)
	}
	refused := func(what string, call func(context.Context) error) {
		t.Helper()
		drain(aErrs)
		c, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if err := call(c); err == nil {
			t.Fatalf("%s: allowed", what)
		}
		select {
		case err := <-aErrs:
			if !errors.Is(err, nats.ErrPermissionViolation) {
				t.Fatalf("%s: %v, want a permissions violation", what, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no permissions violation", what)
		}
	}
	refused("delete b's consumer", func(c context.Context) error { return ajs.DeleteConsumer(c, feed, bPub) })
	refused("pause b's consumer", func(c context.Context) error {
		_, err := ajs.PauseConsumer(c, feed, bPub, time.Now().Add(time.Hour))
		return err
	})
	refused("update b's consumer", func(c context.Context) error {
		up := cc
		up.Description = "taken over"
		_, err := ajs.UpdateConsumer(c, feed, up)
		return err
	})
	refused("a consumer of another name", func(c context.Context) error {
		other := cc
		other.Name = "anything"
		_, err := ajs.CreateConsumer(c, feed, other)
		return err
	})
	refused("an ordered consumer (random names)", func(c context.Context) error {
		_, err := ajs.OrderedConsumer(c, feed, jetstream.OrderedConsumerConfig{})
		return err
	})
	refused("b's consumer's messages", func(c context.Context) error {
		_, err := a.RequestWithContext(c, "$JS.API.CONSUMER.MSG.NEXT."+feed+"."+bPub, []byte(`{"batch":1}`))
		return err
	})
	// Its own consumer, made to push into the feed's subjects, is refused
	// by the server: a subscriber cannot write to the feed that way.
	if _, err := ajs.CreateOrUpdateConsumer(ctx, feed, jetstream.ConsumerConfig{Name: aPub, DeliverSubject: "tokenfeed.family.x.revoked", AckPolicy: jetstream.AckNonePolicy}); err == nil {
		t.Fatal("a consumer delivering into the feed was created")
	}
	// Nor can it make the server send the JetStream API a request on its
	// behalf: its own push consumer delivering to b's delete subject.
	writeFeed(ctx, t, n, "tokenfeed.key.k1.published")
	if err := ajs.DeleteConsumer(ctx, feed, aPub); err != nil {
		t.Fatal(err)
	}
	push, err := ajs.CreateConsumer(ctx, feed, jetstream.ConsumerConfig{Name: aPub, DeliverSubject: "$JS.API.CONSUMER.DELETE." + feed + "." + bPub,
		AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: time.Second})
	for err == nil {
		// Until the server delivered the feed's message there, or removed
		// the consumer for want of interest in that subject (what it
		// does: the API is not a subscriber).
		ci, ierr := push.Info(ctx)
		if errors.Is(ierr, jetstream.ErrConsumerNotFound) || (ierr == nil && ci.Delivered.Consumer >= 1) {
			break
		}
		if ierr != nil || ctx.Err() != nil {
			t.Fatalf("push consumer: %v", ierr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	info, err := bjs.Consumer(ctx, feed, bPub)
	if err != nil {
		t.Fatalf("b's consumer is gone: %v", err)
	}
	if ci := info.CachedInfo(); ci.Config.Description != "" || ci.Paused {
		t.Fatalf("b's consumer was changed: %+v", ci.Config)
	}
}

func TestSubscriberCannotPublish(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n := startSecured(t, t.TempDir(), nil)
	sc, errs := n.subscriber(t)
	s := n.log.Subjects()

	for _, subject := range []string{
		s.Family("X", "revoked"),
		s.SubjectRevoked("X"),
		s.Key("X", "activated"),
		// The feed's subjects: only tokend writes there.
		"tokenfeed.family.X.revoked",
		"tokenfeed.key.X.activated",
		// Managing the feed stream.
		"$JS.API.STREAM.DELETE." + n.acc.FeedStream(),
		"$JS.API.STREAM.PURGE." + n.acc.FeedStream(),
		"$JS.API.STREAM.UPDATE." + n.acc.FeedStream(),
		"$JS.API.STREAM.CREATE.EVIL",
	} {
		if err := sc.Publish(subject, []byte("{}")); err != nil {
			t.Fatal(err)
		}
		_ = sc.Flush()
		select {
		case err := <-errs:
			if !errors.Is(err, nats.ErrPermissionViolation) {
				t.Errorf("publish %s: %v, want a permissions violation", subject, err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("publish %s: no permissions violation", subject)
		}
	}
	if _, err := n.log.Last(ctx, s.FamilyFilter("X")); !errors.Is(err, eventlog.ErrNotFound) {
		t.Fatalf("log holds a family X: %v", err)
	}
	if seq, err := n.log.LastSeq(ctx); err != nil || seq != 0 {
		t.Fatalf("log last seq = %d, %v; want 0", seq, err)
	}
	js, err := jetstream.New(sc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Stream(ctx, n.acc.FeedStream()); err != nil {
		t.Fatalf("feed stream gone: %v", err)
	}
}

func TestSubscriberCannotReadDPoPOrGrace(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n := startSecured(t, t.TempDir(), nil)
	appendAll(ctx, t, n.log, "f1")
	s := n.log.Subjects()
	// refused runs call and checks that it failed with a permissions
	// violation (a refused request is otherwise seen only as a timeout).
	refused := func(t *testing.T, errs <-chan error, what string, call func(context.Context) error) {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if err := call(c); err == nil {
			t.Fatalf("%s: allowed", what)
		}
		select {
		case err := <-errs:
			if !errors.Is(err, nats.ErrPermissionViolation) {
				t.Fatalf("%s: %v, want a permissions violation", what, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no permissions violation", what)
		}
	}

	t.Run("filters", func(t *testing.T) {
		for _, filter := range []string{s.Prefix() + ".dpop.>", s.Prefix() + ".grace.>", s.All(), s.Families()} {
			t.Run(strings.ReplaceAll(filter, ">", "all"), func(t *testing.T) {
				sc, errs := n.subscriber(t)
				// On the log's stream, through the subscriber account's
				// own API: the log is not in that account, and the
				// subject is not allowed.
				js, err := jetstream.New(sc)
				if err != nil {
					t.Fatal(err)
				}
				refused(t, errs, "consumer on the log", func(c context.Context) error {
					_, err := js.CreateConsumer(c, "TOKENS", jetstream.ConsumerConfig{FilterSubject: filter})
					return err
				})
				// On the feed, through its own consumer: allowed, and
				// the feed holds nothing of the log by itself.
				name := publicKey(t, n.seedFile)
				cons, err := js.CreateConsumer(ctx, n.acc.FeedStream(), jetstream.ConsumerConfig{Name: name, FilterSubject: "tokenfeed.>", AckPolicy: jetstream.AckNonePolicy})
				if err != nil {
					t.Fatal(err)
				}
				defer func() { _ = js.DeleteConsumer(ctx, n.acc.FeedStream(), name) }()
				if info, err := cons.Info(ctx); err != nil || info.NumPending != 0 {
					t.Fatalf("feed consumer: %v pending, %v", info, err)
				}
			})
		}
	})
	sc, errs := n.subscriber(t)

	// Core NATS: the events are published on their subjects, which the
	// subscriber may not subscribe to (and which do not exist in its
	// account anyway).
	drain(errs)
	if _, err := sc.SubscribeSync(s.All()); err != nil {
		t.Fatal(err)
	}
	_ = sc.Flush()
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("subscribe %s: %v", s.All(), err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("subscribe %s: no permissions violation", s.All())
	}
}

func drain(c <-chan error) {
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}

func TestAccountsRequireCredentials(t *testing.T) {
	t.Parallel()
	n := startSecured(t, t.TempDir(), nil)
	if nc, err := nats.Connect(n.e.ClientURL(), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("anonymous TCP connection accepted")
	}
	// A user key the server does not know.
	_, otherSeed, err := eventlog.SubscriberSeed(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	opt, err := nats.NkeyOptionFromSeed(otherSeed)
	if err != nil {
		t.Fatal(err)
	}
	if nc, err := nats.Connect(n.e.ClientURL(), opt, nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("unknown nkey accepted")
	}
	// The configured subscriber key works.
	sc, _ := n.subscriber(t)
	if !sc.IsConnected() {
		t.Fatal("subscriber not connected")
	}
}

// TestAccountsKeepExistingLog checks that turning accounts on keeps the log
// a server without them wrote (encrypted at rest, as tokend does): the log
// stays in the global account. A restart keeps the feed.
func TestAccountsKeepExistingLog(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	key := []byte("0123456789abcdef0123456789abcdef")
	e, err := eventlog.StartEmbedded(eventlog.EmbeddedConfig{DataDir: filepath.Join(dir, "jetstream"), Listen: "127.0.0.1:0", EncryptionKey: key})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	l, err := eventlog.Open(ctx, nc, eventlog.Config{Auth: eventlogtest.Auth(t)})
	if err != nil {
		t.Fatal(err)
	}
	s := l.Subjects()
	seq := eventlogtest.Append(ctx, t, l, eventlog.Event{Subject: s.Family("old", "revoked"), Type: "family.revoked", Data: []byte("old")}, s.FamilyFilter("old"))
	nc.Close()
	e.Shutdown()

	for round := range 2 {
		n := startSecured(t, dir, key)
		if last, err := n.log.LastSeq(ctx); err != nil || last != seq {
			t.Fatalf("round %d: last seq after enabling accounts = %d, %v; want %d", round, last, err, seq)
		}
		if round == 0 {
			writeFeed(ctx, t, n, "tokenfeed.key.k1.published")
		}
		sc, _ := n.subscriber(t)
		js, _ := jetstream.New(sc)
		if got := readFeed(ctx, t, js, n.acc.FeedStream(), publicKey(t, n.seedFile), 1); got[0].Subject() != "tokenfeed.key.k1.published" {
			t.Fatalf("round %d: feed = %+v", round, got)
		}
		sc.Close()
		n.e.Shutdown()
	}
}

func TestSubscriberSeed(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	pub, path, err := eventlog.SubscriberSeed(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(pub, "U") || path != filepath.Join(dir, eventlog.SubscriberSeedFile) {
		t.Fatalf("pub %q path %q", pub, path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("seed file mode %v, want 0600", fi.Mode().Perm())
	}
	again, _, err := eventlog.SubscriberSeed(dir)
	if err != nil || again != pub {
		t.Fatalf("second call = %q, %v; want the same key %q", again, err, pub)
	}
	if err := os.WriteFile(path, []byte("not a seed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := eventlog.SubscriberSeed(dir); err == nil {
		t.Fatal("a corrupt seed file was accepted")
	}
}

func TestNewAccountsValidates(t *testing.T) {
	t.Parallel()
	pub, _, err := eventlog.SubscriberSeed(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  eventlog.AccountsConfig
	}{
		{"no subscriber", eventlog.AccountsConfig{}},
		{"seed instead of public key", eventlog.AccountsConfig{SubscriberKeys: []string{"SUAM"}}},
		{"account key", eventlog.AccountsConfig{SubscriberKeys: []string{"A" + pub[1:]}}},
		{"feed named like the log", eventlog.AccountsConfig{SubscriberKeys: []string{pub}, FeedStream: "TOKENS"}},
		{"wildcard prefix", eventlog.AccountsConfig{SubscriberKeys: []string{pub}, Prefix: "token.>"}},
	} {
		if _, err := eventlog.NewAccounts(tc.cfg); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

// TestOperatorsAndAnonymous: an operator key reads the whole log; with
// Anonymous a connection without credentials is a subscriber (development
// on loopback): it reads the feed, never the log, and cannot append, as the
// start-up probe confirms; the subscriber stays confined to the feed.
func TestOperatorsAndAnonymous(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	subPub, subSeed, err := eventlog.SubscriberSeed(dir)
	if err != nil {
		t.Fatal(err)
	}
	opDir := t.TempDir()
	opPub, opSeed, err := eventlog.SubscriberSeed(opDir) // any user nkey
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eventlog.NewAccounts(eventlog.AccountsConfig{SubscriberKeys: []string{subPub}, OperatorKeys: []string{subPub}}); err == nil {
		t.Fatal("one key as subscriber and operator accepted")
	}
	if _, err := eventlog.NewAccounts(eventlog.AccountsConfig{SubscriberKeys: []string{subPub}, OperatorKeys: []string{"SUAM"}}); err == nil {
		t.Fatal("a seed as operator key accepted")
	}
	acc, err := eventlog.NewAccounts(eventlog.AccountsConfig{SubscriberKeys: []string{subPub}, OperatorKeys: []string{opPub}, Anonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	e, err := eventlog.StartEmbedded(eventlog.EmbeddedConfig{DataDir: filepath.Join(dir, "jetstream"), Listen: "127.0.0.1:0", Accounts: acc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	nc, err := e.Connect(acc.ServiceOption())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	l, err := eventlog.Open(ctx, nc, eventlog.Config{Auth: eventlogtest.Auth(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := acc.ProvisionFeed(ctx, e); err != nil {
		t.Fatal(err)
	}
	appendAll(ctx, t, l, "f1")
	want, err := l.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	opOpt, err := nats.NkeyOptionFromSeed(opSeed)
	if err != nil {
		t.Fatal(err)
	}
	c, err := nats.Connect(e.ClientURL(), opOpt, nats.MaxReconnects(0))
	if err != nil {
		t.Fatal(err)
	}
	rl, err := eventlog.Attach(ctx, c, eventlog.Config{})
	if err != nil {
		t.Fatalf("operator: attach the log: %v", err)
	}
	if got, err := rl.LastSeq(ctx); err != nil || got != want {
		t.Fatalf("operator: last seq %d, %v; want %d", got, err, want)
	}
	c.Close()

	anon, err := nats.Connect(e.ClientURL(), nats.MaxReconnects(0), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	actx, acancel := context.WithTimeout(ctx, 2*time.Second) // a refused request is not answered
	defer acancel()
	if _, err := eventlog.Attach(actx, anon, eventlog.Config{}); err == nil {
		t.Fatal("an anonymous connection attached to the log")
	}
	if _, err := eventlog.Attach(ctx, anon, eventlog.Config{Stream: acc.FeedStream()}); err != nil {
		t.Fatalf("an anonymous connection cannot read the feed: %v", err)
	}
	if err := l.ProbeAnonymousAppend(ctx, e.ClientURL()); err != nil {
		t.Fatalf("probe: %v", err)
	}
	if got, err := l.LastSeq(ctx); err != nil || got != want {
		t.Fatalf("after the probe the log's last seq is %d, %v; want %d", got, err, want)
	}
	subOpt, err := nats.NkeyOptionFromSeed(subSeed)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := nats.Connect(e.ClientURL(), subOpt)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
	defer scancel()
	if _, err := eventlog.Attach(sctx, sc, eventlog.Config{}); err == nil {
		t.Fatal("the subscriber attached to the log")
	}
}
