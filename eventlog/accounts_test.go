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
	e, l := serveAccounts(ctx, t, dir, acc, key)
	return &securedNode{e: e, acc: acc, log: l, seedFile: seedFile, dir: dir}
}

// serveAccounts starts an embedded server with acc, its files in dir and
// encrypted with key (nil: not), opens the service's log on it and
// provisions the feed.
func serveAccounts(ctx context.Context, t *testing.T, dir string, acc *eventlog.Accounts, key []byte) (*eventlog.Embedded, *eventlog.Log) {
	t.Helper()
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
	return e, l
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

// feedJS returns JetStream as the feed's admin user, as tokend's feed
// writer uses it; the connection closes when the test ends.
func (n *securedNode) feedJS(t *testing.T) jetstream.JetStream {
	t.Helper()
	nc, err := n.acc.ConnectFeed(n.e)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// writeFeed publishes one message to the feed as the admin user, as
// tokend's feed writer does.
func writeFeed(ctx context.Context, t *testing.T, n *securedNode, subject string) {
	t.Helper()
	if _, err := n.feedJS(t).Publish(ctx, subject, []byte("public")); err != nil {
		t.Fatalf("publish %s to the feed: %v", subject, err)
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
	e, l := serveAccounts(ctx, t, dir, acc, nil)
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
