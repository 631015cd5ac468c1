package eventlogtest

import (
	"context"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/events"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// What an attacker who can publish to the log's subjects, but does not
// hold ENCRYPTION_KEY, can write: tests of the log's trust use these.

// Replay returns a stored event as it would be published again under
// message ID id: its subject, payload and event headers (its MAC among
// them), with no compare-and-set expectation.
func Replay(m *jetstream.RawStreamMsg, id string) *nats.Msg {
	msg := nats.NewMsg(m.Subject)
	msg.Data = m.Data
	for _, h := range []string{eventlog.HeaderEvent, eventlog.HeaderAuth, eventlog.HeaderActor, eventlog.HeaderCorrelationID} {
		if v := m.Header.Get(h); v != "" {
			msg.Header.Set(h, v)
		}
	}
	msg.Header.Set(eventlog.HeaderMsgID, id)
	return msg
}

// PublishForgedKey publishes key.generated and key.published for a key
// kid that the service never made (a copy of the log's first generated
// key under another ID), after the keys' last event and with no MAC, as js
// (a connection with publish rights) can. It returns the sequence of the
// last one.
func PublishForgedKey(ctx context.Context, t testing.TB, js jetstream.JetStream, stream jetstream.Stream, s eventlog.Subjects, kid string) uint64 {
	t.Helper()
	last, err := stream.GetLastMsgForSubject(ctx, s.Keys())
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(s.Key("*", "generated")))
	if err != nil {
		t.Fatal(err)
	}
	var gen eventsv1.KeyGenerated
	if err := proto.Unmarshal(first.Data, &gen); err != nil {
		t.Fatal(err)
	}
	gen.KeyId, gen.SealedPrivateKey = kid, nil
	seq := last.Sequence
	for _, m := range []proto.Message{&gen, &eventsv1.KeyPublished{KeyId: kid}} {
		ev, err := events.Key(s, kid, m)
		if err != nil {
			t.Fatal(err)
		}
		msg := nats.NewMsg(ev.Subject)
		msg.Data = ev.Data
		msg.Header.Set(eventlog.HeaderEvent, ev.Type)
		msg.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, s.Keys())
		msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(seq, 10))
		ack, err := js.PublishMsg(ctx, msg)
		if err != nil {
			t.Fatal(err)
		}
		seq = ack.Sequence
	}
	return seq
}
