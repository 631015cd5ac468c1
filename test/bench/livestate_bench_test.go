package bench

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/cmd/tokend/app"
	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	"github.com/auth-platform/tokenservice/eventlog/events"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/projections"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	"github.com/auth-platform/tokenservice/signing/seal"
)

var (
	expiredFamilies = flag.Int("expired-families", 200_000, "families BenchmarkRestartAfterExpiry issues and lets expire")
	liveFamilies    = flag.Int("live-families", 1_000_000, "live families BenchmarkStartLive writes")
	memoryFamilies  = flag.Int("memory-families", 200_000, "families BenchmarkFamilyMemory holds")
)

// heapLive returns the bytes of live heap objects after a full GC.
func heapLive() uint64 {
	runtime.GC()
	runtime.GC()
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// familyEvent returns family event i of a family of subject sub: issued,
// then rotations by key-1, every one ending at end.
func familyEvent(seq uint64, fid, sub string, gen uint64, at, end time.Time) eventlog.Record {
	st := &eventsv1.FamilyState{
		FamilyId: fid, Subject: sub, ClientId: "bench-client", Audience: []string{"https://api.example.com"},
		Scopes: []string{"openid", "profile"}, Generation: gen, SecretHash: make([]byte, 32), DpopJkt: "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I",
		CreatedAt: timestamppb.New(at), RotatedAt: timestamppb.New(at), RefreshExpiresAt: timestamppb.New(end),
		AccessExpiresAt: timestamppb.New(at.Add(15 * time.Minute)), Status: eventsv1.FamilyStatus_FAMILY_STATUS_ACTIVE,
		KeyIds: []string{"key-1"}, IssuedSeq: seq - gen + 1,
	}
	var typ string
	var m proto.Message = &eventsv1.FamilyIssued{State: st}
	typ = events.TypeFamilyIssued
	if gen > 1 {
		m, typ = &eventsv1.FamilyRotated{State: st, KeyId: "key-1"}, events.TypeFamilyRotated
	}
	data, _ := proto.Marshal(m)
	rec := eventlog.Record{Seq: seq, Time: at, Type: typ, Data: data}
	if gen > 1 {
		rec.Prev = seq - 1
	}
	return rec
}

// BenchmarkFamilyMemory measures what a live family costs in a replica's
// memory: the live heap after a GC, per family, once -memory-families
// families (an issued event and two rotations each, 50,000 subjects) are
// applied to a projections.Set, side by side with the same events applied
// to the Families projection as it was before issue 13 (legacyFamilies,
// every field of the family state, kept here as the baseline).
//
//	B/family          projections.Set (families, their index, revocations)
//	B/family_before   the projection before issue 13
//	x_before          B/family / B/family_before (target <= 0.5)
func BenchmarkFamilyMemory(b *testing.B) {
	n := *memoryFamilies
	at := time.Now()
	end := at.Add(24 * time.Hour)
	recs := make([]eventlog.Record, 0, 3*n)
	for i := range n {
		fid := fmt.Sprintf("%022d", i)
		sub := fmt.Sprintf("user-%d@example.com", i%50_000)
		for g := uint64(1); g <= 3; g++ {
			recs = append(recs, familyEvent(uint64(len(recs)+1), fid, sub, g, at, end))
		}
	}
	var now, before float64
	for range b.N {
		base := heapLive()
		set := projections.NewSet(15 * time.Minute)
		for _, rec := range recs {
			if err := set.Apply(rec); err != nil {
				b.Fatal(err)
			}
		}
		now += float64(heapLive()-base) / float64(n)
		runtime.KeepAlive(set)

		base = heapLive()
		old := newLegacyFamilies()
		for _, rec := range recs {
			m, err := events.Decode(rec)
			if err != nil {
				b.Fatal(err)
			}
			old.apply(rec, m)
		}
		before += float64(heapLive()-base) / float64(n)
		runtime.KeepAlive(old)
	}
	b.ReportMetric(now/float64(b.N), "B/family")
	b.ReportMetric(before/float64(b.N), "B/family_before")
	b.ReportMetric(now/before, "x_before")
}

// BenchmarkRestartAfterExpiry is the measurement of issue 13: tokend on
// its embedded defaults issues -expired-families families (8 callers,
// ACCESS_TOKEN_TTL=1, REFRESH_TOKEN_TTL=2), waits until every one has
// ended, stops and starts again on the same data folder; side by side
// with a start on an empty data folder and a start that replays the whole
// log (PROJECTION_CHECKPOINT_INTERVAL=0, as every start did before).
//
//	ready_ms_empty, ready_ms, ready_ms_replay   time to ready
//	us/expired_family        (ready_ms - ready_ms_empty) per family (target <= 1)
//	B/expired_family         (heap - heap_empty) per family, live heap after
//	                         a GC, the embedded NATS server included (target <= 50)
//	us/expired_family_replay, B/expired_family_replay   the same, full replay
func BenchmarkRestartAfterExpiry(b *testing.B) {
	var r expiryRuns
	for range b.N {
		m, _, _ := startTimed(b, expiryVars(b.TempDir()), false)
		stop(b, m) // the first start in a process pays for more than a start
		m, d, h := startTimed(b, expiryVars(b.TempDir()), true)
		r.readyEmpty, r.heapEmpty = r.readyEmpty+d, r.heapEmpty+h
		stop(b, m)

		dir := b.TempDir()
		m, _, _ = startTimed(b, expiryVars(dir), false)
		issueFamilies(b, m, *expiredFamilies)
		waitEnded(b, m)
		stop(b, m)

		m, d, h = startTimed(b, expiryVars(dir), true)
		r.ready, r.heap = r.ready+d, r.heap+h
		stop(b, m)
		m, d, h = startTimed(b, expiryVars(dir, "PROJECTION_CHECKPOINT_INTERVAL", "0"), true)
		r.readyReplay, r.heapReplay = r.readyReplay+d, r.heapReplay+h
		stop(b, m)
	}
	r.report(b, *expiredFamilies)
}

// BenchmarkJoinAfterExpiry is BenchmarkRestartAfterExpiry for a replica
// that joins a 3-node JetStream cluster on loopback (R3), where replica A
// issued -expired-families families that have all ended: side by side
// with a replica that joins the empty cluster, and one that replays the
// whole log (PROJECTION_CHECKPOINT_INTERVAL=0). The heap is what the
// replica added to the process (the cluster's nodes run in it too).
func BenchmarkJoinAfterExpiry(b *testing.B) {
	var r expiryRuns
	cluster := func(url string, extra ...string) map[string]string {
		return expiryVars(b.TempDir(), append([]string{"NATS_URL", url, "NATS_REPLICAS", "3", "NATS_INSECURE_ALLOW_ANONYMOUS_APPEND", "true"}, extra...)...)
	}
	for range b.N {
		empty := eventlogtest.Cluster(b, 3)
		startReplica(b, empty[0].Embedded.ClientURL()) // the log, its key and buckets exist
		m, d, h := startTimed(b, cluster(empty[1].Embedded.ClientURL()), true)
		r.readyEmpty, r.heapEmpty = r.readyEmpty+d, r.heapEmpty+h
		stop(b, m)

		nodes := eventlogtest.Cluster(b, 3)
		a, _, _ := startTimed(b, cluster(nodes[0].Embedded.ClientURL()), false)
		issueFamilies(b, a, *expiredFamilies)
		waitEnded(b, a)
		m, d, h = startTimed(b, cluster(nodes[1].Embedded.ClientURL()), true)
		r.ready, r.heap = r.ready+d, r.heap+h
		stop(b, m)
		m, d, h = startTimed(b, cluster(nodes[2].Embedded.ClientURL(), "PROJECTION_CHECKPOINT_INTERVAL", "0"), true)
		r.readyReplay, r.heapReplay = r.readyReplay+d, r.heapReplay+h
		stop(b, m)
		stop(b, a)
	}
	r.report(b, *expiredFamilies)
}

// expiryVars are the variables of the expiry benchmarks' tokend on data
// folder dir, and extra (name, value pairs).
func expiryVars(dir string, extra ...string) map[string]string {
	v := map[string]string{
		"HOST": "127.0.0.1", "PORT": "0", "DATA_DIR": dir, "NATS_LISTEN": "127.0.0.1:0", "LOG_LEVEL": "error",
		"ENCRYPTION_KEY": encryptionKey, "JWT_ALGORITHM": "ES256", "KEY_ROTATION_PERIOD": "0",
		"ACCESS_TOKEN_TTL": "1", "REFRESH_TOKEN_TTL": "2", "REFRESH_REUSE_GRACE": "0", "PROJECTION_CHECKPOINT_INTERVAL": "1",
	}
	for i := 0; i+1 < len(extra); i += 2 {
		v[extra[i]] = extra[i+1]
	}
	return v
}

// startTimed starts tokend with env and returns it, how long it took to
// be ready and, if measure, the live heap it added to the process.
func startTimed(b *testing.B, env map[string]string, measure bool) (*app.Main, time.Duration, float64) {
	b.Helper()
	cfg, err := app.ConfigFromEnv(func(k string) string { return env[k] })
	if err != nil {
		b.Fatal(err)
	}
	var base uint64
	if measure {
		base = heapLive()
	}
	t0 := time.Now()
	m, err := app.Start(context.Background(), cfg, app.NewLogger(cfg))
	if err != nil {
		b.Fatal(err)
	}
	d := time.Since(t0)
	if !measure {
		return m, d, 0
	}
	return m, d, float64(heapLive()) - float64(base)
}

func stop(b *testing.B, m *app.Main) {
	b.Helper()
	if err := m.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
}

// expiryRuns sums the starts of the expiry benchmarks: on nothing, after
// the expired families from a checkpoint, and replaying the whole log.
type expiryRuns struct {
	readyEmpty, ready, readyReplay time.Duration
	heapEmpty, heap, heapReplay    float64
}

func (r expiryRuns) report(b *testing.B, n int) {
	runs := float64(b.N)
	per := func(d time.Duration) float64 {
		return float64(d-r.readyEmpty) / runs / float64(time.Microsecond) / float64(n)
	}
	b.ReportMetric(float64(r.readyEmpty.Milliseconds())/runs, "ready_ms_empty")
	b.ReportMetric(float64(r.ready.Milliseconds())/runs, "ready_ms")
	b.ReportMetric(float64(r.readyReplay.Milliseconds())/runs, "ready_ms_replay")
	b.ReportMetric(per(r.ready), "us/expired_family")
	b.ReportMetric((r.heap-r.heapEmpty)/runs/float64(n), "B/expired_family")
	b.ReportMetric(per(r.readyReplay), "us/expired_family_replay")
	b.ReportMetric((r.heapReplay-r.heapEmpty)/runs/float64(n), "B/expired_family_replay")
}

// waitEnded waits until m holds nothing (every family ended, and a tick
// let it forget them) and then until the log's duplicate window (2
// minutes, whose message IDs a NATS server indexes in memory when it
// starts) has passed since the last family was issued: the restart of
// issue 13 happens once the families are history.
func waitEnded(b *testing.B, m *app.Main) {
	b.Helper()
	issued := time.Now()
	deadline := issued.Add(2 * time.Minute)
	for m.Set.Len() > 0 {
		if time.Now().After(deadline) {
			b.Fatalf("%d entries still held 2 minutes after the last family ended", m.Set.Len())
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Until(issued.Add(2*time.Minute + 5*time.Second)))
}

// issueFamilies starts n families through m's issuer with 8 callers.
func issueFamilies(b *testing.B, m *app.Main, n int) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	t0 := time.Now()
	for range 8 {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				_, err := m.Issuer.Generate(context.Background(), issuer.GenerateRequest{
					Subject: fmt.Sprintf("user-%d@example.com", i%50_000), ClientID: clientID, Audience: audience, Scopes: scopes})
				if err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	b.Logf("issued %d families in %s", n, time.Since(t0).Round(time.Millisecond))
}

// BenchmarkStartLive measures a replica's start with -live-families live
// families in the log (an issued event and two rotations each): replaying
// the whole log, side by side with loading the checkpoint written at its
// end (then replaying the tail: nothing).
//
//	replay_s, replay_peak_heap_MB          full replay
//	checkpoint_s, checkpoint_peak_heap_MB  checkpoint load
//
// (peak heap: above the live heap before the start, which holds the NATS
// server and its stream).
//
//	checkpoint_MB, save_s                  the sealed checkpoint, and writing it
//	held_MB                                live heap of the set once started
func BenchmarkStartLive(b *testing.B) {
	node := eventlogtest.SingleNode(b)
	log := eventlogtest.OpenLog(b, node.Conn, eventlog.Config{})
	writeLive(b, node, log, *liveFamilies)
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		b.Fatal(err)
	}
	sealer, err := seal.New(rand.Reader, key)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	// startSet feeds a new set until ready, from its checkpoint if load,
	// and returns how long it took and the peak heap.
	startSet := func(load bool) (*projections.Set, *projections.Checkpoints, time.Duration, uint64) {
		base := heapLive() // the NATS server and its stream, not the replica
		var peak uint64
		stopSampling := sampleHeap(&peak)
		t0 := time.Now()
		set := projections.NewSet(15 * time.Minute)
		cps, err := projections.NewCheckpoints(log, set, projections.CheckpointConfig{Sealer: sealer})
		if err != nil {
			b.Fatal(err)
		}
		if load && cps.Load(ctx) != projections.LoadRestored {
			b.Fatal("the checkpoint was not restored")
		}
		runUntilReady(ctx, log, set, nil)
		took := time.Since(t0)
		stopSampling()
		return set, cps, took, peak - min(base, peak)
	}
	var replay, fromCP, save time.Duration
	var replayPeak, cpPeak, held uint64
	var size int
	for range b.N {
		set, cps, d, p := startSet(false)
		replay, replayPeak = replay+d, max(replayPeak, p)
		t0 := time.Now()
		if err := cps.Save(ctx); err != nil {
			b.Fatal(err)
		}
		save += time.Since(t0)
		obs, err := log.JetStream().ObjectStore(ctx, projections.CheckpointBucket)
		if err != nil {
			b.Fatal(err)
		}
		info, err := obs.GetInfo(ctx, "projections")
		if err != nil {
			b.Fatal(err)
		}
		size = int(info.Size)
		want := set.Digest()
		set = nil
		base := heapLive()
		set, _, d, p = startSet(true)
		fromCP, cpPeak = fromCP+d, max(cpPeak, p)
		held = heapLive() - min(base, heapLive())
		if set.Digest() != want {
			b.Fatal("the set restored from the checkpoint differs from the replayed one")
		}
		runtime.KeepAlive(set)
	}
	runs := float64(b.N)
	b.ReportMetric(replay.Seconds()/runs, "replay_s")
	b.ReportMetric(float64(replayPeak)/(1<<20), "replay_peak_heap_MB")
	b.ReportMetric(fromCP.Seconds()/runs, "checkpoint_s")
	b.ReportMetric(float64(cpPeak)/(1<<20), "checkpoint_peak_heap_MB")
	b.ReportMetric(float64(size)/(1<<20), "checkpoint_MB")
	b.ReportMetric(save.Seconds()/runs, "save_s")
	b.ReportMetric(float64(held)/(1<<20), "held_MB")
}

// writeLive writes n live families (issued and two rotations each, the
// refresh token valid for a day) with asynchronous publishes.
func writeLive(b *testing.B, node *eventlogtest.Node, log *eventlog.Log, n int) {
	b.Helper()
	js := asyncJS(b, node)
	auth := eventlogtest.Auth(b)
	subj := log.Subjects()
	at := time.Now()
	end := at.Add(24 * time.Hour)
	t0 := time.Now()
	for i := range n {
		fid := fmt.Sprintf("%022d", i)
		sub := fmt.Sprintf("user-%d@example.com", i%50_000)
		for g := uint64(1); g <= 3; g++ {
			rec := familyEvent(uint64(3*i)+g, fid, sub, g, at, end) // the stream's sequences follow the families
			event := "issued"
			if g > 1 {
				event = "rotated"
			}
			if _, err := js.PublishMsgAsync(signed(auth, subj.Family(fid, event), rec.Type, rec.Data, rec.Prev)); err != nil {
				b.Fatal(err)
			}
		}
		if i%4096 == 4095 {
			waitAsync(b, js)
		}
	}
	waitAsync(b, js)
	b.Logf("wrote %d live families in %s", n, time.Since(t0).Round(time.Millisecond))
}
