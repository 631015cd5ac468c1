package projections_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
	"github.com/auth-platform/tokenservice/projections"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// TestFamilyModelRetention: with EVENT_RETENTION set, the families read
// model is rebuilt correctly from a family whose first event has left the
// log (its first event left is taken once Log.Chained vouches for it, not
// refused as a replayed event), and each entry expires when its family's
// last event leaves the log.
func TestFamilyModelRetention(t *testing.T) {
	const (
		refreshTTL = 4 * time.Second
		retention  = 3 * time.Second
	)
	node := eventlogtest.SingleNode(t)
	clock := issuertest.NewClock(time.Now())
	now := func() { clock.Advance(time.Since(clock.Now())) } // the issuer's clock follows the server's
	env := issuertest.New(t, issuertest.Options{Conn: node.Conn, Clock: clock, AccessTTL: time.Second, RefreshTTL: refreshTTL, EventRetention: retention})
	store := newStore(t, env, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	nc, err := node.Embedded.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var forged atomic.Int64
	plog := eventlogtest.OpenLog(t, nc, eventlog.Config{OnForged: func(eventlog.Record, error) { forged.Add(1) }})
	p, err := projections.NewFamilyProjector(plog, projections.ProjectorConfig{Sealer: env.Sealer, PinnedTTL: 3 * time.Second, AckWait: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = p.Run(pctx) }()
	defer func() { pcancel(); wg.Wait() }()

	now()
	tok, err := env.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "bob", ClientID: "web", Audience: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	issued := time.Now()
	time.Sleep(3500 * time.Millisecond) // the rotation's events outlive the issued one by this
	now()
	rot, err := env.Issuer.Refresh(ctx, issuer.RefreshRequest{RefreshToken: tok.RefreshToken, ClientID: "web"})
	if err != nil {
		t.Fatal(err)
	}
	rotated := time.Now()
	waitModel(t, env, store)
	waitFor(t, "the issued event to leave the log", issued.Add(refreshTTL+retention+3*time.Second), func() bool {
		_, err := env.Log.LastConsistent(ctx, env.Log.Subjects().Family(tok.FamilyID, "issued"))
		return errors.Is(err, eventlog.ErrNotFound)
	})

	// Rebuild: the family's first event in the log is now its rotation.
	if err := projections.DropFamilies(ctx, env.Log.JetStream(), env.Log.Stream(), 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the rebuilt entry", rotated.Add(refreshTTL+retention), func() bool {
		recs, err := store.ListFamilies(ctx, "bob")
		return err == nil && len(recs) == 1 && recs[0].GetState().GetGeneration() == 2 &&
			recs[0].GetState().GetStatus() == eventsv1.FamilyStatus_FAMILY_STATUS_ACTIVE && recs[0].GetState().GetFamilyId() == rot.FamilyID
	})
	if n := forged.Load(); n != 0 {
		t.Errorf("the rebuild refused %d records as forged", n)
	}

	// The entry leaves with the family's last event: both expire at the
	// same instant, to the server's whole second.
	waitFor(t, "the entry to expire", rotated.Add(refreshTTL+retention+3*time.Second), func() bool {
		recs, err := store.ListFamilies(ctx, "bob")
		return err == nil && len(recs) == 0
	})
	if time.Since(rotated) < refreshTTL+retention {
		t.Errorf("the entry expired %s after the rotation, before its family's end plus the retention (%s)", time.Since(rotated), refreshTTL+retention)
	}
	waitFor(t, "the family's last event to leave with the entry", time.Now().Add(2*time.Second), func() bool {
		_, err := env.Log.LastConsistent(ctx, env.Log.Subjects().FamilyFilter(tok.FamilyID))
		return errors.Is(err, eventlog.ErrNotFound)
	})
}

// waitFor polls cond until it holds, and fails t at deadline.
func waitFor(t *testing.T, what string, deadline time.Time, cond func() bool) {
	t.Helper()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestFamilyBucketGainsTTL: a bucket made before retention (no per-key
// TTL) is updated in place by the projector, which then writes the entry
// of an event with a TTL with a TTL.
func TestFamilyBucketGainsTTL(t *testing.T) {
	node := eventlogtest.SingleNode(t)
	env := issuertest.New(t, issuertest.Options{Conn: node.Conn, EventRetention: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js := env.Log.JetStream()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: projections.FamilyBucket, History: 1, Storage: jetstream.FileStorage,
		Description: "token families read model (one projector writes it)"}); err != nil {
		t.Fatal(err)
	}
	var errs atomic.Int64
	p, err := projections.NewFamilyProjector(env.Log, projections.ProjectorConfig{Sealer: env.Sealer, OnError: func(err error) { errs.Add(1); t.Logf("projector: %v", err) }})
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = p.Run(pctx) }()
	defer func() { pcancel(); wg.Wait() }()
	if _, err := env.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "carol", ClientID: "web", Audience: []string{"api"}}); err != nil {
		t.Fatal(err)
	}
	waitModel(t, env, newStore(t, env, nil))
	kv, err := js.KeyValue(ctx, projections.FamilyBucket)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.(*jetstream.KeyValueBucketStatus).LimitMarkerTTL() == 0 || st.Values() != 1 || errs.Load() != 0 {
		t.Fatalf("bucket: marker TTL %s, %d values, %d projector errors", st.(*jetstream.KeyValueBucketStatus).LimitMarkerTTL(), st.Values(), errs.Load())
	}
	// The entry carries the TTL: the bucket's stream has it in its header.
	s, err := js.Stream(ctx, "KV_"+projections.FamilyBucket)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, "$KV."+projections.FamilyBucket+".>")
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get(jetstream.MsgTTLHeader) == "" {
		t.Fatalf("entry without a TTL: %v", m.Header)
	}
}
