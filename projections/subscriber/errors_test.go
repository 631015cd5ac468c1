package subscriber_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	"github.com/auth-platform/tokenservice/projections/subscriber"
	feedv1 "github.com/auth-platform/tokenservice/proto/token/feed/v1"
)

// TestSubscriberReportsBadMessages: a feed message the subscriber cannot
// decode is skipped, as before, and reported to OnError; the messages
// after it are still applied.
func TestSubscriberReportsBadMessages(t *testing.T) {
	t.Parallel()
	node := eventlogtest.SingleNode(t)
	ctx := context.Background()
	js, err := jetstream.New(node.Conn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, eventlog.FeedStreamConfig(subscriber.DefaultStream, "token", 1)); err != nil {
		t.Fatal(err)
	}
	subjects := subscriber.NewSubjects("token")
	publish := func(fid string, data []byte) {
		t.Helper()
		msg := &nats.Msg{Subject: subjects.FamilyRevoked(fid), Header: header(subscriber.EventFamilyRevoked), Data: data}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	publish("bad", []byte{0xff, 0xff, 0xff})
	now := time.Now()
	publish("good", marshal(t, &feedv1.FamilyRevoked{FamilyId: "good", Subject: "erin",
		RevokedAt: timestamppb.New(now), AccessExpiresAt: timestamppb.New(now.Add(time.Hour))}))

	reported := make(chan error, 16)
	sub, err := subscriber.New(node.Conn, subscriber.Config{OnError: func(err error) {
		select {
		case reported <- err:
		default:
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sub.Run(rctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	select {
	case err := <-reported:
		if !errors.Is(err, subscriber.ErrBadMessage) {
			t.Fatalf("reported %v, want ErrBadMessage", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the bad message was not reported")
	}
	waitFor(t, "the message after the bad one", func() bool {
		return sub.IsRevoked(subscriber.Claims{Subject: "erin", FamilyID: "good", IssuedAt: now.Add(-time.Minute)})
	})
}
