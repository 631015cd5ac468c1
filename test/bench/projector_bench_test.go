package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/cmd/tokend/app"
	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	"github.com/auth-platform/tokenservice/eventlog/events"
	"github.com/auth-platform/tokenservice/projections"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	"github.com/auth-platform/tokenservice/signing/seal"
)

// BenchmarkFamilyProjector measures the families read model's projector
// alone (issue 16: it was the largest share of a GenerateTokens call that
// is neither transport nor signing): b.N family events, signed as tokend
// signs them, are written to a fresh single-node log before the timer
// starts; then one FamilyProjector (the production one: pinned durable
// consumer, MAC check, sealed compare-and-set writes) runs until the
// consumer's ack floor reaches the last event.
//
//	events=1  families of one event (family.issued): what GenerateTokens
//	          makes.
//	events=4  families of an issue and three rotations: what a refresh
//	          workload makes.
//
//	live      families of one event appended at 4,000/s (about what
//	          GenerateTokens at c=8 appends) while the projector runs, so
//	          that events arrive one by one, as in tokend; cpu_us/event
//	          includes the appends (live,off: the same appends with no
//	          projector, to subtract).
//
// Metrics: events/s, and cpu_us/event, the CPU time of the whole process
// (projector, NATS client and embedded server) per event.
func BenchmarkFamilyProjector(b *testing.B) {
	b.Run("live", func(b *testing.B) { benchProjectorLive(b, true) })
	b.Run("live,off", func(b *testing.B) { benchProjectorLive(b, false) })
	for _, per := range []int{1, 4} {
		b.Run("events="+strconv.Itoa(per), func(b *testing.B) {
			node := eventlogtest.SingleNode(b)
			log := eventlogtest.OpenLog(b, node.Conn, eventlog.Config{})
			fillFamilies(b, node, log, b.N, per)
			p := newBenchProjector(b, log)
			last, err := log.LastSeq(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := processCPU()
			go func() { defer close(done); _ = p.Run(ctx) }()
			awaitProjected(ctx, log, last)
			b.StopTimer()
			cpu := processCPU() - cpu0
			cancel()
			<-done
			reportEvents(b, cpu0, cpu)
		})
	}
}

// benchProjectorLive appends b.N issued events at liveRate while a
// projector (if with) runs, then waits until it has written them all.
func benchProjectorLive(b *testing.B, with bool) {
	const liveRate, tick = 4_000, 2 * time.Millisecond
	node := eventlogtest.SingleNode(b)
	log := eventlogtest.OpenLog(b, node.Conn, eventlog.Config{})
	p := newBenchProjector(b, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	if with {
		go func() { defer close(done); _ = p.Run(ctx) }()
		for _, _, err := projections.FamiliesProgress(ctx, log.JetStream(), log.Stream()); err != nil; _, _, err = projections.FamiliesProgress(ctx, log.JetStream(), log.Stream()) {
			time.Sleep(time.Millisecond) // the consumer is not there yet
		}
	} else {
		close(done)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	js, auth := asyncJS(b, node), eventlogtest.Auth(b)
	perTick := liveRate * int(tick) / int(time.Second)
	next := time.Now()
	for i := 0; i < b.N; i += perTick {
		appendFamilies(b, js, auth, log.Subjects(), i, min(perTick, b.N-i), 1)
		next = next.Add(tick)
		time.Sleep(time.Until(next))
	}
	if with {
		awaitProjected(ctx, log, uint64(b.N))
	}
	b.StopTimer()
	cpu := processCPU() - cpu0
	cancel()
	<-done
	reportEvents(b, cpu0, cpu)
}

// newBenchProjector is the production families projector on log, sealing
// under a fixed key; it fails the benchmark on any error it reports.
func newBenchProjector(b *testing.B, log *eventlog.Log) *projections.FamilyProjector {
	sealer, err := seal.New(rand.Reader, []byte("tokend-benchmark-key-32-bytes!!!"))
	if err != nil {
		b.Fatal(err)
	}
	p, err := projections.NewFamilyProjector(log, projections.ProjectorConfig{Sealer: sealer,
		OnError: func(err error) { b.Errorf("projector: %v", err) }})
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// awaitProjected waits until the families projector's consumer has
// acknowledged every event up to last.
func awaitProjected(ctx context.Context, log *eventlog.Log, last uint64) {
	for {
		floor, pending, err := projections.FamiliesProgress(ctx, log.JetStream(), log.Stream())
		if err == nil && pending == 0 && floor >= last {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// reportEvents reports events/s and, when the process's CPU time is known
// (cpu0 > 0), the CPU time per event.
func reportEvents(b *testing.B, cpu0, cpu time.Duration) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	if cpu0 > 0 {
		b.ReportMetric(float64(cpu)/float64(time.Microsecond)/float64(b.N), "cpu_us/event")
	}
}

// fillFamilies writes n family events, signed as tokend signs them, in
// families of per events (issued, then rotations), to log's stream on a
// fresh node (the stream's sequences start at 1).
func fillFamilies(b *testing.B, node *eventlogtest.Node, log *eventlog.Log, n, per int) {
	b.Helper()
	appendFamilies(b, asyncJS(b, node), eventlogtest.Auth(b), log.Subjects(), 0, n, per)
}

// appendFamilies is fillFamilies from the family numbered from, through js.
func appendFamilies(b *testing.B, js jetstream.JetStream, auth *eventlog.Authenticator, subj eventlog.Subjects, from, n, per int) {
	b.Helper()
	now := timestamppb.New(time.Now())
	for i := from; i < from+n; {
		fid := fmt.Sprintf("fam%019d", i)
		st := &eventsv1.FamilyState{
			FamilyId: fid, Subject: fmt.Sprintf("user-%d@example.com", i%50_000), ClientId: "bench-client",
			Audience: audience, Scopes: scopes, Generation: 1, SecretHash: make([]byte, 32),
			CreatedAt: now, RotatedAt: now, RefreshExpiresAt: now, AccessExpiresAt: now,
			Status: eventsv1.FamilyStatus_FAMILY_STATUS_ACTIVE, KeyIds: []string{"key-1"},
		}
		for e := 0; e < per && i < from+n; e++ {
			typ, m := events.TypeFamilyIssued, proto.Message(&eventsv1.FamilyIssued{State: st})
			var prev uint64
			if e > 0 {
				st.Generation++
				typ, m = events.TypeFamilyRotated, &eventsv1.FamilyRotated{State: st, KeyId: "key-1"}
				prev = uint64(i) // the family's previous event: the stream's sequences follow i
			}
			data, err := proto.Marshal(m)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := js.PublishMsgAsync(signed(auth, subj.Family(fid, strings.TrimPrefix(typ, "family.")), typ, data, prev)); err != nil {
				b.Fatal(err)
			}
			i++
		}
		if i%8_192 < per {
			waitAsync(b, js)
		}
	}
	waitAsync(b, js)
}

// waitFamilies waits until m's families projector has written every
// family event appended so far (at most a minute).
func waitFamilies(b *testing.B, m *app.Main) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		// Pending counts the family events not yet delivered and those
		// delivered but not acknowledged (written).
		_, pending, err := projections.FamiliesProgress(ctx, m.Log.JetStream(), m.Log.Stream())
		if err == nil && pending == 0 {
			return
		}
		if ctx.Err() != nil {
			b.Fatalf("families projector not caught up: %d pending: %v", pending, err)
		}
		time.Sleep(time.Millisecond)
	}
}
