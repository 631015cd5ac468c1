package bench

import (
	"context"
	"flag"
	"fmt"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/cmd/tokend/app"
	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	"github.com/auth-platform/tokenservice/eventlog/events"
	"github.com/auth-platform/tokenservice/projections"
	"github.com/auth-platform/tokenservice/projections/subscriber"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/proto/token/v1/tokenv1connect"
)

// startReplica starts tokend in process on an external NATS cluster (the
// test cluster has no users, which tokend accepts on loopback only with
// NATS_INSECURE_ALLOW_ANONYMOUS_APPEND).
func startReplica(b *testing.B, natsURL string) (*app.Main, tokenv1connect.TokenServiceClient) {
	b.Helper()
	m := startApp(b, map[string]string{
		"HOST": "127.0.0.1", "PORT": "0", "DATA_DIR": b.TempDir(), "LOG_LEVEL": "error",
		"ENCRYPTION_KEY": encryptionKey, "JWT_ALGORITHM": "ES256", "NATS_URL": natsURL, "NATS_REPLICAS": "3", "NATS_INSECURE_ALLOW_ANONYMOUS_APPEND": "true",
	})
	return m, h2cClient(b, m.Addr())
}

// BenchmarkRevocationPropagation measures, on a 3-node JetStream cluster
// on loopback with two tokend replicas (A on node 1, B on node 2) and a
// subscriber (projections/subscriber on node 3), the time from the
// acknowledgement of RevokeToken on replica A until the revocation is in
// replica B's projections, and until the subscriber has applied it. Each
// revocation is of a family generated just before (untimed). At least
// 1,000 revocations are measured whatever b.N is.
//
//	b_p50_ms, b_p99_ms, b_max_ms        replica B's projections
//	sub_p50_ms, sub_p99_ms, sub_max_ms  the subscriber
//
// Target: p99 under 10 ms for both.
func BenchmarkRevocationPropagation(b *testing.B) {
	nodes := eventlogtest.Cluster(b, 3)
	url := func(i int) string { return nodes[i].Embedded.ClientURL() }
	_, clientA := startReplica(b, url(0))
	mB, _ := startReplica(b, url(1))

	applied := make(chan string, 16)
	sub, err := subscriber.New(nodes[2].Conn, subscriber.Config{OnRevocation: func(r subscriber.Revocation) {
		if r.FamilyID != "" {
			applied <- r.FamilyID
		}
	}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = sub.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-sub.Ready()

	n := max(b.N, 1000)
	toB := make([]time.Duration, 0, n)
	toSub := make([]time.Duration, 0, n)
	b.ResetTimer()
	for i := range n {
		b.StopTimer()
		gen, err := clientA.GenerateTokens(ctx, connect.NewRequest(generateRequest(i)))
		if err != nil {
			b.Fatal(err)
		}
		fid := gen.Msg.GetFamilyId()
		b.StartTimer()
		if _, err := clientA.RevokeToken(ctx, connect.NewRequest(&tokenv1.RevokeTokenRequest{Target: &tokenv1.RevokeTokenRequest_FamilyId{FamilyId: fid}})); err != nil {
			b.Fatal(err)
		}
		acked := time.Now()
		// B's projections are polled every 100µs (the resolution of this
		// measurement) on another goroutine; the subscriber's callback is
		// awaited. Nothing spins: the cluster, both replicas and the
		// subscriber share this machine's cores with the measurement.
		bSeen := make(chan time.Duration, 1)
		go func() {
			for time.Since(acked) < 10*time.Second {
				if _, ok := mB.Set.RevokedFamily(fid); ok {
					bSeen <- time.Since(acked)
					return
				}
				time.Sleep(100 * time.Microsecond)
			}
			bSeen <- 0
		}()
		var dSub time.Duration
		select {
		case got := <-applied:
			if got != fid {
				b.Fatalf("subscriber applied %s, want %s", got, fid)
			}
			dSub = time.Since(acked)
		case <-time.After(10 * time.Second):
			b.Fatalf("revocation %d not applied by the subscriber within 10s", i)
		}
		dB := <-bSeen
		if dB == 0 {
			b.Fatalf("revocation %d not in replica B's projections within 10s", i)
		}
		toB, toSub = append(toB, dB), append(toSub, dSub)
	}
	b.StopTimer()
	for _, s := range []struct {
		name string
		d    []time.Duration
	}{{"b", toB}, {"sub", toSub}} {
		slices.Sort(s.d)
		b.ReportMetric(ms(percentile(s.d, 0.50)), s.name+"_p50_ms")
		b.ReportMetric(ms(percentile(s.d, 0.99)), s.name+"_p99_ms")
		b.ReportMetric(ms(s.d[len(s.d)-1]), s.name+"_max_ms")
	}
	b.ReportMetric(float64(n), "revocations")
}

// rebuildEvents is how many events BenchmarkRebuild replays: 1,000,000
// unless -rebuild-events says otherwise (for a quick look).
var rebuildEvents = flag.Int("rebuild-events", 1_000_000, "events BenchmarkRebuild writes and replays")

// BenchmarkRebuild replays a stream of 1,000,000 family events (issued,
// rotated and revoked, in the proportions of a busy day: each family
// issued once, rotated 3 times, one in 8 revoked) into a replica's
// projections (projections.Set through projections.Runner, the code path
// of a starting tokend), next to the raw rate of an ordered consumer that
// only receives the same records, in the same run.
//
//	raw_events/s      ordered consumer, records counted and dropped
//	replay_events/s   the projections' replay (decode + apply) with the GC
//	                  pace tokend sets while it catches up at start
//	                  (app.CatchUpGCPercent)
//	x_raw             replay_events/s / raw_events/s (target >= 0.70)
//	peak_heap_MB      peak heap during that replay (runtime/metrics, heap
//	                  objects including garbage not yet collected, sampled
//	                  every 10 ms), after a GC before it starts
//	x_raw_gogc100, peak_heap_MB_gogc100
//	                  the same replay at Go's default GC pace
//
// The stream is written first with batched asynchronous publishes; it is
// not part of the measurement. Run it with -benchtime 1x: one replay of a
// million events takes seconds.
func BenchmarkRebuild(b *testing.B) {
	node := eventlogtest.SingleNode(b)
	log := eventlogtest.OpenLog(b, node.Conn, eventlog.Config{})
	fillStream(b, node, log, *rebuildEvents)
	filters := projections.Filters(log.Subjects())
	ctx := context.Background()

	// replayOnce feeds a new Set through a Runner from the first event
	// until it is ready, and returns how long it took and the peak heap.
	replayOnce := func() (time.Duration, uint64) {
		runtime.GC()
		var peak uint64
		stop := sampleHeap(&peak)
		start := time.Now()
		set := projections.NewSet(15 * time.Minute)
		runUntilReady(ctx, log, set, func(rec eventlog.Record, err error) { b.Errorf("bad record %d: %v", rec.Seq, err) })
		took := time.Since(start)
		stop()
		if set.Seq() == 0 || set.BadRecords() != 0 {
			b.Fatalf("replayed to seq %d with %d bad records", set.Seq(), set.BadRecords())
		}
		runtime.KeepAlive(set)
		return took, peak
	}

	// One untimed read first: the first read of a freshly written stream
	// pays for loading its blocks, which would count against raw alone.
	if err := log.Replay(ctx, 1, filters, func(eventlog.Record) {}); err != nil {
		b.Fatal(err)
	}
	var raw, replayDefault, replayTokend time.Duration
	var peakDefault, peakTokend uint64
	for range b.N {
		start := time.Now()
		var count int
		if err := log.Replay(ctx, 1, filters, func(eventlog.Record) { count++ }); err != nil {
			b.Fatal(err)
		}
		raw += time.Since(start)
		if count != *rebuildEvents {
			b.Fatalf("raw read %d records, want %d", count, *rebuildEvents)
		}
		d, p := replayOnce()
		replayDefault, peakDefault = replayDefault+d, max(peakDefault, p)
		prev := debug.SetGCPercent(app.CatchUpGCPercent) // as tokend replays at start
		d, p = replayOnce()
		debug.SetGCPercent(prev)
		replayTokend, peakTokend = replayTokend+d, max(peakTokend, p)
	}
	events := float64(*rebuildEvents * b.N)
	rawRate := events / raw.Seconds()
	b.ReportMetric(rawRate, "raw_events/s")
	b.ReportMetric(events/replayTokend.Seconds(), "replay_events/s")
	b.ReportMetric(events/replayTokend.Seconds()/rawRate, "x_raw")
	b.ReportMetric(float64(peakTokend)/(1<<20), "peak_heap_MB")
	b.ReportMetric(events/replayDefault.Seconds()/rawRate, "x_raw_gogc100")
	b.ReportMetric(float64(peakDefault)/(1<<20), "peak_heap_MB_gogc100")
}

// runUntilReady feeds set from log from its position until it has caught
// up with the log.
func runUntilReady(ctx context.Context, log *eventlog.Log, set *projections.Set, onBad func(eventlog.Record, error)) {
	runner := projections.NewRunner(log, set, onBad, nil)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = runner.Run(rctx) }()
	<-runner.Ready()
	cancel()
	<-done
}

// sampleHeap records the peak of live heap objects bytes until stop.
func sampleHeap(peak *uint64) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			*peak = max(*peak, s[0].Value.Uint64())
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(done); <-finished }
}

// fillStream writes n family events: families of 4 events (issued, 3
// rotations, and every 8th family revoked instead of its last rotation),
// with realistic family states, signed as tokend signs them (the log
// refuses the rest as forged), through async publishes on an empty stream.
func fillStream(b testing.TB, node *eventlogtest.Node, log *eventlog.Log, n int) {
	b.Helper()
	js := asyncJS(b, node)
	auth := eventlogtest.Auth(b)
	subj := log.Subjects()
	start := time.Now()
	now := timestamppb.New(start)
	for i := 0; i < n; {
		fid := fmt.Sprintf("fam%019d", i)
		st := &eventsv1.FamilyState{
			FamilyId: fid, Subject: fmt.Sprintf("user-%d@example.com", i%50_000), ClientId: "bench-client",
			Audience: []string{"https://api.example.com"}, Scopes: []string{"openid", "profile"},
			Generation: 1, SecretHash: make([]byte, 32), CreatedAt: now, RotatedAt: now, RefreshExpiresAt: now, AccessExpiresAt: now,
			Status: eventsv1.FamilyStatus_FAMILY_STATUS_ACTIVE, KeyIds: []string{"key-1"},
		}
		for e := 0; e < 4 && i < n; e++ {
			var typ string
			var m proto.Message
			switch {
			case e == 0:
				typ, m = events.TypeFamilyIssued, &eventsv1.FamilyIssued{State: st}
			case e == 3 && (i/4)%8 == 0:
				st.Status = eventsv1.FamilyStatus_FAMILY_STATUS_REVOKED
				st.RevokedAt = now
				typ, m = events.TypeFamilyRevoked, &eventsv1.FamilyRevoked{State: st, Reason: eventsv1.RevocationReason_REVOCATION_REASON_CLIENT}
			default:
				st.Generation++
				st.PreviousSecretHash = st.SecretHash
				st.SpentSecretPrefixes = append(st.SpentSecretPrefixes, st.SecretHash[:8]...)
				typ, m = events.TypeFamilyRotated, &eventsv1.FamilyRotated{State: st, KeyId: "key-1"}
			}
			data, err := proto.Marshal(m)
			if err != nil {
				b.Fatal(err)
			}
			var prev uint64
			if e > 0 {
				prev = uint64(i) // the family's previous event: the stream's sequences follow i
			}
			if _, err := js.PublishMsgAsync(signed(auth, subj.Family(fid, strings.TrimPrefix(typ, "family.")), typ, data, prev)); err != nil {
				b.Fatal(err)
			}
			i++
		}
		if i%8_192 == 0 {
			waitAsync(b, js)
		}
	}
	waitAsync(b, js)
	b.Logf("wrote %d events in %s", n, time.Since(start).Round(time.Millisecond))
}

// asyncJS is a JetStream context for batched asynchronous publishes.
func asyncJS(b testing.TB, node *eventlogtest.Node) jetstream.JetStream {
	b.Helper()
	js, err := jetstream.New(node.Conn, jetstream.WithPublishAsyncMaxPending(16384))
	if err != nil {
		b.Fatal(err)
	}
	return js
}

// waitAsync waits for every asynchronous publish to be acknowledged.
func waitAsync(b testing.TB, js jetstream.JetStream) {
	b.Helper()
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("async publishes not acknowledged within a minute")
	}
}

// signed is the message of an event of type typ on subject, appended
// after its aggregate's sequence prev, with the authenticator the log
// checks.
func signed(auth *eventlog.Authenticator, subject, typ string, data []byte, prev uint64) *nats.Msg {
	m := natsMsg(subject, typ, data)
	m.Header.Set(eventlog.HeaderAuth, auth.Sign(subject, m.Header, data, prev))
	return m
}

func natsMsg(subject, typ string, data []byte) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Data = data
	m.Header.Set(eventlog.HeaderEvent, typ)
	return m
}
