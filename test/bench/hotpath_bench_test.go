package bench

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	"github.com/auth-platform/tokenservice/eventlog/events"
	"github.com/auth-platform/tokenservice/projections"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// issuedEvent returns a family.issued event like the one GenerateTokens
// appends, with the headers Append stores (issue 16: the per-event work of
// the hot path, without NATS).
func issuedEvent(tb testing.TB, n int) (eventlog.Event, nats.Header) {
	tb.Helper()
	now := time.Unix(1_780_000_000, 0)
	s := eventlog.NewSubjects(eventlog.DefaultPrefix)
	fid := fmt.Sprintf("AAAAAAAAAAAA%010d", n)
	st := &eventsv1.FamilyState{
		FamilyId: fid, Subject: "user-" + strconv.Itoa(n), ClientId: clientID, Audience: audience, Scopes: scopes,
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

// BenchmarkSetApply is what a replica's projections do with one
// family.issued record once it is read and its MAC checked: decode it and
// apply it to the Set (a new family each time).
func BenchmarkSetApply(b *testing.B) {
	recs := make([]eventlog.Record, b.N)
	for n := range recs {
		ev, h := issuedEvent(b, n)
		recs[n] = eventlog.Record{Subject: ev.Subject, Seq: uint64(n + 1), Time: time.Unix(1_780_000_000, 0), Type: ev.Type,
			ID: h.Get(eventlog.HeaderMsgID), Data: ev.Data, Aggregate: h.Get(jetstream.ExpectedLastSubjSeqSubjHeader)}
	}
	set := projections.NewSet(15 * time.Minute)
	b.ReportAllocs()
	b.ResetTimer()
	for _, rec := range recs {
		if err := set.Apply(rec); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendFollow is the event log's share of a GenerateTokens call
// without signing or RPC: 16 goroutines append family.issued events
// (Log.Append, compare-and-set on a new family, MAC) to an embedded
// single node while a Runner feeds a Set from the log (ordered consumer,
// MAC check, decode, apply); the timer stops once the Set has applied the
// last event. cpu_us/op is the whole process's CPU (NATS server included).
func BenchmarkAppendFollow(b *testing.B) {
	n := eventlogtest.SingleNode(b)
	l := eventlogtest.OpenLog(b, n.Conn, eventlog.Config{})
	set := projections.NewSet(15 * time.Minute)
	r := projections.NewRunner(l, set, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-r.Ready()
	evs := make([]eventlog.Event, b.N)
	for i := range evs {
		evs[i], _ = issuedEvent(b, i)
	}
	s := l.Subjects()
	var next atomic.Int64
	var last atomic.Uint64
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= b.N {
					return
				}
				fid := fmt.Sprintf("AAAAAAAAAAAA%010d", i)
				seq, err := l.Append(ctx, evs[i], eventlog.Expect{Filter: s.FamilyFilter(fid)})
				if err != nil {
					b.Error(err)
					return
				}
				for {
					old := last.Load()
					if seq <= old || last.CompareAndSwap(old, seq) {
						break
					}
				}
			}
		})
	}
	wg.Wait()
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	defer wcancel()
	if err := r.WaitFor(wctx, last.Load()); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if cpu := processCPU() - cpu0; cpu0 > 0 {
		b.ReportMetric(float64(cpu)/float64(b.N)/float64(time.Microsecond), "cpu_us/op")
	}
}
