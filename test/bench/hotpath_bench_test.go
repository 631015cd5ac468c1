package bench

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	"github.com/auth-platform/tokenservice/eventlog/events"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// issuedEvent returns a family.issued event like the one GenerateTokens
// appends, with the headers Append stores (issue 16: the per-event work of
// the hot path, without NATS).
func issuedEvent(tb testing.TB, n int) (eventlog.Event, nats.Header) {
	tb.Helper()
	now := time.Unix(1_780_000_000, 0)
	s := eventlog.NewSubjects(eventlog.DefaultPrefix)
	fid := "AAAAAAAAAAAAAAAAAAAAAA"
	st := &eventsv1.FamilyState{
		FamilyId: fid, Subject: "user-" + time.Duration(n).String(), ClientId: clientID, Audience: audience, Scopes: scopes,
		Generation: 1, SecretHash: make([]byte, 32), Status: eventsv1.FamilyStatus_FAMILY_STATUS_ACTIVE,
		CreatedAt: timestamppb.New(now), RotatedAt: timestamppb.New(now), RefreshExpiresAt: timestamppb.New(now.Add(7 * 24 * time.Hour)),
		AccessExpiresAt: timestamppb.New(now.Add(15 * time.Minute)), KeyIds: []string{"k-20261206-abcdef"},
	}
	ev, err := events.FamilyIssued(s, st)
	if err != nil {
		tb.Fatal(err)
	}
	h := nats.Header{}
	h.Set(eventlog.HeaderMsgID, "Q2x0b2tlbnNlcnZpY2UxMjM0NTY3")
	h.Set(eventlog.HeaderEvent, ev.Type)
	h.Set(eventlog.HeaderCorrelationID, "01JEXAMPLECORRELATIONID000")
	h.Set(jetstream.ExpectedLastSubjSeqSubjHeader, s.FamilyFilter(fid))
	h.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
	return ev, h
}

// BenchmarkEventMAC is the log authenticator's work for one family.issued
// event: the MAC made on append (sign) and the MAC checked by one reader
// (verify); every event is verified by three readers in a replica (the
// projections' runner, the feed writer, the families projector). With
// GOEXPERIMENT=boringcrypto every HMAC Write is a cgo call.
func BenchmarkEventMAC(b *testing.B) {
	auth := eventlogtest.Auth(b)
	ev, h := issuedEvent(b, 1)
	b.Run("sign", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			h.Set(eventlog.HeaderAuth, auth.Sign(ev.Subject, h, ev.Data, 0))
		}
	})
	h.Set(eventlog.HeaderAuth, auth.Sign(ev.Subject, h, ev.Data, 0))
	b.Run("verify", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := auth.Verify(ev.Subject, 1, h, ev.Data); err != nil {
				b.Fatal(err)
			}
		}
	})
}
