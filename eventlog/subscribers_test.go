package eventlog_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/auth-platform/tokenservice/eventlog"
)

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
	e, _ := serveAccounts(ctx, t, dir, acc, nil)
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
