package projections_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	"github.com/auth-platform/tokenservice/eventlog/events"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
	"github.com/auth-platform/tokenservice/projections"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	"github.com/auth-platform/tokenservice/signing/seal"
)

// projector runs a FamilyProjector on its own connection until stop.
type projector struct {
	p    *projections.FamilyProjector
	stop func()
}

func startProjector(t *testing.T, node *eventlogtest.Node, sealer *seal.Sealer, bad *badCount) *projector {
	t.Helper()
	nc, err := node.Embedded.Connect()
	if err != nil {
		t.Fatal(err)
	}
	log := eventlogtest.OpenLog(t, nc, eventlog.Config{})
	p, err := projections.NewFamilyProjector(log, projections.ProjectorConfig{
		Sealer:    sealer,
		PinnedTTL: 3 * time.Second, AckWait: 4 * time.Second, // long enough that a loaded CI machine does not move the pin
		OnBadRecord: func(eventlog.Record, error) { bad.add() },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done; nc.Close() }) }
	t.Cleanup(stop)
	return &projector{p: p, stop: stop}
}

// newStore returns a store of the default bucket with env's sealer.
func newStore(t *testing.T, env *issuertest.Env, obs projections.CacheObserver) *projections.FamilyStore {
	t.Helper()
	s, err := projections.NewFamilyStore(env.Log.JetStream(), projections.StoreConfig{Sealer: env.Sealer, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type badCount struct {
	mu sync.Mutex
	n  int
}

func (b *badCount) add() { b.mu.Lock(); b.n++; b.mu.Unlock() }

// waitModel waits until the read model has every family event up to the
// stream's last sequence.
func waitModel(t *testing.T, env *issuertest.Env, store *projections.FamilyStore) {
	t.Helper()
	last := env.LastSeq(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		floor, pending, err := store.Progress(ctx, env.Log.Stream())
		cancel()
		if err == nil && pending == 0 && floor >= lastFamilySeq(t, env, last) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("read model not caught up: ack floor %d pending %d (%v), stream at %d", floor, pending, err, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func lastFamilySeq(t *testing.T, env *issuertest.Env, _ uint64) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rec, err := env.Log.LastConsistent(ctx, env.Log.Subjects().Families())
	if err != nil {
		t.Fatal(err)
	}
	return rec.Seq
}

// checkModel compares the read model of every subject with the last state
// the log holds for each of its families.
func checkModel(t *testing.T, env *issuertest.Env, store *projections.FamilyStore, subjects []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, sub := range subjects {
		recs, err := store.ListFamilies(ctx, sub)
		if err != nil {
			t.Fatal(err)
		}
		want := env.Set.FamiliesOf(sub)
		if len(recs) != len(want) {
			t.Fatalf("%s: %d families in the read model, %d in the log", sub, len(recs), len(want))
		}
		for _, r := range recs {
			st := r.GetState()
			last, err := env.Log.Last(ctx, env.Log.Subjects().FamilyFilter(st.GetFamilyId()))
			if err != nil {
				t.Fatal(err)
			}
			if r.GetSourceSeq() != last.Seq {
				t.Fatalf("family %s: read model at seq %d, log at %d", st.GetFamilyId(), r.GetSourceSeq(), last.Seq)
			}
			m, err := events.Decode(last)
			if err != nil {
				t.Fatal(err)
			}
			f := events.FamilyStateOf(m)
			if st.GetGeneration() != f.GetGeneration() || st.GetStatus() != f.GetStatus() || st.GetSubject() != sub {
				t.Fatalf("family %s: read model gen %d status %v, log gen %d status %v", st.GetFamilyId(), st.GetGeneration(), st.GetStatus(), f.GetGeneration(), f.GetStatus())
			}
			if len(st.GetSecretHash()) > 0 || len(st.GetPreviousSecretHash()) > 0 || len(st.GetSpentSecretPrefixes()) > 0 || st.GetGraceId() != "" {
				t.Fatalf("family %s: the read model holds a secret hash", st.GetFamilyId())
			}
		}
	}
}

// workload issues, rotates and revokes families of a few subjects.
func workload(t *testing.T, env *issuertest.Env, subjects []string, n int) {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		sub := subjects[i%len(subjects)]
		tok, err := env.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: sub, ClientID: "app", Audience: []string{"https://api.test"}, Scopes: []string{"read"}})
		if err != nil {
			t.Fatal(err)
		}
		for range i % 3 {
			if tok, err = env.Issuer.Refresh(ctx, issuer.RefreshRequest{RefreshToken: tok.RefreshToken, ClientID: "app"}); err != nil {
				t.Fatal(err)
			}
		}
		if i%4 == 0 {
			if _, err := env.Issuer.RevokeFamily(ctx, tok.FamilyID, eventsv1.RevocationReason_REVOCATION_REASON_CLIENT); err != nil {
				t.Fatal(err)
			}
		}
	}
	env.CaughtUp(t)
}

// TestFamilyProjectorFailover: two replicas run the projector; one of them
// is pinned and writes, the other takes over once it stops, and the model
// equals the log's last state of every family.
func TestFamilyProjectorFailover(t *testing.T) {
	node := eventlogtest.SingleNode(t)
	env := issuertest.New(t, issuertest.Options{Conn: node.Conn})
	store := newStore(t, env, nil)
	subjects := []string{"alice", "bob@example.com", "carol with spaces"}
	var bad badCount
	a, b := startProjector(t, node, env.Sealer, &bad), startProjector(t, node, env.Sealer, &bad)

	workload(t, env, subjects, 24)
	waitModel(t, env, store)
	checkModel(t, env, store, subjects)
	if (a.p.Applied() == 0) == (b.p.Applied() == 0) {
		t.Fatalf("want exactly one pinned projector, applied: a=%d b=%d", a.p.Applied(), b.p.Applied())
	}
	pinned, other := a, b
	if a.p.Applied() == 0 {
		pinned, other = b, a
	}
	before := other.p.Applied()
	pinned.stop()

	workload(t, env, subjects, 12)
	waitModel(t, env, store)
	checkModel(t, env, store, subjects)
	if other.p.Applied() == before {
		t.Fatal("the remaining projector wrote nothing after the pinned one stopped")
	}
	if bad.n != 0 {
		t.Fatalf("%d bad records", bad.n)
	}
}

// TestFamilyProjectorWriteFailures: while the bucket refuses writes
// (full), families are issued; their events are given back, never
// acknowledged, so once the bucket takes writes again every one is
// delivered again and written, and the model equals the log. An event
// acknowledged before its write, or settled by a failed one, would be
// missing.
func TestFamilyProjectorWriteFailures(t *testing.T) {
	node := eventlogtest.SingleNode(t)
	env := issuertest.New(t, issuertest.Options{Conn: node.Conn})
	store := newStore(t, env, nil)
	subjects := []string{"alice", "bob", "carol"}
	var failed atomic.Int64
	p, _ := startProjectorWith(t, node, projections.ProjectorConfig{Sealer: env.Sealer,
		PinnedTTL: 3 * time.Second, AckWait: 4 * time.Second,
		OnError: func(error) { failed.Add(1) }})
	workload(t, env, subjects, 3)
	waitModel(t, env, store)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	restore := changeBucket(ctx, t, env, func(cfg *jetstream.StreamConfig, info *jetstream.StreamInfo) {
		cfg.MaxMsgs = int64(info.State.Msgs) // DiscardNew: every further new key refused
	})
	applied := p.Applied()
	for i := range 30 { // first events only: nothing else of theirs to deliver again
		if _, err := env.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: subjects[i%len(subjects)], ClientID: "app", Audience: []string{"https://api.test"}}); err != nil {
			t.Fatal(err)
		}
	}
	for failed.Load() < 10 {
		if ctx.Err() != nil {
			t.Fatalf("%d writes failed in 30 s", failed.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if p.Applied() != applied {
		t.Fatalf("%d events written into a full bucket", p.Applied()-applied)
	}
	restore()
	waitModel(t, env, store)
	checkModel(t, env, store, subjects)
}

// TestFamilyProjectorEventOvertaken: a rotation whose write failed is
// given back and delivered again a second later; the family's next
// rotation, delivered meanwhile, finds the entry one event behind. It is
// not a replay (its MAC chains it to the event still to be written, not to
// one the entry already passed): it is neither reported as forged nor
// dropped, and the model ends at the log's last state of every family.
func TestFamilyProjectorEventOvertaken(t *testing.T) {
	node := eventlogtest.SingleNode(t)
	env := issuertest.New(t, issuertest.Options{Conn: node.Conn})
	store := newStore(t, env, nil)
	subjects := []string{"alice", "bob"}
	var failed, forged atomic.Int64
	startProjectorOn(t, node, eventlog.Config{OnForged: func(eventlog.Record, error) { forged.Add(1) }},
		projections.ProjectorConfig{Sealer: env.Sealer, PinnedTTL: 3 * time.Second, AckWait: 4 * time.Second,
			OnError: func(error) { failed.Add(1) }})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var toks []issuer.Tokens
	for i := range 4 {
		tok, err := env.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: subjects[i%len(subjects)], ClientID: "app", Audience: []string{"https://api.test"}})
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
	}
	env.CaughtUp(t)
	waitModel(t, env, store)

	restore := changeBucket(ctx, t, env, func(cfg *jetstream.StreamConfig, _ *jetstream.StreamInfo) {
		cfg.Subjects = []string{"families.away.>"} // every write answered "no responders"
	})
	rotate := func() {
		for i, tok := range toks {
			var err error
			if toks[i], err = env.Issuer.Refresh(ctx, issuer.RefreshRequest{RefreshToken: tok.RefreshToken, ClientID: "app"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	rotate() // written nowhere: given back, delivered again in a second
	for failed.Load() < int64(len(toks)) {
		if ctx.Err() != nil {
			t.Fatalf("%d writes failed in 30 s", failed.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	restore()
	rotate() // delivered before the first rotations come again
	env.CaughtUp(t)
	waitModel(t, env, store)
	checkModel(t, env, store, subjects)
	if n := forged.Load(); n != 0 {
		t.Fatalf("%d rotations delivered before the one they follow were reported as forged", n)
	}
}

// changeBucket changes the configuration of the families bucket's stream
// with change (so that the projector's writes fail) and returns the
// function that puts it back.
func changeBucket(ctx context.Context, t *testing.T, env *issuertest.Env, change func(*jetstream.StreamConfig, *jetstream.StreamInfo)) (restore func()) {
	t.Helper()
	js := env.Log.JetStream()
	kvs, err := js.Stream(ctx, "KV_"+projections.FamilyBucket)
	if err != nil {
		t.Fatal(err)
	}
	cfg := kvs.CachedInfo().Config
	changed := cfg
	change(&changed, kvs.CachedInfo())
	if _, err := js.UpdateStream(ctx, changed); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFamilyModelRebuild: dropping the model makes the running projector
// rebuild it from the first event, to the same content; records carry the
// source sequence, so nothing older replaces anything newer.
func TestFamilyModelRebuild(t *testing.T) {
	node := eventlogtest.SingleNode(t)
	env := issuertest.New(t, issuertest.Options{Conn: node.Conn})
	store := newStore(t, env, nil)
	var subjects []string
	for i := range 5 {
		subjects = append(subjects, fmt.Sprintf("user-%d", i))
	}
	var bad badCount
	p := startProjector(t, node, env.Sealer, &bad)
	workload(t, env, subjects, 20)
	waitModel(t, env, store)
	checkModel(t, env, store, subjects)
	written := p.p.Applied()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := projections.DropFamilies(ctx, env.Log.JetStream(), env.Log.Stream(), 1); err != nil {
		t.Fatal(err)
	}
	if recs, err := store.ListFamilies(ctx, subjects[0]); err != nil || len(recs) != 0 {
		t.Fatalf("after the drop: %d families, %v", len(recs), err)
	}
	workload(t, env, subjects, 5)
	waitModel(t, env, store)
	checkModel(t, env, store, subjects)
	if p.p.Applied() <= written {
		t.Fatal("the projector did not rebuild the model")
	}
}

// TestFamilyProjectorReplayKeepsLaterState: a projector that reads the
// log again from its start (a consumer of its own, as after a consumer
// lost with the bucket kept) finds every family's entry holding a later
// state than the family's first event: the first event, which is created
// without a read (and without waiting for its acknowledgement), never
// replaces it, and the model still equals the log, on one node and on a
// 3-node cluster (where a refused create may be 10164 rather than 10071,
// DESIGN rule 1).
func TestFamilyProjectorReplayKeepsLaterState(t *testing.T) {
	for _, replicas := range []int{1, 3} {
		t.Run(fmt.Sprintf("R%d", replicas), func(t *testing.T) {
			nodes := []*eventlogtest.Node{eventlogtest.SingleNode(t)}
			if replicas > 1 {
				nodes = eventlogtest.Cluster(t, replicas)
			}
			replayKeepsLaterState(t, nodes[0], replicas)
		})
	}
}

func replayKeepsLaterState(t *testing.T, node *eventlogtest.Node, replicas int) {
	env := issuertest.New(t, issuertest.Options{Conn: node.Conn, Replicas: replicas})
	store := newStore(t, env, nil)
	subjects := []string{"alice", "bob"}
	var bad badCount
	run := func(consumer string, obs projections.CacheObserver) (stop func()) {
		nc, err := node.Embedded.Connect()
		if err != nil {
			t.Fatal(err)
		}
		log := eventlogtest.OpenLog(t, nc, eventlog.Config{Replicas: replicas})
		p, err := projections.NewFamilyProjector(log, projections.ProjectorConfig{Sealer: env.Sealer, Consumer: consumer, Observer: obs,
			OnBadRecord: func(eventlog.Record, error) { bad.add() }})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = p.Run(ctx) }()
		var once sync.Once
		stop = func() { once.Do(func() { cancel(); <-done; nc.Close() }) }
		t.Cleanup(stop)
		return stop
	}
	run(projections.FamilyConsumer, nil)
	workload(t, env, subjects, 12) // families rotated, some revoked
	waitModel(t, env, store)
	checkModel(t, env, store, subjects)

	const consumer = "families_replay"
	var obs cacheCount
	run(consumer, &obs)
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := func() (*jetstream.ConsumerInfo, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := env.Log.JetStream().Consumer(ctx, env.Log.Stream(), consumer)
			if err != nil {
				return nil, err
			}
			return c.Info(ctx)
		}()
		if err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Stream > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replaying projector not done: %+v %v", info, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	checkModel(t, env, store, subjects)
	if w, e := obs.get(projections.CacheWrite, projections.CacheOK), obs.get(projections.CacheWrite, projections.CacheError); w != 0 || e != 0 {
		t.Fatalf("the replaying projector wrote %d entries and failed %d writes, want none (every entry holds a later or the same state): %v", w, e, obs.n)
	}
	if bad.n != 0 {
		t.Fatalf("%d bad records", bad.n)
	}
}
